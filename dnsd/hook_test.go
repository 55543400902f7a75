package dnsd

import (
	"context"
	"encoding/binary"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/zlmesh/zlmesh/tun"
	"github.com/zlmesh/zlmesh/tun/tuntest"
	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/link/channel"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv6"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/udp"
)

// fakePath stands in for tun.Wrapper: it keeps the one hook and hands
// injected packets to inject.
type fakePath struct {
	mu     sync.Mutex
	hook   tun.HookFunc
	order  int
	inject func([]byte)
}

func (f *fakePath) AddHook(dir tun.Direction, order int, name string, fn tun.HookFunc) func() {
	if dir != tun.Outbound || name == "" {
		panic("hook must be outbound and named")
	}
	f.mu.Lock()
	f.hook, f.order = fn, order
	f.mu.Unlock()
	return func() {
		f.mu.Lock()
		f.hook = nil
		f.mu.Unlock()
	}
}

func (f *fakePath) InjectInbound(pkt []byte) error {
	f.inject(append([]byte(nil), pkt...))
	return nil
}

func (f *fakePath) run(p *tun.Packet) (tun.Verdict, bool) {
	f.mu.Lock()
	h := f.hook
	f.mu.Unlock()
	if h == nil {
		return tun.Accept, false
	}
	return h(p), true
}

// decodePacket parses b the way the packet path does.
func decodePacket(b []byte) tun.Packet {
	var p tun.Packet
	p.Decode(b)
	return p
}

// osSide is an in-process TCP/IP stack standing in for the OS: its
// outbound packets go through the hook; what the hook does not take is
// counted as "sent to WireGuard"; injected packets come back into it.
type osSide struct {
	st        *stack.Stack
	ep        *channel.Endpoint
	path      *fakePath
	proto     tcpip.NetworkProtocolNumber
	passed    atomic.Int64 // accepted by the hook: would reach WireGuard
	dropped   atomic.Int64
	consumed  atomic.Int64
	lastAllow atomic.Value // netip.Addr of the last accepted packet
}

func newOSSide(t *testing.T, local netip.Addr) *osSide {
	t.Helper()
	o := &osSide{path: &fakePath{}}
	opts := stack.Options{
		NetworkProtocols:   []stack.NetworkProtocolFactory{ipv4.NewProtocol, ipv6.NewProtocol},
		TransportProtocols: []stack.TransportProtocolFactory{tcp.NewProtocol, udp.NewProtocol},
	}
	o.st = stack.New(opts)
	o.ep = channel.New(256, 1420, "")
	if err := o.st.CreateNIC(1, o.ep); err != nil {
		t.Fatal(err)
	}
	o.proto = ipv4.ProtocolNumber
	if local.Is6() {
		o.proto = ipv6.ProtocolNumber
	}
	pa := tcpip.ProtocolAddress{Protocol: o.proto, AddressWithPrefix: tcpip.AddrFromSlice(local.AsSlice()).WithPrefix()}
	if err := o.st.AddProtocolAddress(1, pa, stack.AddressProperties{}); err != nil {
		t.Fatal(err)
	}
	o.st.SetRouteTable([]tcpip.Route{{Destination: header.IPv4EmptySubnet, NIC: 1}, {Destination: header.IPv6EmptySubnet, NIC: 1}})
	o.path.inject = func(pkt []byte) {
		pb := stack.NewPacketBuffer(stack.PacketBufferOptions{Payload: buffer.MakeWithData(pkt)})
		proto := tcpip.NetworkProtocolNumber(ipv4.ProtocolNumber)
		if pkt[0]>>4 == 6 {
			proto = ipv6.ProtocolNumber
		}
		o.ep.InjectInbound(proto, pb)
		pb.DecRef()
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			pb := o.ep.ReadContext(ctx)
			if pb == nil {
				return
			}
			var b []byte
			for _, s := range pb.AsSlices() {
				b = append(b, s...)
			}
			pb.DecRef()
			p := decodePacket(b)
			v, _ := o.path.run(&p)
			switch v {
			case tun.Accept:
				o.passed.Add(1)
				o.lastAllow.Store(p.Dst)
			case tun.Drop:
				o.dropped.Add(1)
			case tun.Consumed:
				o.consumed.Add(1)
			}
		}
	}()
	t.Cleanup(func() {
		cancel()
		<-done
		o.st.Close()
		o.ep.Close()
		o.st.Wait()
	})
	return o
}

