package tun

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"testing"
	"unsafe"

	"github.com/zlmesh/zlmesh/tun/tuntest"
	"gvisor.dev/gvisor/pkg/tcpip/header"
)

var (
	a4   = netip.MustParseAddrPort("10.200.1.5:40000")
	b4   = netip.MustParseAddrPort("10.200.255.53:53")
	a6   = netip.MustParseAddrPort("[fd00:200::5]:40000")
	b6   = netip.MustParseAddrPort("[fd00:200::53]:53")
	data = []byte("hello, mesh")
)

// want is what a test expects Decode to find. Transport and Payload are
// given as lengths (-1: nil).
type want struct {
	version          int
	proto            uint8
	src, dst         netip.Addr
	sport, dport     uint16
	payload          []byte // compared when wantPayload
	wantPayload      bool
	transportLen     int
	fragment, truncd bool
}

func TestDecode(t *testing.T) {
	udp4 := tuntest.UDP(a4, b4, data)
	udp6 := tuntest.UDP(a6, b6, data)

	tests := []struct {
		name string
		pkt  []byte
		want want
	}{
		{"udp4", udp4, want{
			version: 4, proto: ProtoUDP, src: a4.Addr(), dst: b4.Addr(), sport: 40000, dport: 53,
			payload: data, wantPayload: true, transportLen: 8 + len(data)}},
		{"udp6", udp6, want{
			version: 6, proto: ProtoUDP, src: a6.Addr(), dst: b6.Addr(), sport: 40000, dport: 53,
			payload: data, wantPayload: true, transportLen: 8 + len(data)}},
		{"tcp4 syn", tuntest.TCPSYN(a4, b4), want{
			version: 4, proto: ProtoTCP, src: a4.Addr(), dst: b4.Addr(), sport: 40000, dport: 53,
			payload: []byte{}, wantPayload: true, transportLen: 20}},
		{"tcp6 syn", tuntest.TCPSYN(a6, b6), want{
			version: 6, proto: ProtoTCP, src: a6.Addr(), dst: b6.Addr(), sport: 40000, dport: 53,
			payload: []byte{}, wantPayload: true, transportLen: 20}},
		{"tcp4 options and data", tcpWithOptions(a4, b4, data), want{
			version: 4, proto: ProtoTCP, src: a4.Addr(), dst: b4.Addr(), sport: 40000, dport: 53,
			payload: data, wantPayload: true, transportLen: 32 + len(data)}},
		{"icmp4 echo", tuntest.ICMPEcho(a4.Addr(), b4.Addr(), 7, 1, data), want{
			version: 4, proto: ProtoICMP, src: a4.Addr(), dst: b4.Addr(), transportLen: 8 + len(data)}},
		{"icmp6 echo", tuntest.ICMPEcho(a6.Addr(), b6.Addr(), 7, 1, data), want{
			version: 6, proto: ProtoICMPv6, src: a6.Addr(), dst: b6.Addr(), transportLen: 8 + len(data)}},
		{"ipv4 options", ipv4Options(udp4), want{
			version: 4, proto: ProtoUDP, src: a4.Addr(), dst: b4.Addr(), sport: 40000, dport: 53,
			payload: data, wantPayload: true, transportLen: 8 + len(data)}},
		{"ipv4 link padding ignored", append(bytes.Clone(udp4), 0, 0, 0, 0), want{
			version: 4, proto: ProtoUDP, src: a4.Addr(), dst: b4.Addr(), sport: 40000, dport: 53,
			payload: data, wantPayload: true, transportLen: 8 + len(data)}},
		{"ipv6 hop-by-hop and dest opts", ipv6ExtHeaders(udp6), want{
			version: 6, proto: ProtoUDP, src: a6.Addr(), dst: b6.Addr(), sport: 40000, dport: 53,
			payload: data, wantPayload: true, transportLen: 8 + len(data)}},
		{"ipv4 first fragment", v4Fragment(udp4, true, 0), want{
			version: 4, proto: ProtoUDP, src: a4.Addr(), dst: b4.Addr(), sport: 40000, dport: 53,
			transportLen: 8 + len(data), fragment: true}},
		{"ipv4 later fragment", v4Fragment(udp4, false, 185), want{
			version: 4, proto: ProtoUDP, src: a4.Addr(), dst: b4.Addr(), transportLen: -1, fragment: true}},
		{"ipv6 first fragment", v6Fragment(udp6, true, 0), want{
			version: 6, proto: ProtoUDP, src: a6.Addr(), dst: b6.Addr(), sport: 40000, dport: 53,
			transportLen: 8 + len(data), fragment: true}},
		{"ipv6 later fragment", v6Fragment(udp6, false, 185), want{
			version: 6, proto: ProtoUDP, src: a6.Addr(), dst: b6.Addr(), transportLen: -1, fragment: true}},
		{"ipv4 truncated payload", udp4[:len(udp4)-3], want{
			version: 4, proto: ProtoUDP, src: a4.Addr(), dst: b4.Addr(), sport: 40000, dport: 53,
			transportLen: 8 + len(data) - 3, truncd: true}},
		{"ipv4 truncated in the ports", udp4[:22], want{
			version: 4, proto: ProtoUDP, src: a4.Addr(), dst: b4.Addr(), transportLen: 2, truncd: true}},
		{"ipv6 truncated payload", udp6[:len(udp6)-1], want{
			version: 6, proto: ProtoUDP, src: a6.Addr(), dst: b6.Addr(), sport: 40000, dport: 53,
			transportLen: 8 + len(data) - 1, truncd: true}},
		{"ipv6 truncated extension header", ipv6ExtHeaders(udp6)[:43], want{
			version: 6, proto: ipv6HopByHop, src: a6.Addr(), dst: b6.Addr(), transportLen: -1, truncd: true}},
		{"udp length beyond packet", setBytes(udp4, 24, 0x01, 0x00), want{
			version: 4, proto: ProtoUDP, src: a4.Addr(), dst: b4.Addr(), sport: 40000, dport: 53,
			transportLen: 8 + len(data)}},
		{"udp length below header", setBytes(udp4, 24, 0x00, 0x04), want{
			version: 4, proto: ProtoUDP, src: a4.Addr(), dst: b4.Addr(), sport: 40000, dport: 53,
			transportLen: 8 + len(data)}},
		{"tcp data offset beyond packet", setBytes(tuntest.TCPSYN(a4, b4), 32, 0xf0), want{
			version: 4, proto: ProtoTCP, src: a4.Addr(), dst: b4.Addr(), sport: 40000, dport: 53,
			transportLen: 20}},
		{"tcp data offset below header", setBytes(tuntest.TCPSYN(a4, b4), 32, 0x10), want{
			version: 4, proto: ProtoTCP, src: a4.Addr(), dst: b4.Addr(), sport: 40000, dport: 53,
			transportLen: 20}},
		{"ipv4 total length below header", setBytes(udp4, 2, 0, 10), want{
			version: 4, proto: ProtoUDP, src: a4.Addr(), dst: b4.Addr(), transportLen: -1}},
		{"ipv4 ihl below 5", setBytes(udp4, 0, 0x44), want{}},
		{"ipv4 ihl beyond packet", setBytes(udp4[:24], 0, 0x4f), want{}},
		{"ipv4 header cut", udp4[:19], want{}},
		{"ipv6 header cut", udp6[:39], want{}},
		{"empty", []byte{}, want{}},
		{"nil", nil, want{}},
		{"one byte", []byte{0x45}, want{}},
		{"version 5", setBytes(udp4, 0, 0x55), want{}},
		{"garbage", bytes.Repeat([]byte{0xff}, 64), want{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			orig := bytes.Clone(tt.pkt)
			var p Packet
			p.Decode(tt.pkt)
			checkPacket(t, &p, tt.want)
			checkInvariants(t, &p)
			if !bytes.Equal(tt.pkt, orig) {
				t.Errorf("Decode modified the packet")
			}
		})
	}
}

