//go:build linux

package e2e

import (
	"bufio"
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/zlmesh/zlmesh/testbed"
)

// meshDNS is the mesh DNS address every container's resolv.conf names.
const meshDNS = testbed.DefaultMeshDNS

// TestDNS runs the mesh DNS end to end on one 3-host cluster, from
// containers whose resolv.conf points at the mesh DNS address: names,
// reverse names, negative answers, forwarding to the outside resolver,
// getent through the search domain, TCP, case, then a burst of queries that
// must not cross the underlay, a service too large for a 512-byte UDP
// answer, and last the freshness of answers after a detach and a kill -9.
// The subtests share the cluster and run in order.
func TestDNS(t *testing.T) {
	tb := cluster(t, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	h1, h2, h3 := tb.Host("h1"), tb.Host("h2"), tb.Host("h3")

	// One web container and one client container on each host.
	web := map[string]*attached{}
	cli := map[string]*attached{}
	for _, h := range tb.Hosts() {
		web[h.Name] = attach(t, ctx, tb, h, "web"+h.Name[1:], "web")
		cli[h.Name] = attach(t, ctx, tb, h, "c"+h.Name[1:], "cli")
	}
	c1 := cli["h1"].c
	allWeb := []string{web["h1"].addr, web["h2"].addr, web["h3"].addr}
	slices.Sort(allWeb)
	overlay := map[string]string{}
	// getent hosts asks for AAAA first (glibc): with IPv6 on it lists
	// the IPv6 twins, with IPv6 off the IPv4 addresses.
	getentWeb, getentOverlay := map[string]string{}, map[string]string{}
	var allGetent []string
	for _, h := range tb.Hosts() {
		st := status(t, h)
		overlay[h.Name] = st.OverlayIP
		getentWeb[h.Name], getentOverlay[h.Name] = cmp.Or(web[h.Name].addr6, web[h.Name].addr), cmp.Or(st.OverlayIP6, st.OverlayIP)
		allGetent = append(allGetent, getentWeb[h.Name])
	}
	slices.Sort(allGetent)

	// Records travel by gossip: wait until every host answers for every
	// web container.
	start := time.Now()
	eventually(t, 20*time.Second, func() error {
		for _, h := range tb.Hosts() {
			if got := digShort(ctx, cli[h.Name].c, "web.zl"); !slices.Equal(sorted(got), allWeb) {
				return fmt.Errorf("web.zl from a container on %s: %v, want %v", h.Name, got, allWeb)
			}
		}
		return nil
	})
	t.Logf("web.zl complete on every host %v after the last attach", time.Since(start).Round(time.Millisecond))

	t.Run("service lists every endpoint, rotated", func(t *testing.T) {
		firsts := map[string]bool{}
		for range 6 {
			r := dig(t, ctx, c1, "web.zl")
			r.want(t, "NOERROR", "aa", "qr", "rd", "ra")
			got := r.data(r.Answer, "A")
			if !slices.Equal(sorted(got), allWeb) {
				t.Fatalf("web.zl: %v, want %v\n%s", got, allWeb, r.Out)
			}
			if !isRotation(got, r.data(dig(t, ctx, c1, "web.zl").Answer, "A")) {
				t.Errorf("two answers are not rotations of one order:\n%s", r.Out)
			}
			for _, a := range r.Answer {
				if a.TTL != 5 {
					t.Errorf("TTL %d, want 5 (the default): %+v", a.TTL, a)
				}
			}
			firsts[got[0]] = true
		}
		if len(firsts) < 2 {
			t.Errorf("web.zl: the first address was always %v over 6 queries; want the order rotated", firsts)
		}
		// web.zl AAAA: the IPv6 twins of the same containers.
		r := dig(t, ctx, c1, "web.zl", "AAAA")
		r.want(t, "NOERROR", "aa")
		allWeb6 := []string{web["h1"].addr6, web["h2"].addr6, web["h3"].addr6}
		if got := r.data(r.Answer, "AAAA"); !slices.Equal(sorted(got), sorted(allWeb6)) {
			t.Errorf("web.zl AAAA = %v, want %v\n%s", got, allWeb6, r.Out)
		}
		// A name without AAAA: NODATA (NOERROR, no answer, the SOA).
		r = dig(t, ctx, c1, "node.zl", "AAAA")
		r.want(t, "NOERROR", "aa")
		if len(r.Answer) != 0 || len(r.data(r.Authority, "SOA")) != 1 {
			t.Errorf("node.zl AAAA: want NODATA with the SOA\n%s", r.Out)
		}
	})

	t.Run("container and node names", func(t *testing.T) {
		for _, from := range []string{"h1", "h3"} {
			for _, h := range tb.Hosts() {
				name := web[h.Name].c.ID() + ".web.zl"
				if got := digShort(ctx, cli[from].c, name); !slices.Equal(got, []string{web[h.Name].addr}) {
					t.Errorf("%s from %s: %v, want %s", name, from, got, web[h.Name].addr)
				}
			}
		}
		r := dig(t, ctx, c1, "h3.node.zl")
		r.want(t, "NOERROR", "aa")
		if got := r.data(r.Answer, "A"); !slices.Equal(got, []string{overlay["h3"]}) {
			t.Errorf("h3.node.zl: %v, want %s\n%s", got, overlay["h3"], r.Out)
		}
	})

	t.Run("the host itself asks the mesh DNS address", func(t *testing.T) {
		// The host's own resolv.conf names the outside resolver; a program
		// on the host that asks the mesh DNS address reaches it through zl0.
		out, err := h2.Exec(ctx, "dig", "+short", "+time=2", "+tries=2", "@"+meshDNS, "web.zl")
		if got := strings.Fields(string(out)); err != nil || !slices.Equal(sorted(got), allWeb) {
			t.Errorf("dig @%s web.zl on h2: %v, want %v (%v)", meshDNS, got, allWeb, err)
		}
		out, err = h2.Exec(ctx, "dig", "+short", "+tcp", "+time=2", "+tries=2", "@"+meshDNS, "h1.node.zl")
		if got := strings.TrimSpace(string(out)); err != nil || got != overlay["h1"] {
			t.Errorf("dig +tcp @%s h1.node.zl on h2: %q, want %s (%v)", meshDNS, got, overlay["h1"], err)
		}
	})

	t.Run("reverse names", func(t *testing.T) {
		cases := []struct{ addr, want string }{
			{web["h2"].addr, web["h2"].c.ID() + ".web.zl."},
			{cli["h3"].addr, cli["h3"].c.ID() + ".cli.zl."},
			{overlay["h3"], "h3.node.zl."},
			{overlay["h1"], "h1.node.zl."},
		}
		for _, tc := range cases {
			r := dig(t, ctx, c1, "-x", tc.addr)
			r.want(t, "NOERROR", "aa")
			if got := r.data(r.Answer, "PTR"); !slices.Equal(got, []string{tc.want}) {
				t.Errorf("PTR of %s: %v, want %s\n%s", tc.addr, got, tc.want, r.Out)
			}
		}
		// An unused address of the cluster is answered here, never
		// forwarded: NXDOMAIN with the SOA of the reverse zone.
		r := dig(t, ctx, c1, "-x", "10.200.250.250")
		r.want(t, "NXDOMAIN", "aa")
		if len(r.data(r.Authority, "SOA")) != 1 {
			t.Errorf("PTR of an unused cluster address: want the SOA\n%s", r.Out)
		}
	})

	t.Run("unknown name is NXDOMAIN with the SOA", func(t *testing.T) {
		for _, name := range []string{"nope.zl", "nope.web.zl", "h9.node.zl"} {
			r := dig(t, ctx, c1, name)
			r.want(t, "NXDOMAIN", "aa")
			soa := r.data(r.Authority, "SOA")
			if len(r.Answer) != 0 || len(soa) != 1 || !strings.HasPrefix(soa[0], "zl. ") {
				t.Errorf("%s: want no answer and the zone's SOA in authority\n%s", name, r.Out)
			}
			if ttl := r.Authority[0].TTL; ttl != 5 || !strings.HasSuffix(soa[0], " 5") {
				t.Errorf("%s: SOA TTL %d and minimum %q, want 5 (the negative TTL)", name, ttl, soa[0])
			}
		}
	})

	t.Run("outside names through the outside resolver", func(t *testing.T) {
		before := dnsStats(t, h1)
		r := dig(t, ctx, c1, "outside.test")
		r.want(t, "NOERROR", "rd", "ra")
		if r.Flags["aa"] {
			t.Errorf("outside.test answered as authoritative: not from the upstream?\n%s", r.Out)
		}
		if got := r.data(r.Answer, "A"); !slices.Equal(got, []string{testbed.OutsideAddr.String()}) {
			t.Errorf("outside.test: %v, want %s\n%s", got, testbed.OutsideAddr, r.Out)
		}
		r = dig(t, ctx, c1, "alias.test")
		if !slices.Equal(r.data(r.Answer, "CNAME"), []string{"outside.test."}) || !slices.Equal(r.data(r.Answer, "A"), []string{testbed.OutsideAddr.String()}) {
			t.Errorf("alias.test: want the CNAME and its A\n%s", r.Out)
		}
		dig(t, ctx, c1, "nothing-here.test").want(t, "NXDOMAIN")
		after := dnsStats(t, h1)
		if d := after["forwarded"] + after["cache_hits"] - before["forwarded"] - before["cache_hits"]; d < 3 {
			t.Errorf("h1 forwarded or answered from its cache %v of 3 outside queries (stats %v → %v)", d, before, after)
		}
		out, err := c1.Exec(ctx, "getent", "hosts", "outside.test")
		if err != nil || !strings.HasPrefix(string(out), testbed.OutsideAddr.String()+" ") {
			t.Errorf("getent hosts outside.test: %v\n%s", err, out)
		}
	})

	t.Run("getent with the search domain", func(t *testing.T) {
		for _, name := range []string{"web.zl", "web"} {
			addrs, names := getentHosts(t, ctx, c1, name)
			if !slices.Equal(sorted(addrs), allGetent) {
				t.Errorf("getent hosts %s: %v, want %v", name, addrs, allGetent)
			}
			if !slices.Equal(slices.Compact(names), []string{"web.zl"}) {
				t.Errorf("getent hosts %s: names %v, want web.zl", name, names)
			}
		}
		addrs, _ := getentHosts(t, ctx, c1, web["h2"].c.ID()+".web")
		if !slices.Equal(addrs, []string{getentWeb["h2"]}) {
			t.Errorf("getent hosts <container>.web: %v, want %s", addrs, getentWeb["h2"])
		}
		addrs, _ = getentHosts(t, ctx, c1, "h2.node")
		if !slices.Equal(addrs, []string{getentOverlay["h2"]}) {
			t.Errorf("getent hosts h2.node: %v, want %s", addrs, getentOverlay["h2"])
		}
	})

	t.Run("TCP", func(t *testing.T) {
		r := dig(t, ctx, c1, "+tcp", "web.zl")
		r.want(t, "NOERROR", "aa")
		if r.Proto != "TCP" {
			t.Errorf("dig +tcp answered over %q\n%s", r.Proto, r.Out)
		}
		if got := r.data(r.Answer, "A"); !slices.Equal(sorted(got), allWeb) {
			t.Errorf("web.zl over TCP: %v, want %v", got, allWeb)
		}
		r = dig(t, ctx, cli["h2"].c, "+tcp", "outside.test")
		if r.Proto != "TCP" || !slices.Equal(r.data(r.Answer, "A"), []string{testbed.OutsideAddr.String()}) {
			t.Errorf("outside.test over TCP from h2:\n%s", r.Out)
		}
		// Several questions on one connection (RFC 7766).
		r = dig(t, ctx, c1, "+tcp", "+keepopen", "web.zl", "h2.node.zl", "h3.node.zl")
		if got := strings.Count(r.Out, "(TCP)"); got != 3 {
			t.Errorf("three questions on one TCP connection: %d answers\n%s", got, r.Out)
		}
	})

	t.Run("names are case-insensitive", func(t *testing.T) {
		r := dig(t, ctx, c1, "WeB.zL")
		r.want(t, "NOERROR", "aa")
		if got := r.data(r.Answer, "A"); !slices.Equal(sorted(got), allWeb) || r.Answer[0].Name != "WeB.zL." {
			t.Errorf("WeB.zL: want every web address under the name as asked\n%s", r.Out)
		}
		name := strings.ToUpper(web["h3"].c.ID() + ".Web.ZL")
		if got := digShort(ctx, c1, name); !slices.Equal(got, []string{web["h3"].addr}) {
			t.Errorf("%s: %v, want %s", name, got, web["h3"].addr)
		}
		if got := digShort(ctx, c1, "H3.NODE.ZL"); !slices.Equal(got, []string{overlay["h3"]}) {
			t.Errorf("H3.NODE.ZL: %v, want %s", got, overlay["h3"])
		}
		addrs, _ := getentHosts(t, ctx, c1, "WEB")
		if !slices.Equal(sorted(addrs), allGetent) {
			t.Errorf("getent hosts WEB: %v, want %v", addrs, allGetent)
		}
	})

	t.Run("queries never leave the host", func(t *testing.T) {
		queriesStayLocal(t, ctx, tb, c1, []string{
			"web.zl A", web["h2"].c.ID() + ".web.zl A", "h3.node.zl A", "nope.zl A",
			reverseName(web["h3"].addr) + " PTR",
		}, web["h2"].addr)
	})

	// 40 endpoints: 14 on h1, 13 on h2 and h3 (a /27 slice holds 29).
	var big []*attached
	t.Run("large answers are truncated over UDP and whole over TCP", func(t *testing.T) {
		big = attachMany(t, ctx, tb, "big", 40)
		want := addrsOf(big)
		eventually(t, 20*time.Second, func() error {
			if got := digShort(ctx, c1, "big.zl"); !slices.Equal(sorted(got), want) {
				return fmt.Errorf("big.zl: %d addresses, want %d", len(got), len(want))
			}
			return nil
		})
		// Without EDNS0 a UDP answer holds 512 bytes: about 30 A records.
		r := dig(t, ctx, c1, "+noedns", "+ignore", "big.zl")
		r.want(t, "NOERROR", "aa", "tc")
		got := r.data(r.Answer, "A")
		if len(got) == 0 || len(got) >= 40 || r.Proto != "UDP" {
			t.Errorf("big.zl over UDP without EDNS0: %d records over %s, want fewer than 40 with TC\n%s", len(got), r.Proto, r.Out)
		}
		for _, a := range got {
			if !slices.Contains(want, a) {
				t.Errorf("truncated big.zl has %s, not an endpoint", a)
			}
		}
		// dig retries a truncated answer over TCP by itself.
		r = dig(t, ctx, c1, "+noedns", "big.zl")
		if got := r.data(r.Answer, "A"); r.Proto != "TCP" || r.Flags["tc"] || !slices.Equal(sorted(got), want) {
			t.Errorf("big.zl, retried over TCP: %d records over %s\n%s", len(got), r.Proto, r.Out)
		}
		r = dig(t, ctx, c1, "+tcp", "big.zl")
		if got := r.data(r.Answer, "A"); r.Proto != "TCP" || r.Flags["tc"] || !slices.Equal(sorted(got), want) {
			t.Errorf("big.zl over TCP: %d records\n%s", len(got), r.Out)
		}
		// EDNS0 (dig's default 1232 bytes) holds all 40 over UDP.
		r = dig(t, ctx, c1, "+ignore", "big.zl")
		if got := r.data(r.Answer, "A"); r.Proto != "UDP" || r.Flags["tc"] || len(got) != 40 {
			t.Errorf("big.zl over UDP with EDNS0: %d records, tc %v\n%s", len(got), r.Flags["tc"], r.Out)
		}
		// glibc asks without EDNS0, gets TC and asks again over TCP.
		out, err := c1.Exec(ctx, "getent", "ahostsv4", "big.zl")
		if err != nil {
			t.Fatalf("getent ahostsv4 big.zl: %v\n%s", err, out)
		}
		var addrs []string
		for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
			if f := strings.Fields(line); len(f) > 0 {
				addrs = append(addrs, f[0])
			}
		}
		if got := slices.Compact(sorted(addrs)); !slices.Equal(got, want) {
			t.Errorf("getent ahostsv4 big.zl: %d addresses, want 40", len(got))
		}
	})

	t.Run("detached container is gone everywhere", func(t *testing.T) {
		gone := web["h2"]
		if err := h2.Client().Detach(ctx, gone.c.ID()); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		want := []string{web["h1"].addr, web["h3"].addr}
		slices.Sort(want)
		eventually(t, 10*time.Second, func() error {
			for _, h := range tb.Hosts() {
				c := cli[h.Name].c
				if got := digShort(ctx, c, "web.zl"); !slices.Equal(sorted(got), want) {
					return fmt.Errorf("web.zl from %s: %v, want %v", h.Name, got, want)
				}
				if r := digE(ctx, c, gone.c.ID()+".web.zl"); r.Status != "NXDOMAIN" {
					return fmt.Errorf("the detached container's name from %s: %s", h.Name, r.Status)
				}
				if r := digE(ctx, c, "-x", gone.addr); r.Status != "NXDOMAIN" {
					return fmt.Errorf("the detached container's PTR from %s: %s", h.Name, r.Status)
				}
			}
			return nil
		})
		t.Logf("detached container gone from every host's answers after %v", time.Since(start).Round(time.Millisecond))
	})

	t.Run("killed host is gone everywhere", func(t *testing.T) {
		if len(big) != 40 {
			t.Skip("needs the large service")
		}
		if err := h3.Kill(); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		var bigLeft []*attached
		for _, b := range big {
			if b.c.Host != h3 {
				bigLeft = append(bigLeft, b)
			}
		}
		wantBig := addrsOf(bigLeft)
		eventually(t, 45*time.Second, func() error {
			for _, h := range []string{"h1", "h2"} {
				c := cli[h].c
				if got := digShort(ctx, c, "web.zl"); !slices.Equal(got, []string{web["h1"].addr}) {
					return fmt.Errorf("web.zl from %s: %v, want only %s", h, got, web["h1"].addr)
				}
				if r := digE(ctx, c, "h3.node.zl"); r.Status != "NXDOMAIN" {
					return fmt.Errorf("h3.node.zl from %s: %s", h, r.Status)
				}
				if r := digE(ctx, c, web["h3"].c.ID()+".web.zl"); r.Status != "NXDOMAIN" {
					return fmt.Errorf("h3's web container from %s: %s", h, r.Status)
				}
				if got := digShort(ctx, c, "+tcp", "big.zl"); !slices.Equal(sorted(got), wantBig) {
					return fmt.Errorf("big.zl from %s: %d addresses, want the %d of h1 and h2", h, len(got), len(wantBig))
				}
			}
			return nil
		})
		t.Logf("killed host gone from the answers of h1 and h2 after %v", time.Since(start).Round(time.Millisecond))
	})
}

