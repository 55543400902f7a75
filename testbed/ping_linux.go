//go:build linux

package testbed

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"time"
)

// pingIn sends one ICMP echo request from inside the named network namespace
// to dst and waits for the reply until ctx ends. The raw socket is opened by
// a thread inside the namespace, so it belongs there; reading and writing it
// may then happen on any thread. It needs no ping binary.
func pingIn(ctx context.Context, ns string, dst netip.Addr) (time.Duration, error) {
	dst = dst.Unmap()
	network, reqType, replyType, unreachType := "ip4:icmp", byte(8), byte(0), byte(3)
	if dst.Is6() {
		network, reqType, replyType, unreachType = "ip6:ipv6-icmp", 128, 129, 1
	}
	var c net.PacketConn
	err := inNetns(ns, func() (err error) {
		c, err = net.ListenPacket(network, "")
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("ping %s from %s: %w", dst, ns, err)
	}
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { c.SetReadDeadline(time.Now()) })
	defer stop()

	var token [8]byte
	rand.Read(token[:])
	id, seq := binary.BigEndian.Uint16(token[:2]), uint16(1)
	req := make([]byte, 16)
	req[0] = reqType
	binary.BigEndian.PutUint16(req[4:], id)
	binary.BigEndian.PutUint16(req[6:], seq)
	copy(req[8:], token[:])
	if dst.Is4() { // the kernel fills in ICMPv6 checksums itself
		binary.BigEndian.PutUint16(req[2:], checksum(req))
	}
	begin := time.Now()
	if _, err := c.WriteTo(req, &net.IPAddr{IP: dst.AsSlice()}); err != nil {
		return 0, fmt.Errorf("ping %s from %s: %w", dst, ns, err)
	}
	buf := make([]byte, 1500)
	for {
		n, from, err := c.ReadFrom(buf)
		if err != nil {
			if ctx.Err() != nil {
				return 0, fmt.Errorf("ping %s from %s: no answer: %w", dst, ns, ctx.Err())
			}
			return 0, fmt.Errorf("ping %s from %s: %w", dst, ns, err)
		}
		m := buf[:n]
		if len(m) < 8 {
			continue
		}
		src, _ := netip.AddrFromSlice(from.(*net.IPAddr).IP)
		switch {
		case m[0] == replyType && src.Unmap() == dst &&
			binary.BigEndian.Uint16(m[4:]) == id && binary.BigEndian.Uint16(m[6:]) == seq &&
			len(m) >= 16 && string(m[8:16]) == string(token[:]):
			return time.Since(begin), nil
		case m[0] == unreachType && quotesEcho(m[8:], dst.Is6(), id, seq):
			return 0, fmt.Errorf("ping %s from %s: %w (code %d, from %s)", dst, ns, ErrUnreachable, m[1], src)
		}
	}
}
