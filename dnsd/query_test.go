package dnsd

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
)

var (
	testCluster  = netip.MustParsePrefix("10.200.0.0/16")
	testCluster6 = netip.MustParsePrefix("fd5a:1::/48")
)

// testSnapshot is a small mesh: two services on two nodes, one IPv6
// container, ports for SRV.
func testSnapshot() Snapshot {
	return Snapshot{
		Endpoints: []Endpoint{
			{Service: "web", Container: "web-1", Node: "a", Addr: netip.MustParseAddr("10.200.1.10")},
			{Service: "web", Container: "web-2", Node: "b", Addr: netip.MustParseAddr("10.200.2.10")},
			{Service: "web", Container: "web-3", Node: "b", Addr: netip.MustParseAddr("10.200.2.11")},
			{Service: "web", Container: "web-3", Node: "b", Addr: netip.MustParseAddr("fd5a:1::2:11")},
			{Service: "db", Container: "db-1", Node: "a", Addr: netip.MustParseAddr("10.200.1.20")},
		},
		Nodes: []NodeRecord{
			{Name: "a", Addr: netip.MustParseAddr("10.200.1.1")},
			{Name: "b", Addr: netip.MustParseAddr("10.200.2.1")},
		},
		Guests: []GuestRecord{
			{Name: "laptop", Node: "a", Addr: netip.MustParseAddr("10.200.1.30")},
		},
		Ports: []PortRecord{
			{Service: "web", Proto: "tcp", Port: 80},
			{Service: "db", Proto: "tcp", Port: 5432, Target: netip.MustParseAddr("10.200.1.20")},
		},
	}
}

func newTestServer(t testing.TB, cfg Config) *Server {
	t.Helper()
	if !cfg.Cluster.IsValid() {
		cfg.Cluster = testCluster
	}
	s, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return s
}

// query builds a query for name/qtype; edns > 0 adds an OPT with that size.
func query(name string, qtype uint16, edns uint16, do bool) *dns.Msg {
	m := new(dns.Msg)
	m.SetQuestion(name, qtype)
	m.Id = 4242
	if edns > 0 {
		m.SetEdns0(edns, do)
	}
	return m
}

// exchange runs q through s.Query and unpacks the answer.
func exchange(t testing.TB, s *Server, q *dns.Msg, tcp bool) (*dns.Msg, int) {
	t.Helper()
	wire, err := q.Pack()
	if err != nil {
		t.Fatalf("pack query: %v", err)
	}
	out, err := s.Query(context.Background(), wire, tcp)
	if err != nil {
		t.Fatalf("Query(%s): %v", q.Question[0].Name, err)
	}
	resp := new(dns.Msg)
	if err := resp.Unpack(out); err != nil {
		t.Fatalf("unpack answer to %s (%d bytes): %v", q.Question[0].Name, len(out), err)
	}
	if resp.Id != q.Id || !resp.Response {
		t.Fatalf("answer id %d response %v, want id %d response", resp.Id, resp.Response, q.Id)
	}
	return resp, len(out)
}

// rdata renders the answer records' data, sorted, for comparison.
func rdata(rrs []dns.RR) []string {
	var out []string
	for _, rr := range rrs {
		s := rr.String()
		hdr := rr.Header().String()
		out = append(out, strings.TrimSpace(strings.TrimPrefix(s, hdr)))
	}
	slices.Sort(out)
	return out
}

