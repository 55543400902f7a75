package tun

import (
	"bytes"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/zlmesh/zlmesh/tun/tuntest"
	wgtun "golang.zx2c4.com/wireguard/tun"
	"gvisor.dev/gvisor/pkg/tcpip/header"
)

var _ Device = (*Wrapper)(nil)

// udpTo builds a UDP packet from a4 to b4's address on port with payload.
func udpTo(port uint16, payload string) []byte {
	return tuntest.UDP(a4, netip.AddrPortFrom(b4.Addr(), port), []byte(payload))
}

func readOne(t *testing.T, w *Wrapper) [][]byte {
	t.Helper()
	bufs, sizes := makeBufs(8, 2048)
	n, err := w.Read(bufs, sizes, 16)
	if err != nil {
		t.Fatalf("Read: %v", err)
	}
	var out [][]byte
	for i := range n {
		out = append(out, bytes.Clone(bufs[i][16:16+sizes[i]]))
	}
	return out
}

func TestHookOrder(t *testing.T) {
	dev := tuntest.New(0)
	w := NewWrapper(dev)
	var got []string
	for _, h := range []struct {
		order int
		name  string
	}{{10, "c"}, {5, "b"}, {10, "d"}, {1, "a"}, {5, "b2"}, {-3, "first"}} {
		w.AddHook(Outbound, h.order, h.name, func(p *Packet) Verdict {
			got = append(got, h.name)
			return Accept
		})
	}
	want := []string{"first", "a", "b", "b2", "c", "d"}
	if names := w.HookNames(Outbound); !slices.Equal(names, want) {
		t.Errorf("HookNames = %v, want %v", names, want)
	}
	if names := w.HookNames(Inbound); names != nil {
		t.Errorf("inbound hooks %v, want none", names)
	}
	dev.FromOS <- udpTo(80, "x")
	if pkts := readOne(t, w); len(pkts) != 1 {
		t.Fatalf("read %d packets, want 1", len(pkts))
	}
	if !slices.Equal(got, want) {
		t.Errorf("hooks ran as %v, want %v", got, want)
	}
}

// TestVerdicts runs a chain of hooks in both directions: the test packet
// goes to port 53 and gets the scripted verdicts; a marker packet to port
// 54 is accepted by every hook.
func TestVerdicts(t *testing.T) {
	tests := []struct {
		name      string
		verdicts  []Verdict
		delivered bool
		calls     int // hooks called for the test packet
		c         Counters
	}{
		{"accept all", []Verdict{Accept, Accept, Accept}, true, 3, Counters{Seen: 2}},
		{"first drops", []Verdict{Drop, Accept, Accept}, false, 1, Counters{Seen: 2, Dropped: 1}},
		{"middle consumes", []Verdict{Accept, Consumed, Accept}, false, 2, Counters{Seen: 2, Consumed: 1}},
		{"last drops", []Verdict{Accept, Accept, Drop}, false, 3, Counters{Seen: 2, Dropped: 1}},
		{"unknown verdict drops", []Verdict{Verdict(42), Accept}, false, 1, Counters{Seen: 2, Dropped: 1}},
	}
	for _, dir := range []Direction{Outbound, Inbound} {
		for _, tt := range tests {
			t.Run(dir.String()+"/"+tt.name, func(t *testing.T) {
				test, marker := udpTo(53, "test"), udpTo(54, "marker")
				dev := &scriptDevice{reads: []scriptRead{{pkts: [][]byte{test, marker}}}}
				w := NewWrapper(dev)
				calls := 0
				for i, v := range tt.verdicts {
					w.AddHook(dir, i, fmt.Sprint(i), func(p *Packet) Verdict {
						if p.DstPort == 54 {
							return Accept
						}
						calls++
						return v
					})
				}
				var got [][]byte
				if dir == Outbound {
					got = readOne(t, w)
				} else {
					bufs := [][]byte{append(make([]byte, 16), test...), append(make([]byte, 16), marker...)}
					if n, err := w.Write(bufs, 16); n != 2 || err != nil {
						t.Fatalf("Write = %d, %v; want 2, nil", n, err)
					}
					if len(dev.writes) != 1 {
						t.Fatalf("%d device writes, want 1", len(dev.writes))
					}
					got = dev.writes[0].pkts
				}
				want := [][]byte{marker}
				if tt.delivered {
					want = [][]byte{test, marker}
				}
				if !slices.EqualFunc(got, want, bytes.Equal) {
					t.Errorf("delivered %d packets, want %d", len(got), len(want))
				}
				if calls != tt.calls {
					t.Errorf("hooks called %d times for the packet, want %d", calls, tt.calls)
				}
				if c := w.Counters(dir); c != tt.c {
					t.Errorf("counters %+v, want %+v", c, tt.c)
				}
			})
		}
	}
}

