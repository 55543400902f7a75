package dnsd

import (
	"net"
	"syscall"

	"golang.org/x/sys/unix"

	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
)

// newBatchConn returns uc with recvmmsg/sendmmsg batching.
func newBatchConn(uc *net.UDPConn) batchConn {
	if a, ok := uc.LocalAddr().(*net.UDPAddr); ok && a.IP.To4() != nil {
		return ipv4.NewPacketConn(uc)
	}
	return ipv6.NewPacketConn(uc)
}

// msgTrunc flags a datagram larger than the buffer it was read into.
const msgTrunc = syscall.MSG_TRUNC

// haveReusePort: ListenShared opens several UDP sockets on one address.
const haveReusePort = true

// reusePort sets SO_REUSEPORT on a socket before it binds, so that several
// sockets share one address and the kernel spreads datagrams over them.
func reusePort(network, address string, c syscall.RawConn) error {
	var serr error
	err := c.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
	})
	if err != nil {
		return err
	}
	return serr
}