func TestQueryNames(t *testing.T) {
	s := newTestServer(t, Config{Cluster6: testCluster6, Addr: DefaultAddr})
	if err := s.SetSnapshot(testSnapshot()); err != nil {
		t.Fatalf("SetSnapshot: %v", err)
	}
	runNameCases(t, s, []nameCase{
		{name: "service A", qname: "web.zl.", qtype: dns.TypeA,
			answer: []string{"10.200.1.10", "10.200.2.10", "10.200.2.11"}},
		{name: "service AAAA", qname: "web.zl.", qtype: dns.TypeAAAA,
			answer: []string{"fd5a:1::2:11"}},
		{name: "case-insensitive", qname: "WeB.Zl.", qtype: dns.TypeA,
			answer: []string{"10.200.1.10", "10.200.2.10", "10.200.2.11"}},
		{name: "container", qname: "web-2.web.zl.", qtype: dns.TypeA,
			answer: []string{"10.200.2.10"}},
		{name: "container AAAA", qname: "web-3.web.zl.", qtype: dns.TypeAAAA,
			answer: []string{"fd5a:1::2:11"}},
		{name: "node", qname: "b.node.zl.", qtype: dns.TypeA,
			answer: []string{"10.200.2.1"}},
		{name: "node upper case", qname: "A.NODE.ZL.", qtype: dns.TypeA,
			answer: []string{"10.200.1.1"}},
		{name: "guest", qname: "laptop.guest.zl.", qtype: dns.TypeA,
			answer: []string{"10.200.1.30"}},
		{name: "guest upper case", qname: "LAPTOP.Guest.zl.", qtype: dns.TypeA,
			answer: []string{"10.200.1.30"}},
		{name: "NXDOMAIN unknown guest", qname: "phone.guest.zl.", qtype: dns.TypeA, rcode: dns.RcodeNameError, soa: "zl."},
		{name: "NODATA guest label", qname: "guest.zl.", qtype: dns.TypeA, soa: "zl."},
		{name: "PTR guest", qname: "30.1.200.10.in-addr.arpa.", qtype: dns.TypePTR, answer: []string{"laptop.guest.zl."}},
		{name: "NODATA other type", qname: "db.zl.", qtype: dns.TypeAAAA, soa: "zl."},
		{name: "NODATA MX", qname: "web-1.web.zl.", qtype: dns.TypeMX, soa: "zl."},
		{name: "NODATA empty non-terminal", qname: "node.zl.", qtype: dns.TypeA, soa: "zl."},
		{name: "NXDOMAIN", qname: "nope.zl.", qtype: dns.TypeA, rcode: dns.RcodeNameError, soa: "zl."},
		{name: "NXDOMAIN case kept in SOA owner", qname: "Nope.ZL.", qtype: dns.TypeA, rcode: dns.RcodeNameError, soa: "ZL."},
		{name: "NXDOMAIN deep", qname: "x.web-1.web.zl.", qtype: dns.TypeA, rcode: dns.RcodeNameError, soa: "zl."},
		{name: "NXDOMAIN unknown node", qname: "c.node.zl.", qtype: dns.TypeA, rcode: dns.RcodeNameError, soa: "zl."},
		{name: "apex SOA", qname: "zl.", qtype: dns.TypeSOA,
			answer: []string{fmt.Sprintf("zl. hostmaster.zl. %d 3600 600 86400 5", s.zone.Load().serial)}},
		{name: "apex NS", qname: "zl.", qtype: dns.TypeNS, answer: []string{"zl."}},
		{name: "apex A is the DNS address", qname: "zl.", qtype: dns.TypeA, answer: []string{"10.203.255.53"}},
		{name: "SRV all endpoints", qname: "_tcp.web.zl.", qtype: dns.TypeSRV,
			answer: []string{"0 0 80 web-1.web.zl.", "0 0 80 web-2.web.zl.", "0 0 80 web-3.web.zl."},
			extra:  []string{"10.200.1.10", "10.200.2.10", "10.200.2.11", "fd5a:1::2:11"}},
		{name: "SRV one target", qname: "_TCP.db.zl.", qtype: dns.TypeSRV,
			answer: []string{"0 0 5432 db-1.db.zl."}, extra: []string{"10.200.1.20"}},
		{name: "SRV unknown proto", qname: "_udp.web.zl.", qtype: dns.TypeSRV, rcode: dns.RcodeNameError, soa: "zl."},
		{name: "PTR container", qname: "10.1.200.10.in-addr.arpa.", qtype: dns.TypePTR, answer: []string{"web-1.web.zl."}},
		{name: "PTR node", qname: "1.2.200.10.in-addr.arpa.", qtype: dns.TypePTR, answer: []string{"b.node.zl."}},
		{name: "PTR IPv6", qname: mustReverse("fd5a:1::2:11"), qtype: dns.TypePTR,
			answer: []string{"web-3.web.zl."}},
		{name: "PTR unknown in cluster", qname: "99.1.200.10.in-addr.arpa.", qtype: dns.TypePTR,
			rcode: dns.RcodeNameError, soa: "200.10.in-addr.arpa."},
		{name: "PTR partial name", qname: "1.200.10.in-addr.arpa.", qtype: dns.TypePTR, soa: "200.10.in-addr.arpa."},
		{name: "reverse apex SOA", qname: "200.10.in-addr.arpa.", qtype: dns.TypeSOA,
			answer: []string{fmt.Sprintf("zl. hostmaster.zl. %d 3600 600 86400 5", s.zone.Load().serial)}},
		{name: "outside without upstreams", qname: "example.com.", qtype: dns.TypeA, rcode: dns.RcodeServerFailure},
		{name: "PTR outside cluster is forwarded", qname: "1.0.0.127.in-addr.arpa.", qtype: dns.TypePTR, rcode: dns.RcodeServerFailure},
		{name: "zone transfer refused", qname: "zl.", qtype: dns.TypeAXFR, rcode: dns.RcodeRefused},
	})
}