func fullAddr(ap netip.AddrPort) tcpip.FullAddress {
	return tcpip.FullAddress{NIC: 1, Addr: tcpip.AddrFromSlice(ap.Addr().AsSlice()), Port: ap.Port()}
}

// udpExchange sends q from the OS side over UDP to to and returns the
// answer, or nil after a while (3s).
func (o *osSide) udpExchange(t *testing.T, to netip.AddrPort, q *dns.Msg) *dns.Msg {
	return o.udpExchangeWait(t, to, q, 3*time.Second)
}

// udpNoAnswer is udpExchange for a query that should get no answer: it
// waits only 300ms.
func (o *osSide) udpNoAnswer(t *testing.T, to netip.AddrPort, q *dns.Msg) *dns.Msg {
	return o.udpExchangeWait(t, to, q, 300*time.Millisecond)
}

func (o *osSide) udpExchangeWait(t *testing.T, to netip.AddrPort, q *dns.Msg, wait time.Duration) *dns.Msg {
	t.Helper()
	raddr := fullAddr(to)
	c, err := gonet.DialUDP(o.st, nil, &raddr, o.proto)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	wire, _ := q.Pack()
	if _, err := c.Write(wire); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(wait))
	buf := make([]byte, 4096)
	n, err := c.Read(buf)
	if err != nil {
		return nil
	}
	m := new(dns.Msg)
	if err := m.Unpack(buf[:n]); err != nil {
		t.Fatalf("unpack udp answer: %v", err)
	}
	return m
}

// tcpExchange sends q over a new TCP connection and returns the answer.
func (o *osSide) tcpExchange(t *testing.T, to netip.AddrPort, qs ...*dns.Msg) ([]*dns.Msg, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	c, err := gonet.DialContextTCP(ctx, o.st, fullAddr(to), o.proto)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(3 * time.Second))
	dc := &dns.Conn{Conn: c}
	var out []*dns.Msg
	for _, q := range qs {
		if err := dc.WriteMsg(q); err != nil {
			return nil, err
		}
		m, err := dc.ReadMsg()
		if err != nil {
			return nil, err
		}
		out = append(out, m)
	}
	return out, nil
}

