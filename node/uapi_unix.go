//go:build linux || darwin || freebsd || openbsd

package node

import (
	"errors"
	"log/slog"
	"net"

	"golang.zx2c4.com/wireguard/device"
	"golang.zx2c4.com/wireguard/ipc"
)

// uapiListen opens WireGuard's standard UAPI socket
// (/var/run/wireguard/<ifname>.sock) and serves it, so `wg show <ifname>`
// and wgctrl work against the embedded device.
func uapiListen(ifname string, dev *device.Device, log *slog.Logger) (net.Listener, error) {
	f, err := ipc.UAPIOpen(ifname)
	if err != nil {
		return nil, err
	}
	ln, err := ipc.UAPIListen(ifname, f)
	if err != nil {
		f.Close()
		return nil, err
	}
	go serveUAPI(ln, dev, log)
	return ln, nil
}

func serveUAPI(ln net.Listener, dev *device.Device, log *slog.Logger) {
	for {
		c, err := ln.Accept()
		if err != nil {
			if !errors.Is(err, net.ErrClosed) {
				log.Debug("UAPI socket closed", "err", err)
			}
			return
		}
		go dev.IpcHandle(c)
	}
}