// queriesStayLocal sends a burst of 1000 queries (the names cycled) from c
// to the mesh DNS address and shows they never reached WireGuard: the
// switch counts the WireGuard packets of c's host in a window with the burst
// and in an idle window of the same length, and the burst adds none (a
// positive control, pings to peer over the overlay, shows the counter sees
// overlay traffic); c's host answered all of them itself (its dnsd counters)
// and the other hosts saw none.
func queriesStayLocal(t *testing.T, ctx context.Context, tb *testbed.Testbed, c *testbed.Container, names []string, peer string) {
	h := c.Host
	const burst = 1000
	var q strings.Builder
	for i := range burst {
		q.WriteString(names[i%len(names)] + "\n")
	}
	qfile := filepath.Join(t.TempDir(), "queries")
	if err := os.WriteFile(qfile, []byte(q.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	wg := newWGCounter(t, ctx, tb, h)
	before := map[string]map[string]float64{}
	for _, o := range tb.Hosts() {
		before[o.Name] = dnsStats(t, o)
	}

	start := time.Now()
	wg0 := wg.read(t)
	out, err := c.Exec(ctx, "dnsperf", "-s", meshDNS, "-d", qfile, "-n", "1", "-t", "2")
	wg1 := wg.read(t)
	window := time.Since(start)
	if err != nil {
		t.Fatalf("dnsperf: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), fmt.Sprintf("Queries completed:    %d (100.00%%)", burst)) {
		t.Fatalf("dnsperf did not get %d answers:\n%s", burst, out)
	}
	// The idle window, as long as the burst's.
	wg2 := wg.read(t)
	time.Sleep(window)
	wg3 := wg.read(t)

	burstPkts, burstBytes := wg1.pkts-wg0.pkts, wg1.bytes-wg0.bytes
	idlePkts, idleBytes := wg3.pkts-wg2.pkts, wg3.bytes-wg2.bytes
	t.Logf("%d queries in %v; WireGuard packets of %s on the underlay: %d (%d bytes) during the burst, %d (%d bytes) in an idle window as long",
		burst, window.Round(time.Millisecond), h.Name, burstPkts, burstBytes, idlePkts, idleBytes)
	// One query and its answer over WireGuard take two packets of at least
	// 100 bytes each: 2000 packets, 200 kB for the burst. Keepalives and
	// handshakes (with two peers) come any time, so allow a few packets of
	// noise, far fewer than even 1% of the queries would need.
	if burstPkts > idlePkts+10 || burstBytes > idleBytes+1500 {
		t.Errorf("the burst of %d queries came with %d WireGuard packets (%d bytes), an idle window with %d (%d bytes)",
			burst, burstPkts, burstBytes, idlePkts, idleBytes)
	}
	for o, st := range before {
		after := dnsStats(t, tb.Host(o))
		d := after["queries"] - st["queries"]
		switch {
		case o == h.Name && (d < burst || after["local"]-st["local"] < burst):
			t.Errorf("%s answered %v queries (%v locally) during a burst of %d from its container", o, d, after["local"]-st["local"], burst)
		case o != h.Name && d != 0:
			t.Errorf("%s answered %v queries during a burst from a container on %s", o, d, h.Name)
		}
	}

	// Positive control: 20 answered pings over the overlay are counted (a
	// loaded machine may lose one: it is tried again).
	p0 := wg.read(t)
	ok, tries := 0, 0
	for ; ok < 20 && tries < 60; tries++ {
		if err := c.Ping(ctx, peer); err == nil {
			ok++
		}
	}
	p1 := wg.read(t)
	if ok < 20 {
		t.Fatalf("%d of %d pings to %s over the overlay answered", ok, tries, peer)
	}
	if p1.pkts-p0.pkts < 40 {
		t.Errorf("20 answered pings to %s over the overlay: %d WireGuard packets counted, want at least 40 (is the counter blind?)", peer, p1.pkts-p0.pkts)
	}
}

// wgCounter counts, in the switch, the WireGuard packets a host sends and
// receives (UDP port 51820, the testbed's listen port).
type wgCounter struct {
	tb   *testbed.Testbed
	ctx  context.Context
	port string
}

type wgCount struct{ pkts, bytes uint64 }

func newWGCounter(t *testing.T, ctx context.Context, tb *testbed.Testbed, h *testbed.Host) *wgCounter {
	t.Helper()
	// Switch ports are named like their hosts; the table is removed with
	// the switch namespace, and here when the test ends.
	rules := fmt.Sprintf(`table bridge zltdns {
	chain forward {
		type filter hook forward priority -10; policy accept;
		iifname %[1]q udp dport 51820 counter
		oifname %[1]q udp sport 51820 counter
	}
}
`, h.Name)
	cmd := tb.SwitchCmd(ctx, "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(rules)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("nft counters in the switch: %v\n%s", err, out)
	}
	t.Cleanup(func() { tb.ExecSwitch(context.Background(), "nft", "delete", "table", "bridge", "zltdns") })
	return &wgCounter{tb: tb, ctx: ctx, port: h.Name}
}

func (w *wgCounter) read(t *testing.T) wgCount {
	t.Helper()
	out, err := w.tb.ExecSwitch(w.ctx, "nft", "-j", "list", "table", "bridge", "zltdns")
	if err != nil {
		t.Fatalf("read nft counters: %v\n%s", err, out)
	}
	var doc struct {
		Nftables []struct {
			Rule *struct {
				Expr []struct {
					Counter *struct {
						Packets uint64 `json:"packets"`
						Bytes   uint64 `json:"bytes"`
					} `json:"counter"`
				} `json:"expr"`
			} `json:"rule"`
		} `json:"nftables"`
	}
	if err := json.Unmarshal(out, &doc); err != nil {
		t.Fatalf("nft counters: %v\n%s", err, out)
	}
	var c wgCount
	n := 0
	for _, o := range doc.Nftables {
		if o.Rule == nil {
			continue
		}
		for _, e := range o.Rule.Expr {
			if e.Counter != nil {
				c.pkts += e.Counter.Packets
				c.bytes += e.Counter.Bytes
				n++
			}
		}
	}
	if n != 2 {
		t.Fatalf("nft: %d counters, want 2\n%s", n, out)
	}
	return c
}

// attached is a container attached to a service, with its address.
type attached struct {
	c     *testbed.Container
	addr  string
	addr6 string // "" with IPv6 off
}

func attach(t *testing.T, ctx context.Context, tb *testbed.Testbed, h *testbed.Host, name, service string) *attached {
	t.Helper()
	c, err := tb.AddContainer(ctx, h, name)
	if err != nil {
		t.Fatal(err)
	}
	at, err := c.Attach(ctx, service)
	if err != nil {
		t.Fatalf("attach %s to %s: %v\n%s", c, service, err, h.LogTail(20))
	}
	if at.DNS != meshDNS || at.SearchDomain != "zl" {
		t.Errorf("attach %s: DNS %q search %q, want %s and zl", c, at.DNS, at.SearchDomain, meshDNS)
	}
	return &attached{c: c, addr: at.Address, addr6: at.Address6}
}

// attachMany attaches n containers b0…b<n-1> to service, spread over the
// hosts in turn, a few attaches at a time.
func attachMany(t *testing.T, ctx context.Context, tb *testbed.Testbed, service string, n int) []*attached {
	t.Helper()
	hosts := tb.Hosts()
	cs := make([]*testbed.Container, n)
	for i := range cs {
		c, err := tb.AddContainer(ctx, hosts[i%len(hosts)], fmt.Sprintf("%s%d", service, i))
		if err != nil {
			t.Fatal(err)
		}
		cs[i] = c
	}
	out := make([]*attached, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	sem := make(chan struct{}, 4)
	for i, c := range cs {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			at, err := c.Attach(ctx, service)
			out[i], errs[i] = &attached{c: c, addr: at.Address}, err
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("attach %s to %s: %v", cs[i], service, err)
		}
	}
	return out
}

func addrsOf(as []*attached) []string {
	var s []string
	for _, a := range as {
		s = append(s, a.addr)
	}
	slices.Sort(s)
	return s
}

// digResult is dig's answer as the tests check it.
type digResult struct {
	Status                        string          // NOERROR, NXDOMAIN, …
	Flags                         map[string]bool // qr, aa, tc, rd, ra
	Answer, Authority, Additional []digRR
	Proto                         string // UDP or TCP, from the SERVER line
	Out                           string
}

type digRR struct {
	Name string
	TTL  int
	Type string
	Data string
}

// dig runs dig in c against its resolv.conf (the mesh DNS address) and
// parses its output; a dig that gets no answer fails the test.
func dig(t *testing.T, ctx context.Context, c *testbed.Container, args ...string) digResult {
	t.Helper()
	r := digE(ctx, c, args...)
	if r.Status == "" {
		t.Fatalf("dig %v in %s: no answer\n%s", args, c, r.Out)
	}
	return r
}

// digE is dig that returns an empty Status when dig got no answer.
func digE(ctx context.Context, c *testbed.Container, args ...string) digResult {
	argv := append([]string{"dig", "+time=2", "+tries=2"}, args...)
	out, err := c.Exec(ctx, argv...)
	r := parseDig(string(out))
	if err != nil {
		r.Status = ""
		r.Out = fmt.Sprintf("%v\n%s", err, out)
	}
	return r
}

// digShort returns the answer's A, AAAA or PTR data in order; nil when dig got
// no answer.
func digShort(ctx context.Context, c *testbed.Container, args ...string) []string {
	r := digE(ctx, c, args...)
	var s []string
	for _, a := range r.Answer {
		if a.Type == "A" || a.Type == "AAAA" || a.Type == "PTR" {
			s = append(s, a.Data)
		}
	}
	return s
}

func parseDig(out string) digResult {
	r := digResult{Flags: map[string]bool{}, Out: out}
	var sec *[]digRR
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, ";; ->>HEADER<<-"):
			if _, after, ok := strings.Cut(line, "status: "); ok {
				r.Status, _, _ = strings.Cut(after, ",")
			}
			r.Answer, r.Authority, r.Additional = nil, nil, nil // a TCP retry prints a second answer
			r.Flags = map[string]bool{}
		case strings.HasPrefix(line, ";; flags:"):
			f, _, _ := strings.Cut(strings.TrimPrefix(line, ";; flags:"), ";")
			for _, x := range strings.Fields(f) {
				r.Flags[x] = true
			}
		case line == ";; ANSWER SECTION:":
			sec = &r.Answer
		case line == ";; AUTHORITY SECTION:":
			sec = &r.Authority
		case line == ";; ADDITIONAL SECTION:":
			sec = &r.Additional
		case strings.HasPrefix(line, ";; SERVER:"):
			if strings.HasSuffix(line, "(TCP)") {
				r.Proto = "TCP"
			} else if strings.HasSuffix(line, "(UDP)") {
				r.Proto = "UDP"
			}
		case line == "" || strings.HasPrefix(line, ";"):
			sec = nil
		case sec != nil:
			f := strings.Fields(line)
			if len(f) < 5 {
				continue
			}
			ttl, _ := strconv.Atoi(f[1])
			*sec = append(*sec, digRR{Name: f[0], TTL: ttl, Type: f[3], Data: strings.Join(f[4:], " ")})
		}
	}
	return r
}