func TestHook(t *testing.T) {
	for _, tc := range []struct {
		name     string
		local    netip.Addr
		dnsAddr  netip.Addr
		other    netip.Addr
		fragment []byte
	}{
		{"ipv4", netip.MustParseAddr("10.200.1.1"), DefaultAddr, netip.MustParseAddr("10.200.9.9"), nil},
		{"ipv6", netip.MustParseAddr("fd5a:1::1"), netip.MustParseAddr("fd5a:1:ffff::53"), netip.MustParseAddr("fd5a:1::9:9"), nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			up := startUpstream(t)
			s := newTestServer(t, Config{Upstreams: []string{up.addr}})
			if err := s.SetSnapshot(bigSnapshot(40)); err != nil {
				t.Fatal(err)
			}
			o := newOSSide(t, tc.local)
			remove, err := s.hook(o.path, tc.dnsAddr)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(remove)
			if o.path.order != HookOrder {
				t.Errorf("hook order %d, want %d", o.path.order, HookOrder)
			}
			dns53 := netip.AddrPortFrom(tc.dnsAddr, 53)

			t.Run("udp zone", func(t *testing.T) {
				m := o.udpExchange(t, dns53, query("big-7.big.zl.", dns.TypeA, 0, false))
				if m == nil || len(m.Answer) != 1 || m.Answer[0].(*dns.A).A.String() != "10.200.0.8" {
					t.Fatalf("answer %v", m)
				}
			})
			t.Run("udp truncated", func(t *testing.T) {
				m := o.udpExchange(t, dns53, query("big.zl.", dns.TypeA, 0, false))
				if m == nil || !m.Truncated {
					t.Fatalf("answer %v, want TC", m)
				}
			})
			t.Run("udp forwarded", func(t *testing.T) {
				m := o.udpExchange(t, dns53, query("ext.example.", dns.TypeA, 0, false))
				if m == nil || len(m.Answer) != 1 {
					t.Fatalf("answer %v", m)
				}
			})
			t.Run("tcp whole and pipelined", func(t *testing.T) {
				ms, err := o.tcpExchange(t, dns53, query("big.zl.", dns.TypeA, 0, false), query("ext.example.", dns.TypeA, 0, false))
				if err != nil {
					t.Fatal(err)
				}
				if ms[0].Truncated || len(ms[0].Answer) != 40 || len(ms[1].Answer) != 1 {
					t.Errorf("answers %d (TC %v) and %d, want 40 and 1", len(ms[0].Answer), ms[0].Truncated, len(ms[1].Answer))
				}
			})
			t.Run("tcp other port reset", func(t *testing.T) {
				if _, err := o.tcpExchange(t, netip.AddrPortFrom(tc.dnsAddr, 80), query("big.zl.", dns.TypeA, 0, false)); err == nil {
					t.Fatal("connected to port 80")
				}
			})
			t.Run("udp other port dropped", func(t *testing.T) {
				before := o.dropped.Load()
				if m := o.udpNoAnswer(t, netip.AddrPortFrom(tc.dnsAddr, 54), query("big.zl.", dns.TypeA, 0, false)); m != nil {
					t.Fatalf("answer on port 54: %v", m)
				}
				if o.dropped.Load() == before {
					t.Errorf("packet to port 54 not dropped")
				}
			})
			t.Run("other destinations pass", func(t *testing.T) {
				before := o.passed.Load()
				if m := o.udpNoAnswer(t, netip.AddrPortFrom(tc.other, 53), query("big.zl.", dns.TypeA, 0, false)); m != nil {
					t.Fatalf("answer from %s: %v", tc.other, m)
				}
				if o.passed.Load() != before+1 || o.lastAllow.Load().(netip.Addr) != tc.other {
					t.Errorf("query to %s not passed on", tc.other)
				}
			})
			t.Run("remove", func(t *testing.T) {
				remove()
				remove()
				if m := o.udpNoAnswer(t, dns53, query("big-7.big.zl.", dns.TypeA, 0, false)); m != nil {
					t.Fatalf("answer after remove: %v", m)
				}
			})
		})
	}
}

func TestHookRejects(t *testing.T) {
	s := newTestServer(t, Config{})
	for _, a := range []netip.Addr{{}, netip.IPv4Unspecified(), netip.MustParseAddr("224.0.0.1")} {
		if _, err := s.hook(&fakePath{}, a); err == nil {
			t.Errorf("hook(%v) = nil error", a)
		}
	}
	if _, err := s.Hook(nil, DefaultAddr); err == nil {
		t.Error("Hook(nil wrapper) = nil error")
	}
	for _, addrs := range [][]netip.Addr{nil, {DefaultAddr, DefaultAddr}, {DefaultAddr, {}}} {
		path := &fakePath{}
		if _, err := s.hook(path, addrs...); err == nil || path.hook != nil {
			t.Errorf("hook(%v) = %v, hook installed %v; want an error and nothing installed", addrs, err, path.hook != nil)
		}
	}
}

