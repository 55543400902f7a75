package dnsd

import (
	"net"
	"syscall"

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