func TestReadCompactsByCopy(t *testing.T) {
	var pkts [][]byte
	for i := range 5 {
		pkts = append(pkts, udpTo(uint16(100+i), fmt.Sprintf("packet %d with some bytes %s", i, bytes.Repeat([]byte{'x'}, i*7))))
	}
	dev := &scriptDevice{reads: []scriptRead{{pkts: pkts}}}
	w := NewWrapper(dev)
	w.AddHook(Outbound, 0, "drop 100, consume 102", func(p *Packet) Verdict {
		switch p.DstPort {
		case 100:
			return Drop
		case 102:
			return Consumed
		}
		return Accept
	})
	bufs, sizes := makeBufs(8, 2048)
	before := make([]*byte, len(bufs))
	for i := range bufs {
		before[i] = &bufs[i][0]
	}
	n, err := w.Read(bufs, sizes, 16)
	if n != 3 || err != nil {
		t.Fatalf("Read = %d, %v; want 3, nil", n, err)
	}
	for i, want := range [][]byte{pkts[1], pkts[3], pkts[4]} {
		if got := bufs[i][16 : 16+sizes[i]]; !bytes.Equal(got, want) {
			t.Errorf("packet %d is %x, want %x", i, got, want)
		}
	}
	for i := range bufs {
		if &bufs[i][0] != before[i] {
			t.Errorf("bufs[%d] was swapped; wireguard-go pairs each buffer with its element", i)
		}
	}
	if c := w.Counters(Outbound); c != (Counters{Seen: 5, Dropped: 1, Consumed: 1}) {
		t.Errorf("counters %+v", c)
	}
}

func TestReadAgainWhenAllRemoved(t *testing.T) {
	keep := udpTo(80, "keep")
	dev := &scriptDevice{reads: []scriptRead{
		{pkts: [][]byte{udpTo(9, "a"), udpTo(9, "b")}},
		{pkts: [][]byte{udpTo(9, "c")}},
		{pkts: [][]byte{keep}},
	}}
	w := NewWrapper(dev)
	w.AddHook(Outbound, 0, "discard", func(p *Packet) Verdict {
		if p.DstPort == 9 {
			return Drop
		}
		return Accept
	})
	got := readOne(t, w)
	if len(got) != 1 || !bytes.Equal(got[0], keep) {
		t.Fatalf("Read returned %d packets, want the one kept", len(got))
	}
	if c := w.Counters(Outbound); c != (Counters{Seen: 4, Dropped: 3}) {
		t.Errorf("counters %+v", c)
	}
}

func TestReadAllRemovedWithError(t *testing.T) {
	boom := errors.New("boom")
	dev := &scriptDevice{reads: []scriptRead{{pkts: [][]byte{udpTo(9, "a")}, err: boom}}}
	w := NewWrapper(dev)
	w.AddHook(Outbound, 0, "drop", func(*Packet) Verdict { return Drop })
	bufs, sizes := makeBufs(8, 2048)
	if n, err := w.Read(bufs, sizes, 0); n != 0 || !errors.Is(err, boom) {
		t.Fatalf("Read = %d, %v; want 0, boom", n, err)
	}
}