// One hook serves both families: queries to either address are answered,
// from that address; packets to others pass; remove stops both.
func TestHookTwoAddresses(t *testing.T) {
	s := newTestServer(t, Config{Cluster6: testCluster6, Addr: DefaultAddr, Addr6: testDNS6})
	if err := s.SetSnapshot(dualSnapshot()); err != nil {
		t.Fatal(err)
	}
	var injected [][]byte
	var mu sync.Mutex
	path := &fakePath{inject: func(b []byte) { mu.Lock(); injected = append(injected, b); mu.Unlock() }}
	remove, err := s.hook(path, DefaultAddr, testDNS6)
	if err != nil {
		t.Fatal(err)
	}
	q, _ := query("web-1.web.zl.", dns.TypeA, 0, false).Pack()
	for _, tc := range []struct {
		pkt  []byte
		want tun.Verdict
		from netip.Addr // the injected answer's source; zero: none
	}{
		{tuntest.UDP(netip.MustParseAddrPort("10.200.1.10:33000"), netip.AddrPortFrom(DefaultAddr, 53), q), tun.Consumed, DefaultAddr},
		{tuntest.UDP(netip.AddrPortFrom(twin6("10.200.1.10"), 33000), netip.AddrPortFrom(testDNS6, 53), q), tun.Consumed, testDNS6},
		{tuntest.UDP(netip.MustParseAddrPort("10.200.1.10:33000"), netip.MustParseAddrPort("10.200.2.10:53"), q), tun.Accept, netip.Addr{}},
	} {
		mu.Lock()
		injected = nil
		mu.Unlock()
		p := decodePacket(tc.pkt)
		if v, _ := path.run(&p); v != tc.want {
			t.Errorf("to %v: verdict %v, want %v", p.Dst, v, tc.want)
		}
		mu.Lock()
		switch {
		case !tc.from.IsValid() && len(injected) != 0:
			t.Errorf("to %v: %d packets injected, want none", p.Dst, len(injected))
		case tc.from.IsValid() && (len(injected) != 1 || decodePacket(injected[0]).Src != tc.from):
			t.Errorf("to %v: injected %d packets, want one answer from %v", p.Dst, len(injected), tc.from)
		}
		mu.Unlock()
	}
	remove()
	if path.hook != nil {
		t.Error("the hook stays installed after remove")
	}
}

// FuzzHook feeds arbitrary packets to one hook at the IPv4 and the IPv6 DNS
// address (as the node installs it): no panic, packets to other
// destinations always pass, and anything injected is a well-formed
// answer from the hook's address.
func FuzzHook(f *testing.F) {
	s := newTestServer(f, Config{Cluster6: testCluster6, Addr: DefaultAddr, Addr6: testDNS6})
	if err := s.SetSnapshot(dualSnapshot()); err != nil {
		f.Fatal(err)
	}
	var injected [][]byte
	var mu sync.Mutex
	path := &fakePath{inject: func(b []byte) { mu.Lock(); injected = append(injected, b); mu.Unlock() }}
	remove, err := s.hook(path, DefaultAddr, testDNS6)
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(remove)
	q, _ := query("web.zl.", dns.TypeA, 0, false).Pack()
	q6, _ := query("web-1.web.zl.", dns.TypeAAAA, 1232, false).Pack()
	// A query from 10.200.1.1:4000 to the DNS address: the "reply" to a
	// packet going the other way.
	udpPkt := func(dport uint16, payload []byte) []byte {
		p := tun.Packet{Version: 4, Proto: tun.ProtoUDP, Src: DefaultAddr, Dst: netip.MustParseAddr("10.200.1.1"), SrcPort: dport, DstPort: 4000}
		return tun.UDPReply(&p, payload)
	}
	client6 := netip.AddrPortFrom(twin6("10.200.1.1"), 4000)
	dns6 := netip.AddrPortFrom(testDNS6, 53)
	f.Add(udpPkt(53, q))
	f.Add(udpPkt(53, []byte{1, 2, 3}))
	f.Add(udpPkt(54, q))
	f.Add([]byte{0x45, 0, 0, 40, 0, 0, 0x40, 0, 64, 6, 0, 0, 10, 200, 1, 1, 10, 200, 255, 53, 0x9c, 0x40, 0, 53, 0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x02, 0xff, 0xff, 0, 0, 0, 0})
	f.Add([]byte{0x60})
	f.Add(tuntest.UDP(client6, dns6, q6))
	f.Add(hopByHop(tuntest.UDP(client6, dns6, q)))
	f.Add(tuntest.UDP(client6, netip.AddrPortFrom(testDNS6, 54), q6))
	f.Add(tuntest.TCPSYN(client6, dns6))
	f.Add(tuntest.ICMPEcho(client6.Addr(), testDNS6, 1, 1, nil))
	f.Fuzz(func(t *testing.T, b []byte) {
		mu.Lock()
		injected = injected[:0]
		mu.Unlock()
		p := decodePacket(b)
		v, _ := path.run(&p)
		if p.Dst != DefaultAddr && p.Dst != testDNS6 && v != tun.Accept {
			t.Fatalf("packet to %v: verdict %v, want accept", p.Dst, v)
		}
		mu.Lock()
		defer mu.Unlock()
		for _, pkt := range injected {
			r := decodePacket(pkt)
			if r.Src != DefaultAddr && r.Src != testDNS6 || r.Proto != tun.ProtoUDP && r.Proto != tun.ProtoTCP {
				continue // the TCP stack's answers come asynchronously
			}
			if r.Proto == tun.ProtoUDP {
				m := new(dns.Msg)
				if err := m.Unpack(r.Payload); err != nil || len(r.Payload) > 512 {
					t.Fatalf("injected answer of %d bytes does not parse: %v", len(r.Payload), err)
				}
				if !tuntest.ValidChecksums(pkt) {
					t.Fatalf("injected answer %x: checksums wrong", pkt)
				}
			}
		}
	})
}

