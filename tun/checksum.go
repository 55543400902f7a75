package tun

import (
	"encoding/binary"
	"net/netip"
)

// Internet checksums (RFC 1071) for hooks that build or rewrite packets.
//
// A partial sum is the one's-complement sum of 16-bit big-endian words,
// folded to 16 bits but not complemented; sums of pieces add up (feed one as
// the initial value of the next). Checksum finishes a sum into the value
// stored in a header.

// Checksum returns the Internet checksum of b, starting from the partial sum
// initial (0, or PseudoHeaderSum for TCP, UDP and ICMPv6): the folded,
// complemented value to store in the header's checksum field, which must be
// zero in b while summing. An odd trailing byte is padded with zero.
func Checksum(b []byte, initial uint32) uint16 {
	return ^fold(sum(b, uint64(initial)))
}

// PartialSum returns the partial (uncomplemented) sum of b added to initial.
func PartialSum(b []byte, initial uint32) uint32 {
	return uint32(fold(sum(b, uint64(initial))))
}

// PseudoHeaderSum returns the partial sum of the pseudo-header that TCP, UDP
// and ICMPv6 checksums cover (RFC 768, RFC 8200 section 8.1): source and
// destination addresses, protocol and the transport length. src and dst must
// be of the same family.
func PseudoHeaderSum(proto uint8, src, dst netip.Addr, length int) uint32 {
	var acc uint64
	if src.Is4() {
		s, d := src.As4(), dst.As4()
		acc = sum(s[:], acc)
		acc = sum(d[:], acc)
	} else {
		s, d := src.As16(), dst.As16()
		acc = sum(s[:], acc)
		acc = sum(d[:], acc)
	}
	acc += uint64(proto) + uint64(uint32(length))
	return uint32(fold(acc))
}

// IPv4HeaderChecksum computes and stores the header checksum of the IPv4
// header at the start of b (b must hold the whole header, IHL*4 bytes).
func IPv4HeaderChecksum(b []byte) {
	hl := int(b[0]&0x0f) * 4
	b[10], b[11] = 0, 0
	binary.BigEndian.PutUint16(b[10:12], Checksum(b[:hl], 0))
}

// sum adds b to acc as 32-bit words (equivalent to 16-bit ones once folded,
// since 2^16 = 1 in one's-complement arithmetic).
func sum(b []byte, acc uint64) uint64 {
	for len(b) >= 8 {
		v := binary.BigEndian.Uint64(b)
		acc += v >> 32
		acc += v & 0xffffffff
		b = b[8:]
	}
	if len(b) >= 4 {
		acc += uint64(binary.BigEndian.Uint32(b))
		b = b[4:]
	}
	if len(b) >= 2 {
		acc += uint64(binary.BigEndian.Uint16(b))
		b = b[2:]
	}
	if len(b) == 1 {
		acc += uint64(b[0]) << 8
	}
	return acc
}

func fold(acc uint64) uint16 {
	for acc > 0xffff {
		acc = (acc >> 16) + (acc & 0xffff)
	}
	return uint16(acc)
}

// UDPReply returns a new, whole IP packet that answers the UDP packet p:
// from p.Dst:p.DstPort to p.Src:p.SrcPort, of p's IP version, carrying
// payload, with correct IP and UDP checksums (IPv4: no options, DF set, TTL
// 64; IPv6: hop limit 64). It returns nil when p is not a decoded UDP packet
// or the answer would be larger than 65535 bytes. The hook that answers
// typically passes the result to Wrapper.InjectInbound and returns Consumed.
// UDPReply does not keep p or payload.
func UDPReply(p *Packet, payload []byte) []byte {
	return AppendUDPReply(nil, p, payload)
}

// AppendUDPReply is UDPReply that appends the packet to b (which may be a
// reused buffer's b[:0]) and returns the extended slice; b is returned
// unchanged when there is no answer to build.
func AppendUDPReply(b []byte, p *Packet, payload []byte) []byte {
	if p.Proto != ProtoUDP || (p.Version != 4 && p.Version != 6) {
		return b
	}
	src, dst := p.Dst, p.Src
	udpLen := udpHeaderLen + len(payload)
	hl := ipv4HeaderLen
	if p.Version == 6 {
		hl = ipv6HeaderLen
	}
	if udpLen > 0xffff || (p.Version == 4 && hl+udpLen > 0xffff) {
		return b
	}
	start := len(b)
	b = append(b, make([]byte, hl+udpLen)...)
	pkt := b[start:]
	ip, udp := pkt[:hl], pkt[hl:]

	if p.Version == 4 {
		ip[0] = 0x45
		binary.BigEndian.PutUint16(ip[2:4], uint16(hl+udpLen))
		binary.BigEndian.PutUint16(ip[6:8], 0x4000) // DF
		ip[8] = 64
		ip[9] = ProtoUDP
		s, d := src.As4(), dst.As4()
		copy(ip[12:16], s[:])
		copy(ip[16:20], d[:])
		IPv4HeaderChecksum(ip)
	} else {
		ip[0] = 0x60
		binary.BigEndian.PutUint16(ip[4:6], uint16(udpLen))
		ip[6] = ProtoUDP
		ip[7] = 64
		s, d := src.As16(), dst.As16()
		copy(ip[8:24], s[:])
		copy(ip[24:40], d[:])
	}
	binary.BigEndian.PutUint16(udp[0:2], p.DstPort)
	binary.BigEndian.PutUint16(udp[2:4], p.SrcPort)
	binary.BigEndian.PutUint16(udp[4:6], uint16(udpLen))
	copy(udp[udpHeaderLen:], payload)
	cs := Checksum(udp, PseudoHeaderSum(ProtoUDP, src, dst, udpLen))
	if cs == 0 {
		cs = 0xffff // 0 means "no checksum" in UDP
	}
	binary.BigEndian.PutUint16(udp[6:8], cs)
	return b
}
