//go:build linux

package dnsd

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/zlmesh/zlmesh/internal/nstest"
	"github.com/zlmesh/zlmesh/tun"
)

// TestHookRealTUN answers dig, run as a process in a namespace whose
// cluster routes (IPv4 and IPv6) go to a real TUN, from the packet-path
// hooks at the mesh DNS's two addresses (as the node installs them): UDP,
// TCP, truncation, AAAA and NODATA, PTR of both families and a forwarded
// name, asked over IPv4 and over IPv6. Nothing addressed to a DNS address
// may pass the hooks (it would go to WireGuard).
func TestHookRealTUN(t *testing.T) {
	nstest.RequireRoot(t)
	if _, err := exec.LookPath("dig"); err != nil {
		t.Skip("dig not installed (dnsutils)")
	}
	ns := nstest.New(t, "zlt-dnsd")
	var rb [3]byte
	rand.Read(rb[:])
	name := "zld" + hex.EncodeToString(rb[:])

	var dev tun.Device
	if err := ns.Do(func() error {
		var err error
		if dev, err = tun.Create(name, tun.DefaultMTU); err != nil {
			return err
		}
		// The node's overlay addresses with the cluster prefixes: the
		// whole cluster CIDR and its IPv6 prefix, the DNS addresses
		// included, route to the TUN.
		if err := tun.SetAddress(name, netip.MustParsePrefix("10.200.1.1/14")); err != nil {
			return err
		}
		return tun.SetAddress(name, netip.PrefixFrom(twin6("10.200.1.1"), testCluster6.Bits()))
	}); err != nil {
		if dev != nil {
			dev.Close()
		}
		t.Fatalf("tun in %s: %v", ns.Name, err)
	}
	w := tun.NewWrapper(dev)
	ns.WaitLocal(t, netip.MustParseAddr("10.200.1.1"))
	ns.WaitLocal(t, twin6("10.200.1.1"))

	up := startUpstream(t)
	s := newTestServer(t, Config{Upstreams: []string{up.addr}, Addr: DefaultAddr, Addr6: testDNS6, Cluster6: testCluster6})
	snap := dualSnapshot()
	for _, ep := range bigSnapshot(40).Endpoints {
		ep.Addr6 = twin6(ep.Addr.String())
		snap.Endpoints = append(snap.Endpoints, ep)
	}
	if err := s.SetSnapshot(snap); err != nil {
		t.Fatal(err)
	}
	// One hook for both addresses, as the node installs it.
	remove, err := s.Hook(w, DefaultAddr, testDNS6)
	if err != nil {
		t.Fatal(err)
	}

	// Stand-in for wireguard-go: read the device; whatever the hooks
	// accept would be encrypted and sent.
	var leaked atomic.Int64
	readDone := make(chan struct{})
	go func() {
		defer close(readDone)
		n := w.BatchSize()
		bufs := make([][]byte, n)
		for i := range bufs {
			bufs[i] = make([]byte, 16+65535)
		}
		sizes := make([]int, n)
		var p tun.Packet
		for {
			k, err := w.Read(bufs, sizes, 16)
			for i := range k {
				p.Decode(bufs[i][16 : 16+sizes[i]])
				if p.Dst == DefaultAddr || p.Dst == testDNS6 {
					leaked.Add(1)
				}
			}
			if err != nil && (errors.Is(err, os.ErrClosed) || strings.Contains(err.Error(), "closed")) {
				return
			}
		}
	}()
	t.Cleanup(func() {
		remove()
		w.Close()
		<-readDone
	})

	sorted := func(l []string) []string { slices.Sort(l); return l }
	tests := []struct {
		name string
		args []string
		want []string // +short output, sorted
	}{
		{"udp service", []string{"+short", "web.zl"}, []string{"10.200.1.10", "10.200.2.10"}},
		{"tcp service", []string{"+tcp", "+short", "WEB.ZL"}, []string{"10.200.1.10", "10.200.2.10"}},
		{"udp service AAAA", []string{"+short", "web.zl", "AAAA"}, []string{"fd5a:1:0:4::a", "fd5a:1:0:8::a"}},
		{"tcp service AAAA", []string{"+tcp", "+short", "web.zl", "AAAA"}, []string{"fd5a:1:0:4::a", "fd5a:1:0:8::a"}},
		{"udp container", []string{"+short", "web-2.web.zl"}, []string{"10.200.2.10"}},
		{"udp container AAAA", []string{"+short", "web-2.web.zl", "AAAA"}, []string{"fd5a:1:0:8::a"}},
		{"tcp node AAAA", []string{"+tcp", "+short", "a.node.zl", "AAAA"}, []string{"fd5a:1:0:4::1"}},
		{"udp apex AAAA", []string{"+short", "zl", "AAAA"}, []string{testDNS6.String()}},
		{"udp PTR", []string{"+short", "-x", "10.200.1.10"}, []string{"web-1.web.zl."}},
		{"udp PTR IPv6", []string{"+short", "-x", "fd5a:1:0:4::a"}, []string{"web-1.web.zl."}},
		{"tcp PTR IPv6", []string{"+tcp", "+short", "-x", "fd5a:1:0:8::1"}, []string{"b.node.zl."}},
		{"udp SRV", []string{"+short", "_tcp.db.zl", "SRV"}, []string{"0 0 5432 db-1.db.zl."}},
		{"udp forwarded", []string{"+short", "ext.example"}, []string{"192.0.2.1"}},
		{"tcp forwarded", []string{"+tcp", "+short", "ext.example"}, []string{"192.0.2.1"}},
	}
	for _, server := range []netip.Addr{DefaultAddr, testDNS6} {
		family := "over IPv4"
		if server.Is6() {
			family = "over IPv6"
		}
		dig := func(t *testing.T, args ...string) []string {
			t.Helper()
			cmd := exec.Command("ip", append([]string{"netns", "exec", ns.Name, "dig", "@" + server.String(), "+time=2", "+tries=1"}, args...)...)
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("dig %v: %v\n%s", args, err, out)
			}
			var lines []string
			for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
				if l != "" {
					lines = append(lines, l)
				}
			}
			return lines
		}
		t.Run(family, func(t *testing.T) {
			for _, tc := range tests {
				t.Run(tc.name, func(t *testing.T) {
					if got := sorted(dig(t, tc.args...)); !slices.Equal(got, tc.want) {
						t.Errorf("dig @%s %v = %q, want %q", server, tc.args, got, tc.want)
					}
				})
			}
			t.Run("40 endpoints: truncated over UDP, whole over TCP", func(t *testing.T) {
				for _, qtype := range []string{"A", "AAAA"} {
					// +ignore: show the truncated answer instead of
					// retrying over TCP.
					out := strings.Join(dig(t, "+ignore", "+noedns", "big.zl", qtype), "\n")
					if !strings.Contains(out, " tc") || !strings.Contains(out, "MSG SIZE  rcvd: ") {
						t.Errorf("udp answer not truncated:\n%s", out)
					}
					if got := dig(t, "+tcp", "+short", "big.zl", qtype); len(got) != 40 {
						t.Errorf("tcp %s answer has %d records, want 40", qtype, len(got))
					}
					// Without +ignore dig retries over TCP by itself.
					if got := dig(t, "+short", "+noedns", "big.zl", qtype); len(got) != 40 {
						t.Errorf("udp then tcp retry %s: %d records, want 40", qtype, len(got))
					}
				}
			})
			t.Run("NXDOMAIN", func(t *testing.T) {
				out := strings.Join(dig(t, "nope.zl", "AAAA"), "\n")
				if !strings.Contains(out, "status: NXDOMAIN") || !strings.Contains(out, "zl.\t\t\t5\tIN\tSOA") {
					t.Errorf("dig nope.zl AAAA:\n%s", out)
				}
			})
			t.Run("NODATA for AAAA of an IPv4-only name", func(t *testing.T) {
				out := strings.Join(dig(t, "db-1.db.zl", "AAAA"), "\n")
				if !strings.Contains(out, "status: NOERROR") || !strings.Contains(out, "ANSWER: 0,") || !strings.Contains(out, "zl.\t\t\t5\tIN\tSOA") {
					t.Errorf("dig db-1.db.zl AAAA:\n%s", out)
				}
			})
		})
	}
	if n := leaked.Load(); n != 0 {
		t.Errorf("%d packets to a DNS address passed the hooks towards WireGuard", n)
	}
	if c := w.Counters(tun.Outbound); c.Consumed == 0 {
		t.Errorf("outbound counters %+v: nothing consumed", c)
	}
}