func checkPacket(t *testing.T, p *Packet, w want) {
	t.Helper()
	if p.Version != w.version || p.Proto != w.proto || p.Src != w.src || p.Dst != w.dst {
		t.Errorf("got v%d proto %d %v -> %v, want v%d proto %d %v -> %v",
			p.Version, p.Proto, p.Src, p.Dst, w.version, w.proto, w.src, w.dst)
	}
	if p.SrcPort != w.sport || p.DstPort != w.dport {
		t.Errorf("ports %d -> %d, want %d -> %d", p.SrcPort, p.DstPort, w.sport, w.dport)
	}
	if w.wantPayload {
		if p.Payload == nil || !bytes.Equal(p.Payload, w.payload) {
			t.Errorf("payload %q, want %q", p.Payload, w.payload)
		}
	} else if p.Payload != nil {
		t.Errorf("payload %q, want nil", p.Payload)
	}
	switch {
	case w.version == 0:
	case w.transportLen < 0 && p.Transport != nil:
		t.Errorf("transport of %d bytes, want nil", len(p.Transport))
	case w.transportLen >= 0 && (p.Transport == nil || len(p.Transport) != w.transportLen):
		t.Errorf("transport %v (%d bytes), want %d bytes", p.Transport != nil, len(p.Transport), w.transportLen)
	}
	if p.Fragment != w.fragment || p.Truncated != w.truncd {
		t.Errorf("fragment %v truncated %v, want %v %v", p.Fragment, p.Truncated, w.fragment, w.truncd)
	}
}