// nameCase is one question to the zone and the answer it must get.
type nameCase struct {
	name   string
	qname  string
	qtype  uint16
	rcode  int
	answer []string // sorted rdata; nil means no answer records
	// soa is the owner of the SOA wanted in the authority section ("" means
	// none).
	soa   string
	extra []string // rdata of additional records (OPT excluded)
}

// runNameCases asks s each question over UDP and checks rcode, answer
// (owners echo the question, TTL 5), AA, the authority SOA and the
// additional records.
func runNameCases(t *testing.T, s *Server, tests []nameCase) {
	t.Helper()
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			resp, _ := exchange(t, s, query(tc.qname, tc.qtype, 0, false), false)
			if resp.Rcode != tc.rcode {
				t.Fatalf("rcode %s, want %s", dns.RcodeToString[resp.Rcode], dns.RcodeToString[tc.rcode])
			}
			if got := rdata(resp.Answer); !slices.Equal(got, tc.answer) {
				t.Errorf("answer %q, want %q", got, tc.answer)
			}
			for _, rr := range resp.Answer {
				if rr.Header().Name != tc.qname {
					t.Errorf("answer owner %q, want the question's %q", rr.Header().Name, tc.qname)
				}
				if rr.Header().Ttl != 5 {
					t.Errorf("answer ttl %d, want 5", rr.Header().Ttl)
				}
			}
			if resp.Question[0].Name != tc.qname {
				t.Errorf("question echoed as %q", resp.Question[0].Name)
			}
			if tc.rcode == dns.RcodeServerFailure || tc.rcode == dns.RcodeRefused {
				return
			}
			if !resp.Authoritative {
				t.Errorf("zone answer without AA")
			}
			if tc.soa == "" {
				if len(resp.Ns) != 0 {
					t.Errorf("authority %v, want none", resp.Ns)
				}
			} else {
				if len(resp.Ns) != 1 {
					t.Fatalf("authority %v, want one SOA", resp.Ns)
				}
				soa, ok := resp.Ns[0].(*dns.SOA)
				if !ok || soa.Hdr.Name != tc.soa || soa.Hdr.Ttl != 5 || soa.Minttl != 5 {
					t.Errorf("authority %v, want SOA of %s with ttl and minimum 5", resp.Ns[0], tc.soa)
				}
			}
			if got := rdata(resp.Extra); !slices.Equal(got, tc.extra) {
				t.Errorf("additional %q, want %q", got, tc.extra)
			}
		})
	}
}

func TestQueryRoundRobin(t *testing.T) {
	s := newTestServer(t, Config{})
	if err := s.SetSnapshot(testSnapshot()); err != nil {
		t.Fatal(err)
	}
	firsts := map[string]int{}
	for range 6 {
		resp, _ := exchange(t, s, query("web.zl.", dns.TypeA, 0, false), false)
		if len(resp.Answer) != 3 {
			t.Fatalf("answer %v, want 3 records", resp.Answer)
		}
		firsts[resp.Answer[0].(*dns.A).A.String()]++
	}
	if len(firsts) != 3 || firsts["10.200.1.10"] != 2 {
		t.Errorf("first records over 6 queries %v, want each of 3 twice", firsts)
	}
}

