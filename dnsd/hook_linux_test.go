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
// cluster route goes to a real TUN, from the packet-path hook: UDP, TCP,
// truncation, PTR and a forwarded name. Nothing addressed to the DNS address
// may pass the hook (it would go to WireGuard).
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
		// The node's overlay address with the cluster prefix: the whole
		// cluster CIDR, the DNS address included, routes to the TUN.
		return tun.SetAddress(name, netip.MustParsePrefix("10.200.1.1/14"))
	}); err != nil {
		if dev != nil {
			dev.Close()
		}
		t.Fatalf("tun in %s: %v", ns.Name, err)
	}
	w := tun.NewWrapper(dev)

	up := startUpstream(t)
	s := newTestServer(t, Config{Upstreams: []string{up.addr}})
	snap := testSnapshot()
	snap.Endpoints = append(snap.Endpoints, bigSnapshot(40).Endpoints...)
	if err := s.SetSnapshot(snap); err != nil {
		t.Fatal(err)
	}
	remove, err := s.Hook(w, DefaultAddr)
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
				if p.Dst == DefaultAddr {
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

	dig := func(args ...string) []string {
		t.Helper()
		cmd := exec.Command("ip", append([]string{"netns", "exec", ns.Name, "dig", "@" + DefaultAddr.String(), "+time=2", "+tries=1"}, args...)...)
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
	sorted := func(l []string) []string { slices.Sort(l); return l }

	tests := []struct {
		name string
		args []string
		want []string // +short output, sorted
	}{
		{"udp service", []string{"+short", "web.zl"}, []string{"10.200.1.10", "10.200.2.10", "10.200.2.11"}},
		{"tcp service", []string{"+tcp", "+short", "WEB.ZL"}, []string{"10.200.1.10", "10.200.2.10", "10.200.2.11"}},
		{"udp container", []string{"+short", "web-2.web.zl"}, []string{"10.200.2.10"}},
		{"tcp node", []string{"+tcp", "+short", "a.node.zl"}, []string{"10.200.1.1"}},
		{"udp PTR", []string{"+short", "-x", "10.200.1.10"}, []string{"web-1.web.zl."}},
		{"udp SRV", []string{"+short", "_tcp.db.zl", "SRV"}, []string{"0 0 5432 db-1.db.zl."}},
		{"udp forwarded", []string{"+short", "ext.example"}, []string{"192.0.2.1"}},
		{"tcp forwarded", []string{"+tcp", "+short", "ext.example"}, []string{"192.0.2.1"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := sorted(dig(tc.args...)); !slices.Equal(got, tc.want) {
				t.Errorf("dig %v = %q, want %q", tc.args, got, tc.want)
			}
		})
	}
	t.Run("40 endpoints: truncated over UDP, whole over TCP", func(t *testing.T) {
		// +ignore: show the truncated answer instead of retrying over TCP.
		out := strings.Join(dig("+ignore", "+noedns", "big.zl"), "\n")
		if !strings.Contains(out, " tc") || !strings.Contains(out, "MSG SIZE  rcvd: ") {
			t.Errorf("udp answer not truncated:\n%s", out)
		}
		if got := dig("+tcp", "+short", "big.zl"); len(got) != 40 {
			t.Errorf("tcp answer has %d records, want 40", len(got))
		}
		// Without +ignore dig retries over TCP by itself.
		if got := dig("+short", "+noedns", "big.zl"); len(got) != 40 {
			t.Errorf("udp then tcp retry: %d records, want 40", len(got))
		}
	})
	t.Run("NXDOMAIN", func(t *testing.T) {
		out := strings.Join(dig("nope.zl"), "\n")
		if !strings.Contains(out, "status: NXDOMAIN") || !strings.Contains(out, "zl.\t\t\t5\tIN\tSOA") {
			t.Errorf("dig nope.zl:\n%s", out)
		}
	})
	if n := leaked.Load(); n != 0 {
		t.Errorf("%d packets to the DNS address passed the hook towards WireGuard", n)
	}
	if c := w.Counters(tun.Outbound); c.Consumed == 0 {
		t.Errorf("outbound counters %+v: nothing consumed", c)
	}
}
