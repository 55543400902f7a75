// Package tuntest is a fake packet device for tests: a wireguard-go
// tun.Device whose "OS side" is two channels, plus builders of the packets
// tests feed it (IPv4/IPv6 UDP, TCP SYN, ICMP echo) with correct checksums.
//
// It depends only on wireguard-go's tun package, so the tests of package
// tun itself can use it.
package tuntest

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"os"
	"sync"

	wgtun "golang.zx2c4.com/wireguard/tun"
)

// Device is a channel-based tun.Device. Packets the "OS" sends are put on
// FromOS and come out of Read; packets written to the "OS" are copied and
// put on ToOS. Both channels are buffered (ChanSize) and never closed; after
// Close, Read and Write fail with os.ErrClosed instead of blocking.
type Device struct {
	// FromOS feeds Read: send whole IP packets to it. Read returns up to
	// BatchSize of them per call when they are already waiting.
	FromOS chan []byte
	// ToOS receives a copy of every packet given to Write (from offset on),
	// in order. Write blocks while it is full.
	ToOS chan []byte

	mtu    int
	batch  int
	events chan wgtun.Event
	closed chan struct{}
	once   sync.Once
}

// ChanSize is the capacity of FromOS and ToOS.
const ChanSize = 256

// New returns a Device of the given MTU (<= 0 means 1420) with BatchSize 1.
// Its Events channel holds one EventUp.
func New(mtu int) *Device { return NewBatched(mtu, 1) }

// NewBatched is New with a batch size (< 1 means 1): Read returns up to that
// many packets when they are waiting on FromOS.
func NewBatched(mtu, batch int) *Device {
	if mtu <= 0 {
		mtu = 1420
	}
	if batch < 1 {
		batch = 1
	}
	d := &Device{
		FromOS: make(chan []byte, ChanSize),
		ToOS:   make(chan []byte, ChanSize),
		mtu:    mtu,
		batch:  batch,
		events: make(chan wgtun.Event, 1),
		closed: make(chan struct{}),
	}
	d.events <- wgtun.EventUp
	return d
}

// File returns nil: there is no file.
func (d *Device) File() *os.File { return nil }

// Read blocks until a packet is on FromOS (or Close), then copies it and as
// many more as are waiting, up to BatchSize and len(bufs), into
// bufs[i][offset:]. A packet that does not fit is an error.
func (d *Device) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	var pkt []byte
	select {
	case <-d.closed:
		return 0, os.ErrClosed
	case pkt = <-d.FromOS:
	}
	n := 0
	for {
		if len(pkt) > len(bufs[n])-offset {
			return n, fmt.Errorf("tuntest: packet of %d bytes does not fit a buffer of %d", len(pkt), len(bufs[n])-offset)
		}
		sizes[n] = copy(bufs[n][offset:], pkt)
		n++
		if n == d.batch || n == len(bufs) {
			return n, nil
		}
		select {
		case pkt = <-d.FromOS:
		default:
			return n, nil
		}
	}
}

// Write copies each bufs[i][offset:] to ToOS. Safe for concurrent use.
func (d *Device) Write(bufs [][]byte, offset int) (int, error) {
	for i, b := range bufs {
		select {
		case <-d.closed:
			return i, os.ErrClosed
		default:
		}
		msg := append([]byte(nil), b[offset:]...)
		select {
		case <-d.closed:
			return i, os.ErrClosed
		case d.ToOS <- msg:
		}
	}
	return len(bufs), nil
}

// MTU returns the MTU given to New.
func (d *Device) MTU() (int, error) { return d.mtu, nil }

// Name returns "tuntest".
func (d *Device) Name() (string, error) { return "tuntest", nil }

// Events returns the event channel; it is closed by Close.
func (d *Device) Events() <-chan wgtun.Event { return d.events }

// BatchSize returns the batch size given to NewBatched (1 for New).
func (d *Device) BatchSize() int { return d.batch }

// Close makes Read and Write fail with os.ErrClosed and closes Events. It
// may be called more than once.
func (d *Device) Close() error {
	d.once.Do(func() {
		close(d.closed)
		close(d.events)
	})
	return nil
}

// Packet builders. Each returns a new, whole IP packet (IPv4 without
// options, TTL 64; or IPv6, hop limit 64, depending on the addresses, which
// must be of one family) with correct IP and transport checksums.

const (
	protoICMP   = 1
	protoTCP    = 6
	protoUDP    = 17
	protoICMPv6 = 58
)

// UDP builds a UDP datagram from src to dst.
func UDP(src, dst netip.AddrPort, payload []byte) []byte {
	seg := make([]byte, 8+len(payload))
	binary.BigEndian.PutUint16(seg[0:], src.Port())
	binary.BigEndian.PutUint16(seg[2:], dst.Port())
	binary.BigEndian.PutUint16(seg[4:], uint16(len(seg)))
	copy(seg[8:], payload)
	return IP(src.Addr(), dst.Addr(), protoUDP, seg, 6)
}

// TCPSYN builds a TCP SYN (sequence number 1, window 65535, no options)
// from src to dst.
func TCPSYN(src, dst netip.AddrPort) []byte {
	seg := make([]byte, 20)
	binary.BigEndian.PutUint16(seg[0:], src.Port())
	binary.BigEndian.PutUint16(seg[2:], dst.Port())
	binary.BigEndian.PutUint32(seg[4:], 1)
	seg[12] = 5 << 4
	seg[13] = 0x02 // SYN
	binary.BigEndian.PutUint16(seg[14:], 0xffff)
	return IP(src.Addr(), dst.Addr(), protoTCP, seg, 16)
}