func TestWrite(t *testing.T) {
	pkts := [][]byte{udpTo(80, "a"), udpTo(9, "b"), udpTo(81, "c"), udpTo(9, "d")}
	withHeadroom := func() [][]byte {
		var bufs [][]byte
		for _, p := range pkts {
			bufs = append(bufs, append(make([]byte, 16), p...))
		}
		return bufs
	}
	tests := []struct {
		name   string
		hook   HookFunc // nil: no hook
		writes [][][]byte
	}{
		{"no hooks", nil, [][][]byte{pkts}},
		{"accept all", func(*Packet) Verdict { return Accept }, [][][]byte{pkts}},
		{"drop some", func(p *Packet) Verdict {
			if p.DstPort == 9 {
				return Drop
			}
			return Accept
		}, [][][]byte{{pkts[0], pkts[2]}}},
		{"consume all", func(*Packet) Verdict { return Consumed }, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dev := &scriptDevice{}
			w := NewWrapper(dev)
			if tt.hook != nil {
				w.AddHook(Inbound, 0, "hook", tt.hook)
			}
			bufs := withHeadroom()
			if n, err := w.Write(bufs, 16); n != len(pkts) || err != nil {
				t.Fatalf("Write = %d, %v; want %d, nil", n, err, len(pkts))
			}
			if len(dev.writes) != len(tt.writes) {
				t.Fatalf("%d device writes, want %d", len(dev.writes), len(tt.writes))
			}
			for i, wr := range dev.writes {
				if wr.offset != 16 || !slices.EqualFunc(wr.pkts, tt.writes[i], bytes.Equal) {
					t.Errorf("write %d: offset %d, %d packets; want 16, %d", i, wr.offset, len(wr.pkts), len(tt.writes[i]))
				}
			}
			if !slices.EqualFunc(bufs, withHeadroom(), bytes.Equal) {
				t.Errorf("Write changed the caller's buffers")
			}
		})
	}
}

func TestRemoveHook(t *testing.T) {
	dev := tuntest.New(0)
	w := NewWrapper(dev)
	var calls [2]int
	removeA := w.AddHook(Outbound, 0, "a", func(*Packet) Verdict { calls[0]++; return Accept })
	removeB := w.AddHook(Outbound, 0, "b", func(*Packet) Verdict { calls[1]++; return Accept })
	removeA()
	removeA() // again: no effect
	if names := w.HookNames(Outbound); !slices.Equal(names, []string{"b"}) {
		t.Fatalf("hooks %v after removing a", names)
	}
	dev.FromOS <- udpTo(80, "x")
	readOne(t, w)
	if calls != [2]int{0, 1} {
		t.Fatalf("calls %v, want [0 1]", calls)
	}
	removeB()
	if w.hooks[Outbound].Load() != nil {
		t.Fatalf("no hook left but the hook list is not nil: packets would be parsed")
	}
	dev.FromOS <- udpTo(80, "x")
	readOne(t, w)
	if calls != [2]int{0, 1} {
		t.Fatalf("calls %v after removing all hooks", calls)
	}
}

func TestHookRemovesItselfAndAddsAnother(t *testing.T) {
	dev := tuntest.New(0)
	w := NewWrapper(dev)
	var remove func()
	added := false
	remove = w.AddHook(Outbound, 0, "once", func(*Packet) Verdict {
		remove()
		if !added {
			added = true
			w.AddHook(Inbound, 0, "late", func(*Packet) Verdict { return Accept })
		}
		return Accept
	})
	dev.FromOS <- udpTo(80, "x")
	readOne(t, w) // would deadlock if hooks ran under the hook lock
	if w.HookNames(Outbound) != nil || !slices.Equal(w.HookNames(Inbound), []string{"late"}) {
		t.Fatalf("hooks out %v in %v", w.HookNames(Outbound), w.HookNames(Inbound))
	}
}

func TestAddHookPanics(t *testing.T) {
	w := NewWrapper(tuntest.New(0))
	for _, tt := range []struct {
		name string
		dir  Direction
		fn   HookFunc
	}{
		{"bad direction", Direction(7), func(*Packet) Verdict { return Accept }},
		{"nil fn", Outbound, nil},
	} {
		t.Run(tt.name, func(t *testing.T) {
			defer func() {
				if recover() == nil {
					t.Fatalf("AddHook did not panic")
				}
			}()
			w.AddHook(tt.dir, 0, tt.name, tt.fn)
		})
	}
}

// answerUDP is a hook that answers UDP port 53 with "answer" and consumes
// the query.
func answerUDP(w *Wrapper, t testing.TB) HookFunc {
	return func(p *Packet) Verdict {
		if p.Proto != ProtoUDP || p.DstPort != 53 {
			return Accept
		}
		if err := w.InjectInbound(UDPReply(p, []byte("answer"))); err != nil {
			t.Errorf("InjectInbound: %v", err)
		}
		return Consumed
	}
}

