package tun

import (
	"bytes"
	"net/netip"
	"testing"
	"time"

	"github.com/zlmesh/zlmesh/tun/tuntest"
)

// TestNetstackThroughWrapper runs a UDP server inside a gVisor netstack
// device and talks to it through a Wrapper: the query goes in with Write
// (past an inbound hook), the answer comes out of Read (past an outbound
// hook).
func TestNetstackThroughWrapper(t *testing.T) {
	local := netip.MustParseAddr("10.0.0.1")
	dev, tnet, err := CreateNetstack([]netip.Addr{local, netip.MustParseAddr("fd00::1")}, 0)
	if err != nil {
		t.Fatal(err)
	}
	w := NewWrapper(dev)
	defer w.Close()
	if mtu, _ := w.MTU(); mtu != DefaultMTU {
		t.Errorf("MTU %d, want %d", mtu, DefaultMTU)
	}

	conn, err := tnet.ListenUDPAddrPort(netip.AddrPortFrom(local, 53))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	go func() {
		buf := make([]byte, 1500)
		for {
			n, from, err := conn.ReadFrom(buf)
			if err != nil {
				return
			}
			conn.WriteTo(append([]byte("re:"), buf[:n]...), from)
		}
	}()

	inbound := make(chan uint16, 1)
	w.AddHook(Inbound, 0, "watch", func(p *Packet) Verdict {
		inbound <- p.DstPort
		return Accept
	})
	outbound := make(chan uint16, 1)
	w.AddHook(Outbound, 0, "watch", func(p *Packet) Verdict {
		if p.Proto == ProtoUDP {
			outbound <- p.SrcPort
		}
		return Accept
	})

	peer := netip.MustParseAddrPort("10.0.0.2:4000")
	q := tuntest.UDP(peer, netip.AddrPortFrom(local, 53), []byte("q"))
	if n, err := w.Write([][]byte{append(make([]byte, 16), q...)}, 16); n != 1 || err != nil {
		t.Fatalf("Write = %d, %v", n, err)
	}
	if port := <-inbound; port != 53 {
		t.Errorf("inbound hook saw port %d", port)
	}

	type result struct {
		pkt []byte
		err error
	}
	got := make(chan result, 1)
	go func() {
		bufs, sizes := makeBufs(w.BatchSize(), 16+DefaultMTU)
		for {
			n, err := w.Read(bufs, sizes, 16)
			for i := range n {
				// Skip what the stack sends on its own (IPv6 NDP, MLD).
				if pkt := bufs[i][16 : 16+sizes[i]]; pkt[0]>>4 == 4 {
					got <- result{bytes.Clone(pkt), nil}
					return
				}
			}
			if err != nil {
				got <- result{nil, err}
				return
			}
		}
	}()
	var r result
	select {
	case r = <-got:
	case <-time.After(5 * time.Second):
		t.Fatalf("no answer out of the netstack")
	}
	if r.err != nil {
		t.Fatal(r.err)
	}
	var p Packet
	p.Decode(r.pkt)
	if p.Src != local || p.SrcPort != 53 || netip.AddrPortFrom(p.Dst, p.DstPort) != peer || string(p.Payload) != "re:q" {
		t.Fatalf("answer %v:%d -> %v:%d %q", p.Src, p.SrcPort, p.Dst, p.DstPort, p.Payload)
	}
	if !tuntest.ValidChecksums(r.pkt) {
		t.Errorf("answer has bad checksums")
	}
	if port := <-outbound; port != 53 {
		t.Errorf("outbound hook saw port %d", port)
	}
}

func TestCreateNetstackErrors(t *testing.T) {
	for _, tt := range []struct {
		name  string
		addrs []netip.Addr
		mtu   int
	}{
		{"no address", nil, 0},
		{"invalid address", []netip.Addr{{}}, 0},
		{"multicast", []netip.Addr{netip.MustParseAddr("224.0.0.1")}, 0},
		{"mtu too big", []netip.Addr{netip.MustParseAddr("10.0.0.1")}, 70000},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if dev, _, err := CreateNetstack(tt.addrs, tt.mtu); err == nil {
				dev.Close()
				t.Fatalf("CreateNetstack(%v, %d) succeeded", tt.addrs, tt.mtu)
			}
		})
	}
}
