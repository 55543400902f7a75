package tun

import (
	"bytes"
	"errors"
	"net/netip"
	"os"
	"slices"
	"testing"

	"github.com/zlmesh/zlmesh/tun/tuntest"
)

// The verdicts of FuzzWrapper's hooks, as pure functions of the decoded
// packet, so the test can predict what the Wrapper must do.
func fuzzAnswers(p *Packet) bool {
	return p.Version != 0 && p.Proto == ProtoUDP && p.DstPort%3 == 0
}

func fuzzOutbound(p *Packet) Verdict {
	switch {
	case fuzzAnswers(p):
		return Consumed
	case p.Version == 0, p.Fragment:
		return Drop
	case p.Truncated:
		return Consumed
	}
	return Accept
}

func fuzzInbound(p *Packet) Verdict {
	switch {
	case p.Proto == ProtoTCP:
		return Consumed
	case len(p.Buf)%5 == 0:
		return Drop
	}
	return Accept
}

// splitFrames cuts data into packets, each prefixed by a length byte.
func splitFrames(data []byte) [][]byte {
	var pkts [][]byte
	for len(data) > 0 && len(pkts) < 32 {
		n := min(int(data[0]), len(data)-1)
		pkts = append(pkts, data[1:1+n])
		data = data[1+n:]
	}
	return pkts
}

func frames(pkts ...[]byte) []byte {
	var out []byte
	for _, p := range pkts {
		out = append(out, byte(len(p)))
		out = append(out, p...)
	}
	return out
}

// FuzzWrapper pushes arbitrary packets through Read and Write with hooks
// that drop, consume and answer, and checks that exactly the packets the
// hooks accept come out, in order, that answers are valid packets, and that
// the counters add up.
func FuzzWrapper(f *testing.F) {
	f.Add(frames(udpTo(53, "q"), udpTo(80, "x"), tuntest.TCPSYN(a4, b4)))
	f.Add(frames(tuntest.UDP(a6, b6, []byte("q6")), v6Fragment(tuntest.UDP(a6, b6, data), false, 2), []byte{0x45}))
	f.Add(frames(tuntest.ICMPEcho(a4.Addr(), b4.Addr(), 1, 1, nil), udpTo(54, "xyz")[:29], []byte{}, udpTo(81, "y")))
	f.Add(frames(udpTo(9, "a"), udpTo(9, "b"), udpTo(9, "c"), udpTo(9, "d")))
	// IPv6: answered queries (port 9) with and without extension headers,
	// TCP (consumed inbound), ICMPv6, fragments, a cut header.
	q6 := tuntest.UDP(a6, netip.AddrPortFrom(b6.Addr(), 9), []byte("q6"))
	f.Add(frames(q6, ipv6ExtHeaders(q6), tuntest.TCPSYN(a6, b6), tuntest.ICMPEcho(a6.Addr(), b6.Addr(), 1, 1, data)))
	f.Add(frames(v6Fragment(q6, true, 0), ipv6ExtHeaders(tuntest.UDP(a6, b6, data)), q6[:45], udpTo(9, "v4"), q6))
	f.Fuzz(fuzzWrapper)
}

func fuzzWrapper(t *testing.T, data []byte) {
	{
		pkts := splitFrames(data)
		var reads []scriptRead
		for i := 0; i < len(pkts); i += 3 {
			reads = append(reads, scriptRead{pkts: pkts[i:min(i+3, len(pkts))]})
		}
		dev := &scriptDevice{reads: reads}
		w := NewWrapper(dev)
		w.AddHook(Outbound, 1, "answer", func(p *Packet) Verdict {
			if !fuzzAnswers(p) {
				return Accept
			}
			if err := w.InjectInbound(UDPReply(p, p.Payload)); err != nil {
				t.Fatalf("inject: %v", err)
			}
			return Consumed
		})
		w.AddHook(Outbound, 2, "filter", fuzzOutbound)
		w.AddHook(Inbound, 0, "filter", fuzzInbound)

		// What must happen.
		var wantRead, wantWrite, queries [][]byte
		var out, in Counters
		for _, b := range pkts {
			var p Packet
			p.Decode(b)
			out.Seen++
			switch fuzzOutbound(&p) {
			case Accept:
				wantRead = append(wantRead, b)
			case Drop:
				out.Dropped++
			case Consumed:
				out.Consumed++
			}
			if fuzzAnswers(&p) {
				queries = append(queries, b)
				in.Injected++
			}
			in.Seen++
			switch fuzzInbound(&p) {
			case Accept:
				wantWrite = append(wantWrite, b)
			case Drop:
				in.Dropped++
			case Consumed:
				in.Consumed++
			}
		}

		bufs, sizes := makeBufs(4, 2048)
		var gotRead [][]byte
		for {
			n, err := w.Read(bufs, sizes, 16)
			for i := range n {
				gotRead = append(gotRead, bytes.Clone(bufs[i][16:16+sizes[i]]))
			}
			if err != nil {
				if !errors.Is(err, os.ErrClosed) {
					t.Fatalf("Read: %v", err)
				}
				break
			}
			if n == 0 {
				t.Fatalf("Read returned 0 packets without an error")
			}
		}
		if !slices.EqualFunc(gotRead, wantRead, bytes.Equal) {
			t.Fatalf("Read gave %d packets, want %d", len(gotRead), len(wantRead))
		}
		if len(dev.writes) != len(queries) {
			t.Fatalf("%d injections, want %d", len(dev.writes), len(queries))
		}
		for i, wr := range dev.writes {
			reply := wr.pkts[0]
			var q, r Packet
			q.Decode(queries[i])
			r.Decode(reply)
			if !tuntest.ValidChecksums(reply) || r.Src != q.Dst || r.Dst != q.Src ||
				r.SrcPort != q.DstPort || r.DstPort != q.SrcPort || !bytes.Equal(r.Payload, q.Payload) {
				t.Fatalf("answer %x to %x is wrong", reply, queries[i])
			}
		}

		var wbufs [][]byte
		for _, b := range pkts {
			wbufs = append(wbufs, append(make([]byte, 16), b...))
		}
		if n, err := w.Write(wbufs, 16); n != len(wbufs) || err != nil {
			t.Fatalf("Write = %d, %v", n, err)
		}
		var gotWrite [][]byte
		if extra := dev.writes[len(queries):]; len(extra) > 0 {
			gotWrite = extra[0].pkts
			if len(extra) > 1 {
				t.Fatalf("Write called the device %d times", len(extra))
			}
		}
		if !slices.EqualFunc(gotWrite, wantWrite, bytes.Equal) {
			t.Fatalf("Write passed %d packets, want %d", len(gotWrite), len(wantWrite))
		}
		if c := w.Counters(Outbound); c != out {
			t.Fatalf("outbound counters %+v, want %+v", c, out)
		}
		if c := w.Counters(Inbound); c != in {
			t.Fatalf("inbound counters %+v, want %+v", c, in)
		}
	}
}
