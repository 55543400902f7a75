//go:build !linux

package dnsd

import (
	"net"
	"syscall"
)

// newBatchConn returns nil: batched socket I/O is Linux only; elsewhere
// Serve reads and writes one datagram at a time.
func newBatchConn(uc *net.UDPConn) batchConn { return nil }

// msgTrunc is unused without batching.
const msgTrunc = 0

// haveReusePort is false: ListenShared makes one UDP socket.
const haveReusePort = false

// reusePort does nothing here.
func reusePort(network, address string, c syscall.RawConn) error { return nil }