// within reports whether inner lies inside outer's bytes.
func within(outer, inner []byte) bool {
	if inner == nil {
		return true
	}
	if len(inner) == 0 {
		// An empty slice at the very end of outer is fine.
		o := uintptr(unsafe.Pointer(unsafe.SliceData(outer)))
		i := uintptr(unsafe.Pointer(unsafe.SliceData(inner)))
		return i >= o && i <= o+uintptr(cap(outer))
	}
	if len(outer) == 0 {
		return false
	}
	o := uintptr(unsafe.Pointer(&outer[0]))
	i := uintptr(unsafe.Pointer(&inner[0]))
	return i >= o && i+uintptr(len(inner)) <= o+uintptr(len(outer))
}

// checkInvariants holds for every packet, valid or not.
func checkInvariants(t testing.TB, p *Packet) {
	t.Helper()
	switch p.Version {
	case 0:
		if !emptyBut(p) {
			t.Fatalf("version 0 but fields set: %+v", p)
		}
		return
	case 4:
		if !p.Src.Is4() || !p.Dst.Is4() {
			t.Fatalf("v4 packet with addresses %v %v", p.Src, p.Dst)
		}
	case 6:
		if !p.Src.Is6() || !p.Dst.Is6() {
			t.Fatalf("v6 packet with addresses %v %v", p.Src, p.Dst)
		}
	default:
		t.Fatalf("version %d", p.Version)
	}
	if !within(p.Buf, p.Transport) || !within(p.Transport, p.Payload) {
		t.Fatalf("transport or payload outside the packet")
	}
	if p.Payload != nil && p.Transport == nil {
		t.Fatalf("payload without transport")
	}
	if p.Proto != ProtoTCP && p.Proto != ProtoUDP && (p.SrcPort != 0 || p.DstPort != 0 || p.Payload != nil) {
		t.Fatalf("proto %d with ports or payload", p.Proto)
	}
	if (p.Fragment || p.Truncated) && p.Payload != nil {
		t.Fatalf("fragment or truncated packet with a payload")
	}
}

func setBytes(pkt []byte, at int, b ...byte) []byte {
	pkt = bytes.Clone(pkt)
	copy(pkt[at:], b)
	return pkt
}