func TestQueryEDNS(t *testing.T) {
	s := newTestServer(t, Config{})
	if err := s.SetSnapshot(testSnapshot()); err != nil {
		t.Fatal(err)
	}
	t.Run("no OPT without EDNS", func(t *testing.T) {
		resp, _ := exchange(t, s, query("web.zl.", dns.TypeA, 0, false), false)
		if resp.IsEdns0() != nil {
			t.Errorf("OPT in answer to a query without one")
		}
	})
	for _, do := range []bool{false, true} {
		t.Run(fmt.Sprintf("OPT echoed do=%v", do), func(t *testing.T) {
			resp, _ := exchange(t, s, query("web.zl.", dns.TypeA, 4096, do), false)
			opt := resp.IsEdns0()
			if opt == nil {
				t.Fatal("no OPT in answer")
			}
			if opt.UDPSize() != ourUDPSize || opt.Do() != do || opt.Version() != 0 {
				t.Errorf("OPT size %d do %v version %d, want %d %v 0", opt.UDPSize(), opt.Do(), opt.Version(), ourUDPSize, do)
			}
		})
	}
	t.Run("OPT on NXDOMAIN", func(t *testing.T) {
		resp, _ := exchange(t, s, query("nope.zl.", dns.TypeA, 1232, false), false)
		if resp.IsEdns0() == nil || resp.Rcode != dns.RcodeNameError || len(resp.Ns) != 1 {
			t.Errorf("answer %v", resp)
		}
	})
	t.Run("BADVERS", func(t *testing.T) {
		q := query("web.zl.", dns.TypeA, 1232, false)
		q.IsEdns0().SetVersion(1)
		resp, _ := exchange(t, s, q, false)
		if resp.Rcode != dns.RcodeBadVers || len(resp.Answer) != 0 {
			t.Errorf("rcode %s, want BADVERS", dns.RcodeToString[resp.Rcode])
		}
	})
}

// bigSnapshot has a service of n IPv4 endpoints.
func bigSnapshot(n int) Snapshot {
	var snap Snapshot
	for i := range n {
		snap.Endpoints = append(snap.Endpoints, Endpoint{
			Service: "big", Container: fmt.Sprintf("big-%d", i), Node: "a",
			Addr: netip.AddrFrom4([4]byte{10, 200, byte(i / 200), byte(1 + i%200)}),
		})
	}
	return snap
}

func TestQueryTruncation(t *testing.T) {
	s := newTestServer(t, Config{})
	if err := s.SetSnapshot(bigSnapshot(40)); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		edns    uint16
		tcp     bool
		limit   int
		tc      bool
		answers int // exact count wanted, or -1 for "fewer than 40"
	}{
		{name: "udp no edns truncated at 512", limit: 512, tc: true, answers: -1},
		{name: "udp edns 512 truncated", edns: 512, limit: 512, tc: true, answers: -1},
		{name: "udp edns 1232 whole", edns: 1232, limit: 1232, answers: 40},
		{name: "udp edns 4096 whole", edns: 4096, limit: 1232, answers: 40},
		{name: "tcp whole", tcp: true, limit: maxTCPSize, answers: 40},
		{name: "tcp edns 512 whole", edns: 512, tcp: true, limit: maxTCPSize, answers: 40},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			resp, size := exchange(t, s, query("big.zl.", dns.TypeA, tc.edns, false), tc.tcp)
			if size > tc.limit {
				t.Errorf("answer of %d bytes, limit %d", size, tc.limit)
			}
			if resp.Truncated != tc.tc {
				t.Errorf("TC %v, want %v", resp.Truncated, tc.tc)
			}
			switch {
			case tc.answers < 0 && (len(resp.Answer) == 0 || len(resp.Answer) >= 40):
				t.Errorf("%d answers, want some but fewer than 40", len(resp.Answer))
			case tc.answers >= 0 && len(resp.Answer) != tc.answers:
				t.Errorf("%d answers, want %d", len(resp.Answer), tc.answers)
			}
			if tc.edns > 0 && resp.IsEdns0() == nil {
				t.Errorf("OPT lost in truncation")
			}
		})
	}
	t.Run("udp 4096 capped at 1232 for 100", func(t *testing.T) {
		if err := s.SetSnapshot(bigSnapshot(100)); err != nil {
			t.Fatal(err)
		}
		resp, size := exchange(t, s, query("big.zl.", dns.TypeA, 4096, false), false)
		if !resp.Truncated || size > ourUDPSize {
			t.Errorf("TC %v size %d, want TC within %d", resp.Truncated, size, ourUDPSize)
		}
		resp, _ = exchange(t, s, query("big.zl.", dns.TypeA, 4096, false), true)
		if resp.Truncated || len(resp.Answer) != 100 {
			t.Errorf("tcp: TC %v, %d answers, want 100", resp.Truncated, len(resp.Answer))
		}
	})
}