// hopByHop inserts an IPv6 hop-by-hop options header (8 bytes of padding)
// in front of the transport header of pkt.
func hopByHop(pkt []byte) []byte {
	out := append([]byte(nil), pkt[:40]...)
	out = append(out, pkt[6], 0, 1, 4, 0, 0, 0, 0)
	out = append(out, pkt[40:]...)
	out[6] = 0
	binary.BigEndian.PutUint16(out[4:], uint16(len(out)-40))
	return out
}

// TestHookCalledAfterRemove: the Wrapper may run a hook briefly after its
// remove returned; that must neither panic nor start anything.
func TestHookCalledAfterRemove(t *testing.T) {
	up := startUpstream(t)
	s := newTestServer(t, Config{Upstreams: []string{up.addr}})
	path := &fakePath{inject: func([]byte) { t.Error("injected after remove") }}
	remove, err := s.hook(path, DefaultAddr)
	if err != nil {
		t.Fatal(err)
	}
	fn := path.hook
	remove()
	q, _ := query("ext.example.", dns.TypeA, 0, false).Pack()
	from := tun.Packet{Version: 4, Proto: tun.ProtoUDP, Src: DefaultAddr, Dst: netip.MustParseAddr("10.200.1.1"), SrcPort: 53, DstPort: 4000}
	udp := decodePacket(tun.UDPReply(&from, q))
	if v := fn(&udp); v != tun.Drop {
		t.Errorf("forwarded query after remove: verdict %v, want drop", v)
	}
	syn := decodePacket([]byte{0x45, 0, 0, 40, 0, 0, 0x40, 0, 64, 6, 0, 0, 10, 200, 1, 1, 10, 200, 255, 53,
		0x9c, 0x40, 0, 53, 0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x02, 0xff, 0xff, 0, 0, 0, 0})
	fn(&syn)
	time.Sleep(50 * time.Millisecond) // anything injected late fails the test
}

