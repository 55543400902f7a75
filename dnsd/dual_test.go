package dnsd

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/miekg/dns"
)

// The dual-stack mesh: every IPv4 address of the cluster has an IPv6 twin in
// testCluster6 (block i of the IPv4 cluster ↦ fd5a:1:0:i::/64, host offset
// kept, the way the node derives them), passed as the records' Addr6.
var testDNS6 = netip.MustParseAddr("fd5a:1:0:3ff::35") // twin of 10.200.255.245, in the top block

// twin6 is the IPv6 twin of a 10.200.0.0/16 address with /26 blocks.
func twin6(a string) netip.Addr {
	v4 := netip.MustParseAddr(a).As4()
	block := (uint16(v4[2])<<8 | uint16(v4[3])) >> 6
	host := v4[3] & 0x3f
	return netip.AddrFrom16([16]byte{0xfd, 0x5a, 0, 1, 0, 0, byte(block >> 8), byte(block), 15: host})
}

// dualSnapshot is testSnapshot with twins for everything but db-1 (an
// IPv4-only container) plus an IPv6-only container.
func dualSnapshot() Snapshot {
	v4 := netip.MustParseAddr
	return Snapshot{
		Endpoints: []Endpoint{
			{Service: "web", Container: "web-1", Node: "a", Addr: v4("10.200.1.10"), Addr6: twin6("10.200.1.10")},
			{Service: "web", Container: "web-2", Node: "b", Addr: v4("10.200.2.10"), Addr6: twin6("10.200.2.10")},
			{Service: "db", Container: "db-1", Node: "a", Addr: v4("10.200.1.20")},
			{Service: "v6only", Container: "v6-1", Node: "b", Addr6: twin6("10.200.2.40")},
		},
		Nodes: []NodeRecord{
			{Name: "a", Addr: v4("10.200.1.1"), Addr6: twin6("10.200.1.1")},
			{Name: "b", Addr: v4("10.200.2.1"), Addr6: twin6("10.200.2.1")},
		},
		Guests: []GuestRecord{
			{Name: "laptop", Node: "a", Addr: v4("10.200.1.30"), Addr6: twin6("10.200.1.30")},
		},
		Ports: []PortRecord{
			{Service: "web", Proto: "tcp", Port: 80},
			// A target given by its IPv6 twin names the same container.
			{Service: "web", Proto: "udp", Port: 53, Target: twin6("10.200.2.10")},
			{Service: "db", Proto: "tcp", Port: 5432, Target: v4("10.200.1.20")},
		},
	}
}

func TestTwin6(t *testing.T) {
	// The mapping the tests assume, spelled out once.
	for a, want := range map[string]string{
		"10.200.0.5":  "fd5a:1::5",
		"10.200.1.10": "fd5a:1:0:4::a",
		"10.200.2.40": "fd5a:1:0:8::28",
		"10.200.2.70": "fd5a:1:0:9::6",
	} {
		if got := twin6(a); got != netip.MustParseAddr(want) {
			t.Errorf("twin6(%s) = %s, want %s", a, got, want)
		}
	}
}