func TestQueryMalformed(t *testing.T) {
	s := newTestServer(t, Config{})
	good, _ := query("web.zl.", dns.TypeA, 0, false).Pack()
	withOPT, _ := query("web.zl.", dns.TypeA, 1232, false).Pack()
	hdr := func(flags uint16, qd, an, ns, ar uint16) []byte {
		return []byte{0x12, 0x34, byte(flags >> 8), byte(flags), byte(qd >> 8), byte(qd), byte(an >> 8), byte(an), byte(ns >> 8), byte(ns), byte(ar >> 8), byte(ar)}
	}
	cat := func(parts ...[]byte) []byte { return slices.Concat(parts...) }
	q := []byte("\x03web\x02zl\x00\x00\x01\x00\x01")
	opt := []byte("\x00\x00\x29\x04\xd0\x00\x00\x00\x00\x00\x00")
	tests := []struct {
		name  string
		msg   []byte
		drop  bool // Query returns an error
		rcode int
	}{
		{name: "empty", msg: nil, drop: true},
		{name: "short header", msg: good[:11], drop: true},
		{name: "response", msg: cat(hdr(0x8000, 1, 0, 0, 0), q), drop: true},
		{name: "header only", msg: hdr(0, 1, 0, 0, 0), rcode: dns.RcodeFormatError},
		{name: "no question", msg: hdr(0, 0, 0, 0, 0), rcode: dns.RcodeFormatError},
		{name: "two questions", msg: cat(hdr(0, 2, 0, 0, 0), q, q), rcode: dns.RcodeFormatError},
		{name: "answer in query", msg: cat(hdr(0, 1, 1, 0, 0), q), rcode: dns.RcodeFormatError},
		{name: "truncated name", msg: good[:16], rcode: dns.RcodeFormatError},
		{name: "truncated type", msg: good[:len(good)-2], rcode: dns.RcodeFormatError},
		{name: "pointer in question", msg: cat(hdr(0, 1, 0, 0, 0), []byte("\xc0\x0c\x00\x01\x00\x01")), rcode: dns.RcodeFormatError},
		{name: "label too long", msg: cat(hdr(0, 1, 0, 0, 0), []byte{64}, make([]byte, 64), []byte{0, 0, 1, 0, 1}), rcode: dns.RcodeFormatError},
		{name: "name too long", msg: cat(hdr(0, 1, 0, 0, 0), []byte(strings.Repeat("\x3f"+strings.Repeat("a", 63), 4)), []byte{0, 0, 1, 0, 1}), rcode: dns.RcodeFormatError},
		{name: "missing additional", msg: cat(hdr(0, 1, 0, 0, 1), q), rcode: dns.RcodeFormatError},
		{name: "two OPT", msg: cat(hdr(0, 1, 0, 0, 2), q, opt, opt), rcode: dns.RcodeFormatError},
		{name: "OPT not at root", msg: cat(hdr(0, 1, 0, 0, 1), q, []byte("\x01a"), opt[1:]), rcode: dns.RcodeFormatError},
		{name: "OPT bad option", msg: cat(hdr(0, 1, 0, 0, 1), q, opt[:len(opt)-2], []byte{0, 3, 0, 10, 0, 4}), rcode: dns.RcodeFormatError},
		{name: "truncated OPT", msg: withOPT[:len(withOPT)-3], rcode: dns.RcodeFormatError},
		{name: "opcode status", msg: cat(hdr(2<<11, 1, 0, 0, 0), q), rcode: dns.RcodeNotImplemented},
		{name: "trailing bytes are ignored", msg: cat(good, []byte{1, 2, 3}), rcode: dns.RcodeNameError},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			out, err := s.Query(context.Background(), tc.msg, false)
			if tc.drop {
				if err == nil || !errors.Is(err, errDropped) {
					t.Fatalf("Query = %x, %v; want a drop error", out, err)
				}
				return
			}
			if err != nil {
				t.Fatalf("Query: %v", err)
			}
			resp := new(dns.Msg)
			if err := resp.Unpack(out); err != nil {
				t.Fatalf("unpack %x: %v", out, err)
			}
			if wantID := uint16(tc.msg[0])<<8 | uint16(tc.msg[1]); resp.Rcode != tc.rcode || resp.Id != wantID || !resp.Response {
				t.Errorf("rcode %s id %x, want %s id %x", dns.RcodeToString[resp.Rcode], resp.Id, dns.RcodeToString[tc.rcode], wantID)
			}
		})
	}
}

