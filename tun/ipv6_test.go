package tun

import (
	"bytes"
	"encoding/binary"
	"math/rand/v2"
	"net/netip"
	"testing"

	"github.com/zlmesh/zlmesh/tun/tuntest"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"
)

// IPv6 on the packet path: checksums, answers and hooks, checked against
// gVisor's parsers and checksum code (an independent implementation).

// TestChecksumTransports computes TCP, UDP and ICMPv6 checksums (and ICMP's,
// which has no pseudo-header) of random segments of every length up to 300
// bytes with Checksum and PseudoHeaderSum, and compares them with gVisor's.
func TestChecksumTransports(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	addr := func(v6 bool) netip.Addr {
		if v6 {
			var b [16]byte
			for i := range b {
				b[i] = byte(rng.Uint32())
			}
			return netip.AddrFrom16(b)
		}
		var b [4]byte
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		return netip.AddrFrom4(b)
	}
	for _, tc := range []struct {
		name   string
		v6     bool
		proto  uint8
		csumAt int
		pseudo bool
	}{
		{"udp4", false, ProtoUDP, 6, true},
		{"tcp4", false, ProtoTCP, 16, true},
		{"icmp4", false, ProtoICMP, 2, false},
		{"udp6", true, ProtoUDP, 6, true},
		{"tcp6", true, ProtoTCP, 16, true},
		{"icmpv6", true, ProtoICMPv6, 2, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for n := tc.csumAt + 2; n <= 300; n++ {
				seg := make([]byte, n)
				for i := range seg {
					seg[i] = byte(rng.Uint32())
				}
				seg[tc.csumAt], seg[tc.csumAt+1] = 0, 0
				src, dst := addr(tc.v6), addr(tc.v6)

				var initial uint32
				var gv uint16
				if tc.pseudo {
					initial = PseudoHeaderSum(tc.proto, src, dst, n)
					gv = header.PseudoHeaderChecksum(tcpip.TransportProtocolNumber(tc.proto),
						tcpip.AddrFromSlice(src.AsSlice()), tcpip.AddrFromSlice(dst.AsSlice()), uint16(n))
				}
				got := Checksum(seg, initial)
				want := ^checksum.Checksum(seg, gv)
				if got != want {
					t.Fatalf("%d bytes from %s to %s: checksum %#04x, gVisor %#04x", n, src, dst, got, want)
				}
				// Stored, the whole segment sums to zero.
				binary.BigEndian.PutUint16(seg[tc.csumAt:], got)
				if c := Checksum(seg, initial); c != 0 {
					t.Fatalf("%d bytes: segment with its checksum sums to %#04x, want 0", n, c)
				}
			}
		})
	}
}

// TestIPv6PacketsValidForGVisor: the test builders' IPv6 packets and
// UDPReply's answers carry checksums gVisor accepts.
func TestIPv6PacketsValidForGVisor(t *testing.T) {
	valid := func(t *testing.T, pkt []byte) {
		t.Helper()
		var p Packet
		p.Decode(pkt)
		if p.Version != 6 {
			t.Fatalf("not IPv6: %+v", p)
		}
		h := header.IPv6(pkt)
		if !h.IsValid(len(pkt)) {
			t.Fatalf("gVisor rejects the IPv6 header")
		}
		src, dst := h.SourceAddress(), h.DestinationAddress()
		tr := p.Transport
		switch p.Proto {
		case ProtoUDP:
			u := header.UDP(tr)
			if !u.IsChecksumValid(src, dst, checksum.Checksum(u.Payload(), 0)) {
				t.Fatalf("gVisor rejects the UDP checksum")
			}
		case ProtoTCP:
			tc := header.TCP(tr)
			pl := tr[tc.DataOffset():]
			if !tc.IsChecksumValid(src, dst, checksum.Checksum(pl, 0), uint16(len(pl))) {
				t.Fatalf("gVisor rejects the TCP checksum")
			}
		case ProtoICMPv6:
			ic := header.ICMPv6(tr)
			want := header.ICMPv6Checksum(header.ICMPv6ChecksumParams{
				Header: ic[:header.ICMPv6MinimumSize], Src: src, Dst: dst,
				PayloadCsum: checksum.Checksum(ic[header.ICMPv6MinimumSize:], 0), PayloadLen: len(ic) - header.ICMPv6MinimumSize,
			})
			if ic.Checksum() != want {
				t.Fatalf("ICMPv6 checksum %#04x, gVisor %#04x", ic.Checksum(), want)
			}
		default:
			t.Fatalf("proto %d", p.Proto)
		}
	}
	for _, n := range []int{0, 1, 2, 77, 1400} {
		payload := bytes.Repeat([]byte{0x5a, 0xc3, 0x11}, n)[:n]
		valid(t, tuntest.UDP(a6, b6, payload))
		valid(t, tuntest.ICMPEcho(a6.Addr(), b6.Addr(), 7, uint16(n), payload))
		var q Packet
		q.Decode(ipv6ExtHeaders(tuntest.UDP(a6, b6, []byte("query"))))
		valid(t, UDPReply(&q, payload))
	}
	valid(t, tuntest.TCPSYN(a6, b6))
}