func TestQueryDualStack(t *testing.T) {
	s := newTestServer(t, Config{Cluster6: testCluster6, Addr: DefaultAddr, Addr6: testDNS6})
	if err := s.SetSnapshot(dualSnapshot()); err != nil {
		t.Fatalf("SetSnapshot: %v", err)
	}
	const rev6 = "0.0.0.0.1.0.0.0.a.5.d.f.ip6.arpa."
	runNameCases(t, s, []nameCase{
		{name: "service A", qname: "web.zl.", qtype: dns.TypeA,
			answer: []string{"10.200.1.10", "10.200.2.10"}},
		{name: "service AAAA", qname: "web.zl.", qtype: dns.TypeAAAA,
			answer: []string{"fd5a:1:0:4::a", "fd5a:1:0:8::a"}},
		{name: "container AAAA", qname: "Web-1.web.zl.", qtype: dns.TypeAAAA,
			answer: []string{"fd5a:1:0:4::a"}},
		{name: "container ANY has both", qname: "web-2.web.zl.", qtype: dns.TypeANY,
			answer: []string{"10.200.2.10", "fd5a:1:0:8::a"}},
		{name: "A-only container AAAA is NODATA", qname: "db-1.db.zl.", qtype: dns.TypeAAAA, soa: "zl."},
		{name: "A-only service AAAA is NODATA", qname: "db.zl.", qtype: dns.TypeAAAA, soa: "zl."},
		{name: "IPv6-only container AAAA", qname: "v6-1.v6only.zl.", qtype: dns.TypeAAAA,
			answer: []string{"fd5a:1:0:8::28"}},
		{name: "IPv6-only container A is NODATA", qname: "v6-1.v6only.zl.", qtype: dns.TypeA, soa: "zl."},
		{name: "unknown name AAAA is NXDOMAIN", qname: "nope.web.zl.", qtype: dns.TypeAAAA,
			rcode: dns.RcodeNameError, soa: "zl."},
		{name: "node AAAA", qname: "b.node.zl.", qtype: dns.TypeAAAA, answer: []string{"fd5a:1:0:8::1"}},
		{name: "node A", qname: "b.node.zl.", qtype: dns.TypeA, answer: []string{"10.200.2.1"}},
		{name: "guest AAAA", qname: "laptop.guest.zl.", qtype: dns.TypeAAAA, answer: []string{"fd5a:1:0:4::1e"}},
		{name: "apex A", qname: "zl.", qtype: dns.TypeA, answer: []string{"10.203.255.53"}},
		{name: "apex AAAA is the DNS's IPv6 address", qname: "zl.", qtype: dns.TypeAAAA,
			answer: []string{"fd5a:1:0:3ff::35"}},
		{name: "apex NS", qname: "zl.", qtype: dns.TypeNS, answer: []string{"zl."}},
		{name: "SRV all endpoints: glue of both families", qname: "_tcp.web.zl.", qtype: dns.TypeSRV,
			answer: []string{"0 0 80 web-1.web.zl.", "0 0 80 web-2.web.zl."},
			extra:  []string{"10.200.1.10", "10.200.2.10", "fd5a:1:0:4::a", "fd5a:1:0:8::a"}},
		{name: "SRV target by its IPv6 twin", qname: "_udp.web.zl.", qtype: dns.TypeSRV,
			answer: []string{"0 0 53 web-2.web.zl."}, extra: []string{"10.200.2.10", "fd5a:1:0:8::a"}},
		{name: "SRV target without twin", qname: "_tcp.db.zl.", qtype: dns.TypeSRV,
			answer: []string{"0 0 5432 db-1.db.zl."}, extra: []string{"10.200.1.20"}},
		{name: "PTR v4 container", qname: "10.1.200.10.in-addr.arpa.", qtype: dns.TypePTR, answer: []string{"web-1.web.zl."}},
		{name: "PTR v6 container", qname: mustReverse("fd5a:1:0:4::a"), qtype: dns.TypePTR, answer: []string{"web-1.web.zl."}},
		{name: "PTR v6 upper case", qname: "A.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.4.0.0.0.0.0.0.0.1.0.0.0.A.5.D.F.IP6.ARPA.", qtype: dns.TypePTR,
			answer: []string{"web-1.web.zl."}},
		{name: "PTR v6 IPv6-only container", qname: mustReverse("fd5a:1:0:8::28"), qtype: dns.TypePTR, answer: []string{"v6-1.v6only.zl."}},
		{name: "PTR v6 node", qname: mustReverse("fd5a:1:0:8::1"), qtype: dns.TypePTR, answer: []string{"b.node.zl."}},
		{name: "PTR v6 guest", qname: mustReverse("fd5a:1:0:4::1e"), qtype: dns.TypePTR, answer: []string{"laptop.guest.zl."}},
		{name: "PTR v6 unknown in cluster6 is NXDOMAIN", qname: mustReverse("fd5a:1:0:4::b"), qtype: dns.TypePTR,
			rcode: dns.RcodeNameError, soa: rev6},
		{name: "PTR v6 name of a twin asked AAAA is NODATA", qname: mustReverse("fd5a:1:0:4::a"), qtype: dns.TypeAAAA, soa: rev6},
		{name: "ip6.arpa partial name is NODATA", qname: "4.0.0.0." + rev6, qtype: dns.TypePTR, soa: rev6},
		{name: "reverse apex v6 SOA", qname: rev6, qtype: dns.TypeSOA,
			answer: []string{fmt.Sprintf("zl. hostmaster.zl. %d 3600 600 86400 5", s.zone.Load().serial)}},
		{name: "reverse apex v6 NS", qname: rev6, qtype: dns.TypeNS, answer: []string{"zl."}},
		{name: "PTR v6 outside cluster6 is forwarded", qname: mustReverse("fd5a:2::1"), qtype: dns.TypePTR,
			rcode: dns.RcodeServerFailure},
	})
}