// tcpWithOptions builds an IPv4 TCP segment with 12 bytes of options.
func tcpWithOptions(src, dst netip.AddrPort, payload []byte) []byte {
	seg := make([]byte, 32+len(payload))
	binary.BigEndian.PutUint16(seg[0:], src.Port())
	binary.BigEndian.PutUint16(seg[2:], dst.Port())
	seg[12] = 8 << 4
	seg[13] = 0x18          // PSH ACK
	seg[20], seg[21] = 2, 4 // MSS
	binary.BigEndian.PutUint16(seg[22:], 1380)
	seg[24], seg[25] = 1, 1 // NOPs, then timestamps cut to NOPs
	for i := 26; i < 32; i++ {
		seg[i] = 1
	}
	copy(seg[32:], payload)
	return tuntest.IP(src.Addr(), dst.Addr(), ProtoTCP, seg, 16)
}

// ipv4Options inserts 4 bytes of options (NOP NOP NOP EOL) into an IPv4
// packet.
func ipv4Options(pkt []byte) []byte {
	out := make([]byte, 0, len(pkt)+4)
	out = append(out, pkt[:20]...)
	out = append(out, 1, 1, 1, 0)
	out = append(out, pkt[20:]...)
	out[0] = 0x46
	binary.BigEndian.PutUint16(out[2:], uint16(len(out)))
	IPv4HeaderChecksum(out)
	return out
}

// ipv6ExtHeaders inserts a hop-by-hop header (8 bytes, padding) and a
// destination options header (16 bytes: one experimental option, RFC 4727,
// that receivers skip) in front of the transport header. Both pass the
// Linux kernel's checks (padding is at most 7 bytes there).
func ipv6ExtHeaders(pkt []byte) []byte {
	proto := pkt[6]
	out := make([]byte, 0, len(pkt)+24)
	out = append(out, pkt[:40]...)
	out = append(out, ipv6DestOpts, 0, 1, 4, 0, 0, 0, 0)                      // hop-by-hop, PadN
	out = append(out, proto, 1, 0x1e, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0) // dest opts, experiment
	out = append(out, pkt[40:]...)
	out[6] = ipv6HopByHop
	binary.BigEndian.PutUint16(out[4:], uint16(len(out)-40))
	return out
}

// v4Fragment marks an IPv4 packet as a fragment (more fragments follow, or
// a fragment at offset*8).
func v4Fragment(pkt []byte, more bool, offset uint16) []byte {
	out := bytes.Clone(pkt)
	f := offset
	if more {
		f |= 0x2000
	}
	binary.BigEndian.PutUint16(out[6:], f)
	IPv4HeaderChecksum(out)
	return out
}

// v6Fragment inserts a fragment header.
func v6Fragment(pkt []byte, more bool, offset uint16) []byte {
	proto := pkt[6]
	out := make([]byte, 0, len(pkt)+8)
	out = append(out, pkt[:40]...)
	f := offset << 3
	if more {
		f |= 1
	}
	out = append(out, proto, 0, byte(f>>8), byte(f), 0, 0, 0, 42)
	out = append(out, pkt[40:]...)
	out[6] = ipv6Fragment
	binary.BigEndian.PutUint16(out[4:], uint16(len(out)-40))
	return out
}

func TestDecodeReusesPacket(t *testing.T) {
	var p Packet
	p.Decode(tuntest.UDP(a4, b4, data))
	p.Decode([]byte{0x00})
	if !emptyBut(&p) || len(p.Buf) != 1 {
		t.Fatalf("fields of the previous packet survived: %+v", p)
	}
}

// emptyBut reports whether every field of p but Buf is zero.
func emptyBut(p *Packet) bool {
	return p.Version == 0 && p.Proto == 0 && !p.Src.IsValid() && !p.Dst.IsValid() &&
		p.SrcPort == 0 && p.DstPort == 0 && p.Payload == nil && p.Transport == nil &&
		!p.Fragment && !p.Truncated
}