func TestInjectInboundFromHook(t *testing.T) {
	for _, tc := range []struct {
		name     string
		from, to netip.AddrPort
	}{
		{"ipv4", a4, b4},
		{"ipv6", a6, b6},
	} {
		t.Run(tc.name, func(t *testing.T) {
			query := tuntest.UDP(tc.from, tc.to, []byte("query"))
			other := tuntest.UDP(tc.from, netip.AddrPortFrom(tc.to.Addr(), 80), []byte("other"))
			dev := &scriptDevice{reads: []scriptRead{{pkts: [][]byte{query, other}}}}
			w := NewWrapper(dev)
			w.AddHook(Outbound, 0, "dns", answerUDP(w, t))
			got := readOne(t, w)
			if len(got) != 1 || !bytes.Equal(got[0], other) {
				t.Fatalf("Read returned %d packets, want only the other one", len(got))
			}
			if len(dev.writes) != 1 || len(dev.writes[0].pkts) != 1 {
				t.Fatalf("device writes %d, want one write of one packet", len(dev.writes))
			}
			wr := dev.writes[0]
			if wr.offset < 10 || wr.head[0] != wr.offset {
				t.Errorf("injected with offset %d and %d bytes of headroom; Linux TUN needs >= 10", wr.offset, wr.head[0])
			}
			var r Packet
			r.Decode(wr.pkts[0])
			if r.Src != tc.to.Addr() || r.Dst != tc.from.Addr() || r.SrcPort != 53 || r.DstPort != tc.from.Port() ||
				string(r.Payload) != "answer" {
				t.Errorf("reply %v:%d -> %v:%d %q", r.Src, r.SrcPort, r.Dst, r.DstPort, r.Payload)
			}
			if !tuntest.ValidChecksums(wr.pkts[0]) {
				t.Errorf("reply checksums are wrong")
			}
			if c := w.Counters(Inbound); c != (Counters{Injected: 1}) {
				t.Errorf("inbound counters %+v", c)
			}
			if c := w.Counters(Outbound); c != (Counters{Seen: 2, Consumed: 1}) {
				t.Errorf("outbound counters %+v", c)
			}
		})
	}
}

func TestInjectInboundErrors(t *testing.T) {
	dev := tuntest.New(0)
	w := NewWrapper(dev)
	for _, tt := range []struct {
		name string
		pkt  []byte
	}{
		{"empty", nil},
		{"not ip", []byte{0x00, 1, 2, 3}},
		{"short ipv4", append([]byte{0x45}, make([]byte, 10)...)},
		{"short ipv6", append([]byte{0x60}, make([]byte, 30)...)},
		{"too long", append([]byte{0x45}, make([]byte, 70000)...)},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if err := w.InjectInbound(tt.pkt); err == nil {
				t.Fatalf("InjectInbound accepted %s", tt.name)
			}
		})
	}
	if len(dev.ToOS) != 0 {
		t.Fatalf("a bad packet reached the device")
	}
	dev.Close()
	if err := w.InjectInbound(udpTo(80, "x")); !errors.Is(err, os.ErrClosed) {
		t.Fatalf("InjectInbound after Close = %v, want os.ErrClosed", err)
	}
	if c := w.Counters(Inbound); c.Injected != 0 {
		t.Fatalf("failed injections counted: %+v", c)
	}
}