// TestQueryDualStackTwoEndpoints: a twin given as a second Endpoint (the
// older form) answers the same as Addr6.
func TestQueryDualStackTwoEndpoints(t *testing.T) {
	one := newTestServer(t, Config{Cluster6: testCluster6})
	two := newTestServer(t, Config{Cluster6: testCluster6})
	a, a6 := netip.MustParseAddr("10.200.1.10"), twin6("10.200.1.10")
	if err := one.SetSnapshot(Snapshot{Endpoints: []Endpoint{{Service: "web", Container: "web-1", Addr: a, Addr6: a6}}}); err != nil {
		t.Fatal(err)
	}
	if err := two.SetSnapshot(Snapshot{Endpoints: []Endpoint{
		{Service: "web", Container: "web-1", Addr: a},
		{Service: "web", Container: "web-1", Addr: a6},
	}}); err != nil {
		t.Fatal(err)
	}
	for _, q := range []struct {
		name  string
		qtype uint16
	}{
		{"web.zl.", dns.TypeA}, {"web.zl.", dns.TypeAAAA}, {"web-1.web.zl.", dns.TypeANY},
		{mustReverse(a6.String()), dns.TypePTR}, {mustReverse(a.String()), dns.TypePTR},
	} {
		r1, _ := exchange(t, one, query(q.name, q.qtype, 0, false), false)
		r2, _ := exchange(t, two, query(q.name, q.qtype, 0, false), false)
		if g1, g2 := rdata(r1.Answer), rdata(r2.Answer); !slices.Equal(g1, g2) || len(g1) == 0 {
			t.Errorf("%s %s: Addr6 form %q, two endpoints %q", q.name, dns.TypeToString[q.qtype], g1, g2)
		}
	}
}

func TestSnapshotBadAddr6(t *testing.T) {
	s := newTestServer(t, Config{Cluster6: testCluster6})
	a := netip.MustParseAddr("10.200.1.10")
	err := s.SetSnapshot(Snapshot{
		Endpoints: []Endpoint{
			{Service: "web", Container: "v4-as-6", Addr: a, Addr6: netip.MustParseAddr("10.200.1.11")},
			{Service: "web", Container: "mapped", Addr6: netip.MustParseAddr("::ffff:10.200.1.12")},
			{Service: "web", Container: "none"},
		},
		Nodes:  []NodeRecord{{Name: "n", Addr6: netip.MustParseAddr("10.200.1.13")}},
		Guests: []GuestRecord{{Name: "g"}},
	})
	if !errors.Is(err, ErrInvalidRecord) {
		t.Fatalf("SetSnapshot = %v, want ErrInvalidRecord", err)
	}
	for _, want := range []string{
		"endpoint web/v4-as-6: IPv6 address 10.200.1.11 is not IPv6",
		"endpoint web/mapped: IPv6 address ::ffff:10.200.1.12 is not IPv6",
		"endpoint web/none: no address",
		"node n: IPv6 address 10.200.1.13 is not IPv6",
		"guest g: no address",
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
	// The good address of a record with a bad twin is served; nothing else.
	runNameCases(t, s, []nameCase{
		{name: "IPv4 of a bad twin served", qname: "v4-as-6.web.zl.", qtype: dns.TypeA, answer: []string{"10.200.1.10"}},
		{name: "bad twin not served", qname: "v4-as-6.web.zl.", qtype: dns.TypeAAAA, soa: "zl."},
		{name: "no usable address", qname: "mapped.web.zl.", qtype: dns.TypeA, rcode: dns.RcodeNameError, soa: "zl."},
	})
}

func TestNewBadAddr6(t *testing.T) {
	for _, a := range []string{"10.203.255.53", "::ffff:10.203.255.53"} {
		if _, err := New(Config{Addr6: netip.MustParseAddr(a)}); err == nil {
			t.Errorf("New(Addr6 %s) = nil error", a)
		}
	}
	if _, err := New(Config{Addr: DefaultAddr, Addr6: testDNS6}); err != nil {
		t.Errorf("New(Addr6 %s): %v", testDNS6, err)
	}
}