func TestSetSnapshot(t *testing.T) {
	s := newTestServer(t, Config{})
	ask := func(name string) (int, []string) {
		resp, _ := exchange(t, s, query(name, dns.TypeA, 0, false), false)
		return resp.Rcode, rdata(resp.Answer)
	}
	if rc, _ := ask("web.zl."); rc != dns.RcodeNameError {
		t.Fatalf("empty server: web.zl. rcode %s", dns.RcodeToString[rc])
	}
	if err := s.SetSnapshot(testSnapshot()); err != nil {
		t.Fatal(err)
	}
	if rc, a := ask("web-1.web.zl."); rc != dns.RcodeSuccess || !slices.Equal(a, []string{"10.200.1.10"}) {
		t.Fatalf("after snapshot: %s %v", dns.RcodeToString[rc], a)
	}
	snap := testSnapshot()
	snap.Endpoints = slices.DeleteFunc(snap.Endpoints, func(e Endpoint) bool { return e.Container == "web-1" })
	snap.Endpoints = append(snap.Endpoints, Endpoint{Service: "cache", Container: "cache-1", Addr: netip.MustParseAddr("10.200.3.5")})
	serial := s.zone.Load().serial
	if err := s.SetSnapshot(snap); err != nil {
		t.Fatal(err)
	}
	if s.zone.Load().serial != serial+1 {
		t.Errorf("serial %d, want %d", s.zone.Load().serial, serial+1)
	}
	for _, tc := range []struct {
		name  string
		rcode int
		a     []string
	}{
		{"web-1.web.zl.", dns.RcodeNameError, nil},
		{"web.zl.", dns.RcodeSuccess, []string{"10.200.2.10", "10.200.2.11"}},
		{"cache.zl.", dns.RcodeSuccess, []string{"10.200.3.5"}},
		{"cache-1.cache.zl.", dns.RcodeSuccess, []string{"10.200.3.5"}},
	} {
		if rc, a := ask(tc.name); rc != tc.rcode || !slices.Equal(a, tc.a) {
			t.Errorf("%s: %s %v, want %s %v", tc.name, dns.RcodeToString[rc], a, dns.RcodeToString[tc.rcode], tc.a)
		}
	}
	ptr, _ := exchange(t, s, query("10.1.200.10.in-addr.arpa.", dns.TypePTR, 0, false), false)
	if ptr.Rcode != dns.RcodeNameError {
		t.Errorf("PTR of removed container: %s", dns.RcodeToString[ptr.Rcode])
	}
}