func TestDecodeAllocs(t *testing.T) {
	pkts := [][]byte{tuntest.UDP(a4, b4, data), tuntest.UDP(a6, b6, data), ipv6ExtHeaders(tuntest.UDP(a6, b6, data))}
	var p Packet
	allocs := testing.AllocsPerRun(100, func() {
		for _, b := range pkts {
			p.Decode(b)
		}
	})
	if allocs != 0 {
		t.Fatalf("Decode allocates %v times per run", allocs)
	}
}

func FuzzParse(f *testing.F) {
	udp4 := tuntest.UDP(a4, b4, data)
	udp6 := tuntest.UDP(a6, b6, data)
	for _, seed := range [][]byte{
		udp4, udp6,
		tuntest.TCPSYN(a4, b4), tuntest.TCPSYN(a6, b6),
		tcpWithOptions(a4, b4, data),
		tuntest.ICMPEcho(a4.Addr(), b4.Addr(), 1, 2, data),
		tuntest.ICMPEcho(a6.Addr(), b6.Addr(), 1, 2, data),
		ipv4Options(udp4), ipv6ExtHeaders(udp6),
		v4Fragment(udp4, true, 0), v4Fragment(udp4, false, 3),
		v6Fragment(udp6, true, 0), v6Fragment(udp6, false, 3),
		udp4[:25], udp6[:45], {}, {0x45}, {0x60},
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		orig := bytes.Clone(b)
		var p Packet
		p.Decode(b)
		checkInvariants(t, &p)
		if !bytes.Equal(b, orig) {
			t.Fatalf("Decode modified its input")
		}
		var q Packet
		q.Decode(b)
		if p.Version != q.Version || p.Src != q.Src || p.SrcPort != q.SrcPort || len(p.Payload) != len(q.Payload) {
			t.Fatalf("Decode is not deterministic")
		}
		// Cross-check well-formed headers with gVisor's parsers.
		if len(b) > 0 && b[0]>>4 == 4 && header.IPv4(b).IsValid(len(b)) {
			h := header.IPv4(b)
			if p.Version != 4 || p.Truncated || p.Proto != h.Protocol() ||
				p.Src.AsSlice() == nil || !bytes.Equal(p.Src.AsSlice(), h.SourceAddressSlice()) ||
				!bytes.Equal(p.Dst.AsSlice(), h.DestinationAddressSlice()) {
				t.Fatalf("valid IPv4 header decoded as %+v", p)
			}
			if h.FragmentOffset() == 0 && len(p.Transport) != int(h.TotalLength())-int(h.HeaderLength()) {
				t.Fatalf("transport of %d bytes, gVisor says %d", len(p.Transport), int(h.TotalLength())-int(h.HeaderLength()))
			}
		}
		if len(b) > 0 && b[0]>>4 == 6 && header.IPv6(b).IsValid(len(b)) {
			h := header.IPv6(b)
			if p.Version != 6 || p.Truncated ||
				!bytes.Equal(p.Src.AsSlice(), h.SourceAddressSlice()) ||
				!bytes.Equal(p.Dst.AsSlice(), h.DestinationAddressSlice()) {
				t.Fatalf("valid IPv6 header decoded as %+v", p)
			}
			if nh := h.NextHeader(); nh == ProtoUDP || nh == ProtoTCP || nh == ProtoICMPv6 {
				if p.Proto != nh || len(p.Transport) != int(h.PayloadLength()) {
					t.Fatalf("next header %d payload %d decoded as proto %d transport %d",
						nh, h.PayloadLength(), p.Proto, len(p.Transport))
				}
			}
		}
		// A UDP payload is what the UDP length field says.
		if p.Proto == ProtoUDP && p.Payload != nil {
			if ulen := int(binary.BigEndian.Uint16(p.Transport[4:6])); len(p.Payload) != ulen-8 {
				t.Fatalf("udp payload %d bytes, length field %d", len(p.Payload), ulen)
			}
		}
	})
}
