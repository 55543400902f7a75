package node

import (
	"errors"
	"log/slog"
	"net"

	"golang.zx2c4.com/wireguard/device"
	"golang.zx2c4.com/wireguard/ipc"
)

// uapiListen opens WireGuard's UAPI named pipe for the interface and serves
// it, so wireguard's tools and wgctrl work against the embedded device.
func uapiListen(ifname string, dev *device.Device, log *slog.Logger) (net.Listener, error) {
	ln, err := ipc.UAPIListen(ifname)
	if err != nil {
		return nil, err
	}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				if !errors.Is(err, net.ErrClosed) {
					log.Debug("UAPI pipe closed", "err", err)
				}
				return
			}
			go dev.IpcHandle(c)
		}
	}()
	return ln, nil
}