// want checks the status and that the flags are set.
func (r digResult) want(t *testing.T, status string, flags ...string) {
	t.Helper()
	if r.Status != status {
		t.Errorf("status %s, want %s\n%s", r.Status, status, r.Out)
	}
	for _, f := range flags {
		if !r.Flags[f] {
			t.Errorf("flag %s missing\n%s", f, r.Out)
		}
	}
}

// data returns the data of the records of type typ in sec, in order.
func (r digResult) data(sec []digRR, typ string) []string {
	var s []string
	for _, rr := range sec {
		if rr.Type == typ {
			s = append(s, rr.Data)
		}
	}
	return s
}

// getentHosts runs `getent hosts name` in c: the addresses and the names
// (first column and second) of its lines.
func getentHosts(t *testing.T, ctx context.Context, c *testbed.Container, name string) (addrs, names []string) {
	t.Helper()
	out, err := c.Exec(ctx, "getent", "hosts", name)
	if err != nil {
		t.Fatalf("getent hosts %s: %v\n%s", name, err, out)
	}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if f := strings.Fields(line); len(f) >= 2 {
			addrs = append(addrs, f[0])
			names = append(names, f[1])
		}
	}
	return addrs, names
}

// dnsStats reads the zlmesh_dns_*_total counters of h's /metrics, keyed by
// the part between zlmesh_dns_ and _total.
func dnsStats(t *testing.T, h *testbed.Host) map[string]float64 {
	t.Helper()
	hc := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", h.Socket)
	}}, Timeout: 10 * time.Second}
	defer hc.CloseIdleConnections()
	resp, err := hc.Get("http://zlmesh/metrics")
	if err != nil {
		t.Fatalf("metrics of %s: %v", h.Name, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	m := map[string]float64{}
	for _, line := range strings.Split(string(body), "\n") {
		name, v, ok := strings.Cut(line, " ")
		key, isDNS := strings.CutPrefix(name, "zlmesh_dns_")
		if !ok || !isDNS {
			continue
		}
		f, err := strconv.ParseFloat(v, 64)
		if err != nil {
			t.Fatalf("metrics of %s: %q", h.Name, line)
		}
		m[strings.TrimSuffix(key, "_total")] = f
	}
	if _, ok := m["queries"]; !ok {
		t.Fatalf("metrics of %s have no zlmesh_dns_queries_total:\n%s", h.Name, body)
	}
	return m
}

func sorted(s []string) []string {
	s = slices.Clone(s)
	slices.Sort(s)
	return s
}

// isRotation reports whether b is a rotation of a.
func isRotation(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	if len(a) == 0 {
		return true
	}
	i := slices.Index(b, a[0])
	if i < 0 {
		return false
	}
	return slices.Equal(a, append(slices.Clone(b[i:]), b[:i]...))
}

// reverseName is the in-addr.arpa name of an IPv4 address.
func reverseName(addr string) string {
	p := strings.Split(addr, ".")
	slices.Reverse(p)
	return strings.Join(p, ".") + ".in-addr.arpa"
}
