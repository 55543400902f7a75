//go:build linux

package tun

import (
	"bytes"
	"net"
	"net/netip"
	"os/exec"
	"testing"
	"time"

	"github.com/zlmesh/zlmesh/internal/nstest"
	"github.com/zlmesh/zlmesh/tun/tuntest"
)

// TestIPv6ThroughKernel gives a real TUN's kernel IPv6 packets the way
// WireGuard (Write, past an inbound hook) and an answering hook
// (InjectInbound) do, with and without extension headers, and reads the
// kernel's own IPv6 packets back through the Wrapper's outbound hooks: the
// kernel checks every checksum (it drops a UDP datagram with a bad one, which
// the test makes sure of), and the hooks decode what the kernel sends.
func TestIPv6ThroughKernel(t *testing.T) {
	ns := nstest.New(t, "zlt-tun6")
	name := linkName(t)
	dev := createIn(t, ns, name, 0)
	w := NewWrapper(dev)
	t.Cleanup(func() { w.Close() })
	if err := setAddressAt(ns.NL, name, netip.MustParsePrefix("fd00:99::1/64")); err != nil {
		t.Fatal(err)
	}
	if err := setRoutesAt(ns.NL, name, prefixes("fd00:98::/64")); err != nil {
		t.Fatal(err)
	}
	local := netip.MustParseAddr("fd00:99::1")
	peer := netip.MustParseAddrPort("[fd00:98::5]:9000")
	ns.WaitLocal(t, local)

	var conn *net.UDPConn
	var ln net.Listener
	if err := ns.Do(func() error {
		var err error
		if conn, err = net.ListenUDP("udp6", &net.UDPAddr{IP: local.AsSlice(), Port: 7000}); err != nil {
			return err
		}
		ln, err = net.Listen("tcp6", "[fd00:99::1]:7001")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(); ln.Close() })

	// The kernel's packets to the peer, as the outbound hook decodes them.
	fromKernel := make(chan Packet, 16)
	w.AddHook(Outbound, 0, "catch", func(p *Packet) Verdict {
		if p.Dst != peer.Addr() {
			return Accept // router solicitations, MLD and the like
		}
		var q Packet
		q.Decode(bytes.Clone(p.Buf))
		select {
		case fromKernel <- q:
		default: // the test no longer waits
		}
		return Consumed
	})
	go func() {
		bufs, sizes := makeBufs(w.BatchSize(), 16+65535)
		for {
			if _, err := w.Read(bufs, sizes, 16); err != nil {
				return
			}
		}
	}()

	udp := func(payload string) []byte {
		return tuntest.UDP(peer, netip.AddrPortFrom(local, 7000), []byte(payload))
	}
	badSum := udp("bad checksum")
	badSum[40+7] ^= 0xff
	var hookSaw []string
	remove := w.AddHook(Inbound, 0, "see", func(p *Packet) Verdict {
		hookSaw = append(hookSaw, string(p.Payload))
		return Accept
	})
	defer remove()
	var bufs [][]byte
	for _, pkt := range [][]byte{udp("write"), ipv6ExtHeaders(udp("write ext")), badSum} {
		bufs = append(bufs, append(make([]byte, 16), pkt...))
	}
	if n, err := w.Write(bufs, 16); n != 3 || err != nil {
		t.Fatalf("Write = %d, %v", n, err)
	}
	for _, pkt := range [][]byte{udp("inject"), ipv6ExtHeaders(udp("inject ext"))} {
		if err := w.InjectInbound(pkt); err != nil {
			t.Fatalf("InjectInbound: %v", err)
		}
	}
	got := map[string]bool{}
	buf := make([]byte, 1500)
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	for len(got) < 4 {
		n, from, err := conn.ReadFromUDP(buf)
		if err != nil {
			// The kernel's IPv6 counters say why (header errors,
			// checksum errors, no socket).
			out, _ := exec.Command("ip", "netns", "exec", ns.Name, "nstat", "-az", "Ip6*", "Udp6*").CombinedOutput()
			t.Logf("nstat in %s:\n%s", ns.Name, out)
			t.Fatalf("received %v, then: %v", got, err)
		}
		if from.AddrPort() != peer {
			t.Fatalf("datagram from %v, want %v", from, peer)
		}
		got[string(buf[:n])] = true
	}
	conn.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	if n, _, err := conn.ReadFromUDP(buf); err == nil {
		t.Errorf("the kernel delivered %q (the bad checksum is %q)", buf[:n], "bad checksum")
	}
	for _, want := range []string{"write", "write ext", "inject", "inject ext"} {
		if !got[want] {
			t.Errorf("the socket did not receive %q (got %v)", want, got)
		}
	}
	if len(hookSaw) != 3 || hookSaw[1] != "write ext" {
		t.Errorf("inbound hook saw payloads %q, want the three written", hookSaw)
	}

	t.Run("echo request answered by the kernel", func(t *testing.T) {
		if err := w.InjectInbound(ipv6ExtHeaders(tuntest.ICMPEcho(peer.Addr(), local, 42, 7, []byte("zl")))); err != nil {
			t.Fatal(err)
		}
		p := waitKernel(t, fromKernel, func(p *Packet) bool { return p.Proto == ProtoICMPv6 && p.Transport[0] == 129 })
		if p.Src != local || !bytes.Equal(p.Transport[4:], []byte{0, 42, 0, 7, 'z', 'l'}) {
			t.Errorf("echo reply %x from %v", p.Transport, p.Src)
		}
	})
	t.Run("SYN answered by the kernel", func(t *testing.T) {
		if err := w.InjectInbound(tuntest.TCPSYN(peer, netip.MustParseAddrPort("[fd00:99::1]:7001"))); err != nil {
			t.Fatal(err)
		}
		p := waitKernel(t, fromKernel, func(p *Packet) bool { return p.Proto == ProtoTCP })
		if p.SrcPort != 7001 || p.DstPort != peer.Port() || p.Transport[13]&0x12 != 0x12 {
			t.Errorf("answer %v:%d -> %v:%d flags %#x, want SYN-ACK from port 7001", p.Src, p.SrcPort, p.Dst, p.DstPort, p.Transport[13])
		}
	})
}

// waitKernel returns the first packet from the kernel that match accepts.
func waitKernel(t *testing.T, ch <-chan Packet, match func(*Packet) bool) Packet {
	t.Helper()
	deadline := time.After(5 * time.Second)
	for {
		select {
		case p := <-ch:
			if match(&p) {
				if !tuntest.ValidChecksums(p.Buf) {
					t.Errorf("kernel packet %x: checksums do not add up", p.Buf)
				}
				return p
			}
		case <-deadline:
			t.Fatalf("no such packet from the kernel")
		}
	}
}