func TestUDPReply(t *testing.T) {
	for _, tc := range []struct {
		name     string
		from, to netip.AddrPort
	}{
		{"ipv4", a4, b4},
		{"ipv6", a6, b6},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var q Packet
			q.Decode(tuntest.UDP(tc.from, tc.to, []byte("q")))
			for _, payload := range [][]byte{nil, []byte("odd"), bytes.Repeat([]byte{0xa5}, 1400)} {
				reply := UDPReply(&q, payload)
				if !tuntest.ValidChecksums(reply) {
					t.Fatalf("checksums wrong for %d bytes of payload", len(payload))
				}
				// And by gVisor's parsers, independently.
				if tc.from.Addr().Is4() {
					h := header.IPv4(reply)
					if !h.IsValid(len(reply)) || !h.IsChecksumValid() {
						t.Fatalf("gVisor rejects the IPv4 header")
					}
				}
				var r Packet
				r.Decode(reply)
				if r.Src != tc.to.Addr() || r.Dst != tc.from.Addr() || r.SrcPort != tc.to.Port() ||
					r.DstPort != tc.from.Port() || !bytes.Equal(r.Payload, payload) || r.Truncated {
					t.Fatalf("reply %+v", r)
				}
			}
			// Appending keeps what was in the buffer.
			buf := AppendUDPReply([]byte("prefix"), &q, []byte("x"))
			if !bytes.HasPrefix(buf, []byte("prefix")) || !bytes.Equal(buf[6:], UDPReply(&q, []byte("x"))) {
				t.Fatalf("AppendUDPReply did not append the same packet")
			}
		})
	}
	t.Run("checksum 0 is sent as 0xffff", func(t *testing.T) {
		var q Packet
		q.Decode(tuntest.UDP(a4, b4, nil))
		for x := range 1 << 16 {
			reply := UDPReply(&q, []byte{byte(x >> 8), byte(x)})
			if reply[20+6] == 0xff && reply[20+7] == 0xff {
				if !tuntest.ValidChecksums(reply) {
					t.Fatalf("0xffff checksum not valid")
				}
				return
			}
		}
		t.Fatalf("no payload gave a computed checksum of 0")
	})
	t.Run("not udp", func(t *testing.T) {
		for _, pkt := range [][]byte{tuntest.TCPSYN(a4, b4), tuntest.ICMPEcho(a6.Addr(), b6.Addr(), 1, 1, nil), {0x00}} {
			var q Packet
			q.Decode(pkt)
			if r := UDPReply(&q, []byte("x")); r != nil {
				t.Fatalf("UDPReply answered proto %d", q.Proto)
			}
		}
	})
}

func TestChecksum(t *testing.T) {
	// RFC 1071 section 3 example: the sum is ddf2, the checksum its complement.
	b := []byte{0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7}
	if got := PartialSum(b, 0); got != 0xddf2 {
		t.Fatalf("PartialSum = %#x, want 0xddf2", got)
	}
	if got := Checksum(b, 0); got != ^uint16(0xddf2) {
		t.Fatalf("Checksum = %#x, want %#x", got, ^uint16(0xddf2))
	}
	// Sums of pieces add up, for every length of the second piece.
	data := make([]byte, 301)
	for i := range data {
		data[i] = byte(i*7 + 3)
	}
	for n := 0; n <= 100; n++ {
		whole := Checksum(data[:200+n], 0)
		pieces := Checksum(data[200:200+n], PartialSum(data[:200], 0))
		if whole != pieces {
			t.Fatalf("length %d: whole %#x, pieces %#x", n, whole, pieces)
		}
	}
	// A packet with the checksum in place sums to zero (0xffff folded).
	pkt := tuntest.UDP(a6, b6, data[:77])
	if got := Checksum(pkt[40:], PseudoHeaderSum(ProtoUDP, a6.Addr(), b6.Addr(), len(pkt)-40)); got != 0 {
		t.Fatalf("checksum over a valid UDP segment = %#x, want 0", got)
	}
}