func TestSetSnapshotInvalid(t *testing.T) {
	s := newTestServer(t, Config{})
	snap := Snapshot{
		Endpoints: []Endpoint{
			{Service: "ok", Container: "ok-1", Addr: netip.MustParseAddr("10.200.1.2")},
			{Service: "bad name", Container: "x", Addr: netip.MustParseAddr("10.200.1.3")},
			{Service: "node", Container: "x", Addr: netip.MustParseAddr("10.200.1.4")},
			{Service: "ok", Container: "a.b", Addr: netip.MustParseAddr("10.200.1.5")},
			{Service: "ok", Container: "noaddr"},
			{Service: "_srv", Container: "x", Addr: netip.MustParseAddr("10.200.1.6")},
			{Service: "guest", Container: "y", Addr: netip.MustParseAddr("10.200.1.7")},
		},
		Nodes:  []NodeRecord{{Name: "", Addr: netip.MustParseAddr("10.200.1.1")}},
		Guests: []GuestRecord{{Name: "bad guest", Addr: netip.MustParseAddr("10.200.1.8")}, {Name: "noaddr-guest"}},
		Ports: []PortRecord{
			{Service: "ok", Proto: "tcp", Port: 0},
			{Service: "ok", Proto: "tcp", Port: 80, Target: netip.MustParseAddr("10.200.9.9")},
			{Service: "gone", Proto: "tcp", Port: 80},
		},
	}
	err := s.SetSnapshot(snap)
	if !errors.Is(err, ErrInvalidRecord) {
		t.Fatalf("SetSnapshot = %v, want ErrInvalidRecord", err)
	}
	for _, want := range []string{`"bad name"`, `reserved`, `"a.b"`, "noaddr", `"_srv"`, `node ""`, "port 0", "10.200.9.9", "gone/tcp", "guest/y", `guest "bad guest"`, "guest noaddr-guest"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error does not mention %s: %v", want, err)
		}
	}
	resp, _ := exchange(t, s, query("ok.zl.", dns.TypeA, 0, false), false)
	if got := rdata(resp.Answer); !slices.Equal(got, []string{"10.200.1.2"}) {
		t.Errorf("valid records not installed: %v", got)
	}
}

func TestNewValidates(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  Config
		want string
	}{
		{"bad zone", Config{Zone: "a..b"}, "zone"},
		{"root zone", Config{Zone: "."}, "zone"},
		{"ttl fraction", Config{TTL: 1500 * time.Millisecond}, "ttl"},
		{"ttl huge", Config{TTL: 48 * time.Hour}, "ttl"},
		{"cluster v6", Config{Cluster: testCluster6}, "cluster"},
		{"cluster6 v4", Config{Cluster6: testCluster}, "cluster6"},
		{"upstream name", Config{Upstreams: []string{"dns.example:53"}}, "upstream"},
		{"upstream no port", Config{Upstreams: []string{"192.0.2.1"}}, "upstream"},
		{"negative cache", Config{CacheSize: -1}, "cache"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := New(tc.cfg)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("New = %v, want an error about %s", err, tc.want)
			}
		})
	}
	s, err := New(Config{Zone: "Mesh.Example", TTL: 30 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	s.SetSnapshot(testSnapshot())
	resp, _ := exchange(t, s, query("web.mesh.example.", dns.TypeA, 0, false), false)
	if len(resp.Answer) != 3 || resp.Answer[0].Header().Ttl != 30 {
		t.Errorf("custom zone: %v", resp.Answer)
	}
}

func TestReverseZones(t *testing.T) {
	for _, tc := range []struct {
		prefix string
		want   []string
	}{
		{"10.200.0.0/16", []string{"200.10.in-addr.arpa."}},
		{"10.0.0.0/8", []string{"10.in-addr.arpa."}},
		{"10.200.0.0/15", []string{"200.10.in-addr.arpa.", "201.10.in-addr.arpa."}},
		{"10.200.255.0/24", []string{"255.200.10.in-addr.arpa."}},
		{"10.255.255.254/31", []string{"254.255.255.10.in-addr.arpa.", "255.255.255.10.in-addr.arpa."}},
		{"fd5a:1::/48", []string{"0.0.0.0.1.0.0.0.a.5.d.f.ip6.arpa."}},
		{"fd5a:1::/46", []string{"0.0.0.0.1.0.0.0.a.5.d.f.ip6.arpa.", "1.0.0.0.1.0.0.0.a.5.d.f.ip6.arpa.", "2.0.0.0.1.0.0.0.a.5.d.f.ip6.arpa.", "3.0.0.0.1.0.0.0.a.5.d.f.ip6.arpa."}},
		{"fc00::/7", []string{"c.f.ip6.arpa.", "d.f.ip6.arpa."}},
	} {
		t.Run(tc.prefix, func(t *testing.T) {
			var got []string
			for _, z := range reverseZones(netip.MustParsePrefix(tc.prefix)) {
				got = append(got, presentName(z))
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("reverseZones = %v, want %v", got, tc.want)
			}
		})
	}
}

func mustReverse(addr string) string {
	r, err := dns.ReverseAddr(addr)
	if err != nil {
		panic(err)
	}
	return r
}
