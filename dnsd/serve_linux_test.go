//go:build linux

package dnsd

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/vishvananda/netlink"
	"github.com/zlmesh/zlmesh/internal/nstest"
)

// TestListenShared serves the mesh DNS from kernel sockets at both of its
// addresses, held on the loopback of a namespace the way the node holds
// them (LocalPlumbing.HoldLocal): several SO_REUSEPORT UDP sockets with
// batched I/O and a TCP listener per address, asked from many client
// sockets over UDP and TCP. Every query is answered from the address it was
// sent to (the clients' sockets are connected, so the kernel drops
// anything else).
func TestListenShared(t *testing.T) {
	ns := nstest.New(t, "zlt-dnsls")
	lo, err := ns.NL.LinkByName("lo")
	if err != nil {
		t.Fatal(err)
	}
	s := newTestServer(t, Config{Cluster6: testCluster6, Addr: DefaultAddr, Addr6: testDNS6})
	snap := dualSnapshot()
	for _, ep := range bigSnapshot(40).Endpoints {
		ep.Addr6 = twin6(ep.Addr.String())
		snap.Endpoints = append(snap.Endpoints, ep)
	}
	if err := s.SetSnapshot(snap); err != nil {
		t.Fatal(err)
	}
	for _, addr := range []netip.Addr{DefaultAddr, testDNS6} {
		a := &netlink.Addr{IPNet: &net.IPNet{IP: addr.AsSlice(), Mask: net.CIDRMask(addr.BitLen(), addr.BitLen())}}
		if addr.Is6() {
			a.Flags = 0x02 // IFA_F_NODAD
		}
		if err := ns.NL.AddrAdd(lo, a); err != nil {
			t.Fatalf("hold %s on lo: %v", addr, err)
		}
		ns.WaitLocal(t, addr)
	}

	for _, addr := range []netip.Addr{DefaultAddr, testDNS6} {
		t.Run(addr.String(), func(t *testing.T) {
			ap := netip.AddrPortFrom(addr, 53)
			var pcs []net.PacketConn
			var l net.Listener
			if err := ns.Do(func() error {
				var err error
				pcs, l, err = ListenShared(ap, 3)
				return err
			}); err != nil {
				t.Fatalf("ListenShared(%s): %v", ap, err)
			}
			if len(pcs) != 3 {
				t.Fatalf("%d UDP sockets, want 3", len(pcs))
			}
			if got := l.Addr().(*net.TCPAddr).AddrPort(); got != ap {
				t.Fatalf("TCP listener on %v, want %v", got, ap)
			}
			ctx, cancel := context.WithCancel(context.Background())
			var wg sync.WaitGroup
			for i, pc := range pcs {
				if got := pc.LocalAddr().(*net.UDPAddr).AddrPort(); got != ap {
					t.Fatalf("UDP socket on %v, want %v", got, ap)
				}
				var tl net.Listener
				if i == 0 {
					tl = l
				}
				wg.Go(func() {
					if err := s.Serve(ctx, pc, tl); err != nil {
						t.Errorf("Serve: %v", err)
					}
				})
			}
			t.Cleanup(func() { cancel(); wg.Wait() })

			// dial makes a connected client socket inside the namespace.
			dial := func(t *testing.T, network string) net.Conn {
				t.Helper()
				var c net.Conn
				if err := ns.Do(func() error {
					var err error
					c, err = net.DialTimeout(network, ap.String(), 2*time.Second)
					return err
				}); err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { c.Close() })
				return c
			}
			exchange := func(t *testing.T, network string, q *dns.Msg) *dns.Msg {
				t.Helper()
				dc := &dns.Conn{Conn: dial(t, network)}
				dc.SetDeadline(time.Now().Add(3 * time.Second))
				if err := dc.WriteMsg(q); err != nil {
					t.Fatal(err)
				}
				m, err := dc.ReadMsg()
				if err != nil {
					t.Fatalf("%s %s: %v", network, q.Question[0].Name, err)
				}
				return m
			}

			t.Run("udp from many sockets", func(t *testing.T) {
				var cwg sync.WaitGroup
				for i := range 24 {
					cwg.Go(func() {
						name := fmt.Sprintf("big-%d.big.zl.", i)
						m := exchange(t, "udp", query(name, dns.TypeAAAA, 0, false))
						want := twin6(netip.AddrFrom4([4]byte{10, 200, 0, byte(1 + i)}).String()).String()
						if got := rdata(m.Answer); len(got) != 1 || got[0] != want {
							t.Errorf("%s AAAA = %q, want %s", name, got, want)
						}
					})
				}
				cwg.Wait()
			})
			t.Run("udp truncated, tcp whole", func(t *testing.T) {
				if m := exchange(t, "udp", query("big.zl.", dns.TypeAAAA, 0, false)); !m.Truncated {
					t.Errorf("udp answer for 40 AAAA not truncated")
				}
				if m := exchange(t, "tcp", query("big.zl.", dns.TypeAAAA, 0, false)); m.Truncated || len(m.Answer) != 40 {
					t.Errorf("tcp answer: %d records (TC %v), want 40", len(m.Answer), m.Truncated)
				}
			})
			t.Run("tcp PTR under ip6.arpa", func(t *testing.T) {
				m := exchange(t, "tcp", query(mustReverse("fd5a:1:0:4::a"), dns.TypePTR, 0, false))
				if got := rdata(m.Answer); !slices.Equal(got, []string{"web-1.web.zl."}) {
					t.Errorf("PTR = %q", got)
				}
			})
			t.Run("apex has both addresses", func(t *testing.T) {
				m := exchange(t, "udp", query("zl.", dns.TypeANY, 1232, false))
				got := rdata(m.Answer)
				if !slices.Contains(got, DefaultAddr.String()) || !slices.Contains(got, testDNS6.String()) {
					t.Errorf("apex ANY = %q, want both DNS addresses", got)
				}
			})
		})
	}
}
