//go:build !linux

package dnsd

import "net"

// newBatchConn returns nil: batched socket I/O is Linux only; elsewhere
// Serve reads and writes one datagram at a time.
func newBatchConn(uc *net.UDPConn) batchConn { return nil }

// msgTrunc is unused without batching.
const msgTrunc = 0