// TestUDPReplyIPv6ExtensionHeaders: a query behind hop-by-hop and
// destination options headers is answered by a plain IPv6 packet (the
// options are the query's, not the answer's), to the query's source port.
func TestUDPReplyIPv6ExtensionHeaders(t *testing.T) {
	query := ipv6ExtHeaders(tuntest.UDP(a6, b6, []byte("query")))
	var q Packet
	q.Decode(query)
	if q.Proto != ProtoUDP || string(q.Payload) != "query" {
		t.Fatalf("query decoded as %+v", q)
	}
	reply := UDPReply(&q, []byte("answer"))
	if len(reply) != ipv6HeaderLen+udpHeaderLen+len("answer") || reply[6] != ProtoUDP || reply[7] != 64 {
		t.Fatalf("reply of %d bytes, next header %d, hop limit %d; want a plain IPv6 UDP packet", len(reply), reply[6], reply[7])
	}
	if !tuntest.ValidChecksums(reply) {
		t.Fatalf("reply checksums are wrong")
	}
	var r Packet
	r.Decode(reply)
	if r.Src != b6.Addr() || r.Dst != a6.Addr() || r.SrcPort != 53 || r.DstPort != a6.Port() || string(r.Payload) != "answer" {
		t.Fatalf("reply %v:%d -> %v:%d %q", r.Src, r.SrcPort, r.Dst, r.DstPort, r.Payload)
	}
	// Fragments carry no payload to answer: a DNS hook never sees one as a
	// query; UDPReply still builds a well-formed packet with what it gets.
	var f Packet
	f.Decode(v6Fragment(tuntest.UDP(a6, b6, []byte("query")), true, 0))
	if f.Payload != nil || !f.Fragment {
		t.Fatalf("first fragment decoded with payload %q", f.Payload)
	}
}

// TestHookConsumesIPv6 runs an answering hook (like the DNS intercept) on
// IPv6 packets in both shapes the OS sends (with and without extension
// headers) and on ones it must leave alone: the answered packets never
// reach WireGuard, their answers go to the OS with valid checksums, and
// everything else passes in order.
func TestHookConsumesIPv6(t *testing.T) {
	dns := b6.Addr()
	other := netip.MustParseAddrPort("[fd00:200::99]:53")
	plain := tuntest.UDP(a6, b6, []byte("q1"))
	ext := ipv6ExtHeaders(tuntest.UDP(a6, b6, []byte("q2")))
	frag := v6Fragment(tuntest.UDP(a6, b6, []byte("q3")), true, 0)
	icmp := tuntest.ICMPEcho(a6.Addr(), dns, 1, 1, nil)
	passing := tuntest.UDP(a6, other, []byte("p1"))
	v4 := tuntest.UDP(a4, b4, []byte("p2"))
	dev := &scriptDevice{reads: []scriptRead{{pkts: [][]byte{plain, passing, ext, frag, icmp, v4}}}}
	w := NewWrapper(dev)
	w.AddHook(Outbound, 0, "dns6", func(p *Packet) Verdict {
		if p.Dst != dns {
			return Accept
		}
		if p.Proto != ProtoUDP || p.DstPort != 53 || p.Payload == nil {
			return Drop
		}
		if err := w.InjectInbound(UDPReply(p, append([]byte("a-"), p.Payload...))); err != nil {
			t.Errorf("inject: %v", err)
		}
		return Consumed
	})
	got := readOne(t, w)
	if len(got) != 2 || !bytes.Equal(got[0], passing) || !bytes.Equal(got[1], v4) {
		t.Fatalf("Read returned %d packets, want the two for other addresses", len(got))
	}
	var answers []string
	for _, wr := range dev.writes {
		for _, pkt := range wr.pkts {
			if !tuntest.ValidChecksums(pkt) {
				t.Errorf("answer %x: checksums wrong", pkt)
			}
			var r Packet
			r.Decode(pkt)
			if r.Version != 6 || r.Src != dns || r.Dst != a6.Addr() || r.DstPort != a6.Port() {
				t.Errorf("answer %v:%d -> %v:%d", r.Src, r.SrcPort, r.Dst, r.DstPort)
			}
			answers = append(answers, string(r.Payload))
		}
	}
	if len(answers) != 2 || answers[0] != "a-q1" || answers[1] != "a-q2" {
		t.Errorf("answers %q, want a-q1 and a-q2", answers)
	}
	want := Counters{Seen: 6, Dropped: 2, Consumed: 2}
	if c := w.Counters(Outbound); c != want {
		t.Errorf("outbound counters %+v, want %+v", c, want)
	}
	if c := w.Counters(Inbound); c != (Counters{Injected: 2}) {
		t.Errorf("inbound counters %+v", c)
	}
}

// TestInboundHookIPv6: inbound hooks see IPv6 packets from WireGuard
// decoded through extension headers, and what they drop is not written.
func TestInboundHookIPv6(t *testing.T) {
	keep := ipv6ExtHeaders(tuntest.UDP(a6, b6, []byte("keep")))
	drop := ipv6ExtHeaders(tuntest.TCPSYN(a6, netip.AddrPortFrom(b6.Addr(), 22)))
	dev := &scriptDevice{}
	w := NewWrapper(dev)
	var seen []uint16
	w.AddHook(Inbound, 0, "filter", func(p *Packet) Verdict {
		seen = append(seen, p.DstPort)
		if p.Proto == ProtoTCP && p.DstPort == 22 {
			return Drop
		}
		return Accept
	})
	bufs := [][]byte{append(make([]byte, 16), keep...), append(make([]byte, 16), drop...)}
	if n, err := w.Write(bufs, 16); n != 2 || err != nil {
		t.Fatalf("Write = %d, %v", n, err)
	}
	if len(seen) != 2 || seen[0] != 53 || seen[1] != 22 {
		t.Errorf("hook saw ports %v, want 53 and 22", seen)
	}
	if len(dev.writes) != 1 || len(dev.writes[0].pkts) != 1 || !bytes.Equal(dev.writes[0].pkts[0], keep) {
		t.Errorf("device got %d writes, want the kept packet alone", len(dev.writes))
	}
}