// TestHookIPv6Packets hands the hook at the IPv6 DNS address hand-made
// IPv6 packets, as the OS writes them to the TUN: queries over UDP (also
// behind a hop-by-hop header) are answered inline with a plain IPv6 UDP
// packet with a valid checksum; the rest gets the verdicts Hook documents.
func TestHookIPv6Packets(t *testing.T) {
	s := newTestServer(t, Config{Cluster6: testCluster6, Addr: DefaultAddr, Addr6: testDNS6})
	if err := s.SetSnapshot(dualSnapshot()); err != nil {
		t.Fatal(err)
	}
	var injected [][]byte
	var mu sync.Mutex
	path := &fakePath{inject: func(b []byte) { mu.Lock(); injected = append(injected, b); mu.Unlock() }}
	remove, err := s.hook(path, testDNS6)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(remove)
	client := netip.AddrPortFrom(twin6("10.200.1.10"), 33000)
	dns53 := netip.AddrPortFrom(testDNS6, 53)
	q, _ := query("web-1.web.zl.", dns.TypeAAAA, 0, false).Pack()
	qptr, _ := query(mustReverse("fd5a:1:0:8::1"), dns.TypePTR, 1232, false).Pack()
	frag := hopByHop(tuntest.UDP(client, dns53, q))
	frag[40] = 44 // the hop-by-hop header now says a fragment header follows
	frag = append(frag[:48], append([]byte{tun.ProtoUDP, 0, 0, 1, 0, 0, 0, 7}, frag[48:]...)...)
	binary.BigEndian.PutUint16(frag[4:], uint16(len(frag)-40))

	for _, tc := range []struct {
		name   string
		pkt    []byte
		want   tun.Verdict
		answer string // rdata of the one answer record; "" when none is injected
	}{
		{"udp AAAA", tuntest.UDP(client, dns53, q), tun.Consumed, "fd5a:1:0:4::a"},
		{"udp behind hop-by-hop", hopByHop(tuntest.UDP(client, dns53, qptr)), tun.Consumed, "b.node.zl."},
		{"udp fragment", frag, tun.Drop, ""},
		{"udp other port", tuntest.UDP(client, netip.AddrPortFrom(testDNS6, 5353), q), tun.Drop, ""},
		{"icmpv6 echo", tuntest.ICMPEcho(client.Addr(), testDNS6, 1, 1, nil), tun.Drop, ""},
		{"not a DNS message", tuntest.UDP(client, dns53, []byte{1, 2}), tun.Drop, ""},
		{"other IPv6 destination", tuntest.UDP(client, netip.AddrPortFrom(twin6("10.200.2.10"), 53), q), tun.Accept, ""},
		{"the IPv4 DNS address", tuntest.UDP(netip.MustParseAddrPort("10.200.1.10:33000"), netip.AddrPortFrom(DefaultAddr, 53), q), tun.Accept, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mu.Lock()
			injected = nil
			mu.Unlock()
			p := decodePacket(tc.pkt)
			if v, _ := path.run(&p); v != tc.want {
				t.Fatalf("verdict %v, want %v", v, tc.want)
			}
			mu.Lock()
			defer mu.Unlock()
			if tc.answer == "" {
				if len(injected) != 0 {
					t.Fatalf("%d packets injected, want none", len(injected))
				}
				return
			}
			if len(injected) != 1 {
				t.Fatalf("%d packets injected, want 1", len(injected))
			}
			pkt := injected[0]
			r := decodePacket(pkt)
			if r.Version != 6 || pkt[6] != tun.ProtoUDP || r.Src != testDNS6 || r.Dst != client.Addr() || r.SrcPort != 53 || r.DstPort != client.Port() {
				t.Fatalf("answer %v:%d -> %v:%d (next header %d), want a plain UDP packet from %v to %v",
					r.Src, r.SrcPort, r.Dst, r.DstPort, pkt[6], dns53, client)
			}
			if !tuntest.ValidChecksums(pkt) {
				t.Fatalf("answer checksum wrong")
			}
			m := new(dns.Msg)
			if err := m.Unpack(r.Payload); err != nil {
				t.Fatal(err)
			}
			if got := rdata(m.Answer); len(got) != 1 || got[0] != tc.answer {
				t.Fatalf("answer %q, want %q", got, tc.answer)
			}
		})
	}
}