// ICMPEcho builds an ICMP (IPv4) or ICMPv6 echo request with the given
// identifier, sequence number and data.
func ICMPEcho(src, dst netip.Addr, id, seq uint16, data []byte) []byte {
	msg := make([]byte, 8+len(data))
	proto := uint8(protoICMP)
	msg[0] = 8 // echo request
	if src.Is6() {
		proto = protoICMPv6
		msg[0] = 128
	}
	binary.BigEndian.PutUint16(msg[4:], id)
	binary.BigEndian.PutUint16(msg[6:], seq)
	copy(msg[8:], data)
	return IP(src, dst, proto, msg, 2)
}

// IP wraps a transport segment into an IP header from src to dst. When
// csumAt >= 0, the transport checksum at seg[csumAt:csumAt+2] is computed
// (with the pseudo-header for TCP, UDP and ICMPv6, without for ICMP). seg is
// copied.
func IP(src, dst netip.Addr, proto uint8, seg []byte, csumAt int) []byte {
	hl := 20
	if src.Is6() {
		hl = 40
	}
	pkt := make([]byte, hl+len(seg))
	ip, t := pkt[:hl], pkt[hl:]
	copy(t, seg)
	if src.Is6() {
		ip[0] = 0x60
		binary.BigEndian.PutUint16(ip[4:], uint16(len(seg)))
		ip[6] = proto
		ip[7] = 64
		s, d := src.As16(), dst.As16()
		copy(ip[8:], s[:])
		copy(ip[24:], d[:])
	} else {
		ip[0] = 0x45
		binary.BigEndian.PutUint16(ip[2:], uint16(len(pkt)))
		ip[8] = 64
		ip[9] = proto
		s, d := src.As4(), dst.As4()
		copy(ip[12:], s[:])
		copy(ip[16:], d[:])
		binary.BigEndian.PutUint16(ip[10:], checksum(ip, 0))
	}
	if csumAt >= 0 {
		t[csumAt], t[csumAt+1] = 0, 0
		var initial uint32
		if proto != protoICMP {
			initial = pseudo(src, dst, proto, len(t))
		}
		cs := checksum(t, initial)
		if cs == 0 && proto == protoUDP {
			cs = 0xffff
		}
		binary.BigEndian.PutUint16(t[csumAt:], cs)
	}
	return pkt
}

// checksum is RFC 1071, written plainly and on its own so that tests of
// package tun check its checksums against an independent implementation.
func checksum(b []byte, initial uint32) uint16 {
	s := initial
	for i := 0; i+1 < len(b); i += 2 {
		s += uint32(b[i])<<8 | uint32(b[i+1])
	}
	if len(b)%2 == 1 {
		s += uint32(b[len(b)-1]) << 8
	}
	for s > 0xffff {
		s = s>>16 + s&0xffff
	}
	return ^uint16(s)
}

func pseudo(src, dst netip.Addr, proto uint8, length int) uint32 {
	var s uint32
	add := func(b []byte) {
		for i := 0; i+1 < len(b); i += 2 {
			s += uint32(b[i])<<8 | uint32(b[i+1])
		}
	}
	add(src.AsSlice())
	add(dst.AsSlice())
	return s + uint32(proto) + uint32(length)
}

// ValidChecksums reports whether pkt (IPv4 without fragmentation, or IPv6
// without extension headers) has a correct IPv4 header checksum and a
// correct TCP, UDP, ICMP or ICMPv6 checksum.
func ValidChecksums(pkt []byte) bool {
	if len(pkt) < 20 {
		return false
	}
	var src, dst netip.Addr
	var proto uint8
	var t []byte
	switch pkt[0] >> 4 {
	case 4:
		hl := int(pkt[0]&0xf) * 4
		if hl < 20 || len(pkt) < hl || checksum(pkt[:hl], 0) != 0 {
			return false
		}
		end := int(binary.BigEndian.Uint16(pkt[2:]))
		if end < hl || end > len(pkt) {
			return false
		}
		src = netip.AddrFrom4([4]byte(pkt[12:16]))
		dst = netip.AddrFrom4([4]byte(pkt[16:20]))
		proto, t = pkt[9], pkt[hl:end]
	case 6:
		if len(pkt) < 40 {
			return false
		}
		end := 40 + int(binary.BigEndian.Uint16(pkt[4:]))
		if end > len(pkt) {
			return false
		}
		src = netip.AddrFrom16([16]byte(pkt[8:24]))
		dst = netip.AddrFrom16([16]byte(pkt[24:40]))
		proto, t = pkt[6], pkt[40:end]
	default:
		return false
	}
	var initial uint32
	if proto != protoICMP {
		initial = pseudo(src, dst, proto, len(t))
	}
	switch proto {
	case protoUDP:
		if len(t) < 8 || binary.BigEndian.Uint16(t[6:]) == 0 && src.Is4() {
			return len(t) >= 8 // UDP over IPv4 may omit the checksum
		}
	case protoTCP, protoICMP, protoICMPv6:
	default:
		return true
	}
	return checksum(t, initial) == 0
}
