package tun

import (
	"encoding/binary"
	"net/netip"
)

// IP protocol numbers the packet path looks at.
const (
	ProtoICMP   = 1
	ProtoTCP    = 6
	ProtoUDP    = 17
	ProtoICMPv6 = 58
)

// IPv6 extension headers Decode walks through.
const (
	ipv6HopByHop = 0
	ipv6Routing  = 43
	ipv6Fragment = 44
	ipv6AH       = 51
	ipv6DestOpts = 60
)

const (
	ipv4HeaderLen = 20
	ipv6HeaderLen = 40
	udpHeaderLen  = 8
	tcpHeaderLen  = 20
)

// Packet is one IP packet as the hooks see it, decoded once.
//
// Buf and the slices into it (Transport, Payload) are valid only during the
// hook call: they alias the device's buffers and must be copied to be kept.
// The *Packet itself is reused for the next packet; hooks must not keep it.
// A hook may rewrite bytes of Buf in place (its length is fixed); if it
// changes addresses, ports or the protocol it calls Decode(p.Buf) so that
// the hooks after it see the new values.
type Packet struct {
	Buf      []byte
	Version  int // 4 or 6; 0 when the packet did not parse
	Proto    uint8
	Src, Dst netip.Addr
	// SrcPort and DstPort are set for TCP and UDP when the packet holds
	// them (its first 4 transport bytes: unfragmented packets, first
	// fragments, truncated packets that go that far).
	SrcPort, DstPort uint16
	// Payload is the transport payload (after the TCP or UDP header), nil
	// for other protocols, for fragments, and when the packet is truncated
	// or its transport header is malformed.
	Payload []byte

	// Transport is everything after the IP header (and IPv6 extension
	// headers) up to the end the IP header declares, or to the end of Buf
	// when the packet is truncated: the TCP, UDP or ICMP header and what
	// follows. Nil when the packet is not IP or is a non-first fragment.
	Transport []byte
	// Fragment is set for any IP fragment (first or not). Non-first
	// fragments carry no transport header: Transport, ports and Payload
	// are empty.
	Fragment bool
	// Truncated is set when Buf is shorter than the IP header's length
	// field says.
	Truncated bool
}

// Decode parses b into p, replacing everything p held; p.Buf = b. It never
// panics and never allocates: whatever is malformed or missing is left
// zero (Version 0 when there is no valid IPv4 or IPv6 header). Bytes after
// the length the IP header declares (link padding) are ignored.
func (p *Packet) Decode(b []byte) {
	*p = Packet{Buf: b}
	if len(b) == 0 {
		return
	}
	switch b[0] >> 4 {
	case 4:
		p.decode4(b)
	case 6:
		p.decode6(b)
	}
}

func (p *Packet) decode4(b []byte) {
	if len(b) < ipv4HeaderLen {
		return
	}
	hl := int(b[0]&0x0f) * 4
	if hl < ipv4HeaderLen || hl > len(b) {
		return
	}
	p.Version = 4
	p.Proto = b[9]
	p.Src = netip.AddrFrom4([4]byte(b[12:16]))
	p.Dst = netip.AddrFrom4([4]byte(b[16:20]))

	end := int(binary.BigEndian.Uint16(b[2:4]))
	if end > len(b) {
		p.Truncated = true
		end = len(b)
	}
	if end < hl {
		// The total length does not even cover the header: malformed.
		return
	}
	frag := binary.BigEndian.Uint16(b[6:8])
	moreFragments := frag&0x2000 != 0
	offset := frag & 0x1fff
	if moreFragments || offset != 0 {
		p.Fragment = true
		if offset != 0 {
			return
		}
	}
	p.decodeTransport(b[hl:end])
}

func (p *Packet) decode6(b []byte) {
	if len(b) < ipv6HeaderLen {
		return
	}
	p.Version = 6
	p.Src = netip.AddrFrom16([16]byte(b[8:24]))
	p.Dst = netip.AddrFrom16([16]byte(b[24:40]))

	end := ipv6HeaderLen + int(binary.BigEndian.Uint16(b[4:6]))
	if end > len(b) {
		p.Truncated = true
		end = len(b)
	}
	next := b[6]
	off := ipv6HeaderLen
	// Each extension header is at least 8 bytes long, so the walk ends.
	for {
		var hlen int
		switch next {
		case ipv6HopByHop, ipv6Routing, ipv6DestOpts:
			if off+2 > end {
				p.Proto = next
				return
			}
			hlen = (int(b[off+1]) + 1) * 8
		case ipv6AH:
			if off+2 > end {
				p.Proto = next
				return
			}
			hlen = (int(b[off+1]) + 2) * 4
		case ipv6Fragment:
			if off+8 > end {
				p.Proto = next
				return
			}
			hlen = 8
			p.Fragment = true
			if binary.BigEndian.Uint16(b[off+2:off+4])>>3 != 0 {
				// A non-first fragment: say what it carries, no more.
				p.Proto = b[off]
				return
			}
		default:
			p.Proto = next
			p.decodeTransport(b[off:end])
			return
		}
		if off+hlen > end {
			p.Proto = next
			return
		}
		next = b[off]
		off += hlen
	}
}

// decodeTransport sets Transport, and the ports and Payload for TCP and UDP.
// t runs from the transport header to the declared end of the packet.
func (p *Packet) decodeTransport(t []byte) {
	p.Transport = t
	switch p.Proto {
	case ProtoUDP:
		// The ports are in the first 4 bytes, as for TCP.
		if len(t) < 4 {
			return
		}
		p.SrcPort = binary.BigEndian.Uint16(t[0:2])
		p.DstPort = binary.BigEndian.Uint16(t[2:4])
		if p.Fragment || p.Truncated || len(t) < udpHeaderLen {
			return
		}
		ulen := int(binary.BigEndian.Uint16(t[4:6]))
		if ulen < udpHeaderLen || ulen > len(t) {
			return
		}
		p.Payload = t[udpHeaderLen:ulen]
	case ProtoTCP:
		// A first fragment may hold no more than the ports.
		if len(t) < 4 {
			return
		}
		p.SrcPort = binary.BigEndian.Uint16(t[0:2])
		p.DstPort = binary.BigEndian.Uint16(t[2:4])
		if p.Fragment || p.Truncated || len(t) < tcpHeaderLen {
			return
		}
		doff := int(t[12]>>4) * 4
		if doff < tcpHeaderLen || doff > len(t) {
			return
		}
		p.Payload = t[doff:]
	}
}