// TestConcurrent runs everything at once under -race: a reader, writers,
// injections from hooks and from outside, and hooks added and removed all
// the time. Every packet must be accounted for.
func TestConcurrent(t *testing.T) {
	const (
		feed    = 3000 // packets from the OS: 1/3 port 53, 1/3 port 9, 1/3 port 80
		writers = 4
		batches = 200 // per writer, of 4 packets, one of them to port 9
		injects = 500
	)
	dev := tuntest.NewBatched(0, 8)
	w := NewWrapper(dev)
	w.AddHook(Outbound, 10, "dns", answerUDP(w, t))
	w.AddHook(Outbound, 20, "discard", dropPort9)
	w.AddHook(Inbound, 10, "discard", dropPort9)

	var wantToOS = writers*batches*3 + feed/3 + injects
	var gotToOS atomic.Int64
	drained := make(chan struct{})
	go func() {
		defer close(drained)
		for range wantToOS {
			<-dev.ToOS
			gotToOS.Add(1)
		}
	}()

	var read atomic.Int64
	readDone := make(chan error, 1)
	go func() {
		bufs, sizes := makeBufs(8, 2048)
		for {
			n, err := w.Read(bufs, sizes, 16)
			for i := range n {
				var p Packet
				p.Decode(bufs[i][16 : 16+sizes[i]])
				if p.DstPort != 80 {
					readDone <- fmt.Errorf("read a packet to port %d", p.DstPort)
					return
				}
			}
			read.Add(int64(n))
			if err != nil {
				readDone <- err
				return
			}
		}
	}()

	stop := make(chan struct{})
	var churn sync.WaitGroup
	churn.Go(func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			r1 := w.AddHook(Outbound, 15, "churn", func(*Packet) Verdict { return Accept })
			r2 := w.AddHook(Inbound, 5, "churn", func(*Packet) Verdict { return Accept })
			r1()
			r2()
		}
	})

	var work sync.WaitGroup
	work.Go(func() {
		for i := range feed {
			dev.FromOS <- udpTo([]uint16{53, 9, 80}[i%3], "feed")
		}
	})
	for range writers {
		work.Go(func() {
			for range batches {
				bufs := [][]byte{
					append(make([]byte, 16), udpTo(80, "in")...),
					append(make([]byte, 16), udpTo(9, "in")...),
					append(make([]byte, 16), udpTo(81, "in")...),
					append(make([]byte, 16), udpTo(82, "in")...),
				}
				if n, err := w.Write(bufs, 16); n != 4 || err != nil {
					t.Errorf("Write = %d, %v", n, err)
				}
			}
		})
	}
	work.Go(func() {
		pkt := udpTo(7, "injected")
		for range injects {
			if err := w.InjectInbound(pkt); err != nil {
				t.Errorf("InjectInbound: %v", err)
			}
		}
	})
	work.Wait()

	select {
	case <-drained:
	case <-time.After(20 * time.Second):
		t.Fatalf("only %d of %d packets reached the OS", gotToOS.Load(), wantToOS)
	}
	deadline := time.Now().Add(20 * time.Second)
	for read.Load() < feed/3 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	close(stop)
	churn.Wait()
	dev.Close()
	if err := <-readDone; !errors.Is(err, os.ErrClosed) {
		t.Fatalf("reader: %v", err)
	}
	if got := read.Load(); got != feed/3 {
		t.Errorf("read %d packets, want %d", got, feed/3)
	}
	if c := w.Counters(Outbound); c != (Counters{Seen: feed, Dropped: feed / 3, Consumed: feed / 3}) {
		t.Errorf("outbound counters %+v", c)
	}
	if c := w.Counters(Inbound); c != (Counters{Seen: writers * batches * 4, Dropped: writers * batches, Injected: injects + feed/3}) {
		t.Errorf("inbound counters %+v", c)
	}
}

func dropPort9(p *Packet) Verdict {
	if p.DstPort == 9 {
		return Drop
	}
	return Accept
}

func TestNoAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("sync.Pool drops items at random under the race detector")
	}
	dev := &templateDevice{pkt: udpTo(53, "query"), batch: 64}
	w := NewWrapper(dev)
	bufs, sizes := makeBufs(64, 2048)
	w.AddHook(Outbound, 0, "accept", func(*Packet) Verdict { return Accept })
	w.AddHook(Inbound, 0, "accept", func(*Packet) Verdict { return Accept })
	for _, tt := range []struct {
		name string
		fn   func()
	}{
		{"read", func() { w.Read(bufs, sizes, 16) }},
		{"write", func() { w.Write(bufs, 16) }},
		{"inject", func() { w.InjectInbound(dev.pkt) }},
	} {
		if allocs := testing.AllocsPerRun(200, tt.fn); allocs != 0 {
			t.Errorf("%s allocates %v times per call", tt.name, allocs)
		}
	}
}

func TestDelegation(t *testing.T) {
	dev := tuntest.NewBatched(1280, 4)
	w := NewWrapper(dev)
	if mtu, err := w.MTU(); mtu != 1280 || err != nil {
		t.Errorf("MTU = %d, %v", mtu, err)
	}
	if name, _ := w.Name(); name != "tuntest" {
		t.Errorf("Name = %q", name)
	}
	if w.BatchSize() != 4 || w.File() != nil || w.Unwrap() != dev {
		t.Errorf("BatchSize %d, File %v", w.BatchSize(), w.File())
	}
	if ev := <-w.Events(); ev != wgtun.EventUp {
		t.Errorf("first event %v, want EventUp", ev)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if _, ok := <-w.Events(); ok {
		t.Errorf("events still open after Close")
	}
	bufs, sizes := makeBufs(4, 2048)
	if _, err := w.Read(bufs, sizes, 0); !errors.Is(err, os.ErrClosed) {
		t.Errorf("Read after Close: %v", err)
	}
}
