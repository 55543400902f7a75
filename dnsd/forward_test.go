package dnsd

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// upstream is a real DNS server on 127.0.0.1 (UDP and TCP on one random
// port) that answers a fixed set of names and counts what it is asked.
type upstream struct {
	addr string
	mu   sync.Mutex
	seen []string // "udp name type" per query
	// block, when non-nil, is waited on before answering "slow." names.
	block chan struct{}
}

func startUpstream(t testing.TB) *upstream {
	t.Helper()
	u := &upstream{}
	mux := dns.NewServeMux()
	mux.HandleFunc(".", u.handle)
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	u.addr = pc.LocalAddr().String()
	l, err := net.Listen("tcp", u.addr)
	if err != nil {
		pc.Close()
		t.Fatal(err)
	}
	for _, srv := range []*dns.Server{{PacketConn: pc, Handler: mux}, {Listener: l, Handler: mux}} {
		started := make(chan struct{})
		srv.NotifyStartedFunc = func() { close(started) }
		go srv.ActivateAndServe()
		<-started
		t.Cleanup(func() { srv.Shutdown() })
	}
	return u
}

func (u *upstream) handle(w dns.ResponseWriter, req *dns.Msg) {
	q := req.Question[0]
	netw := w.LocalAddr().Network()
	u.mu.Lock()
	u.seen = append(u.seen, fmt.Sprintf("%s %s %s", netw, strings.ToLower(q.Name), dns.TypeToString[q.Qtype]))
	block := u.block
	u.mu.Unlock()
	m := new(dns.Msg)
	m.SetReply(req)
	m.RecursionAvailable = true
	soa := &dns.SOA{Hdr: dns.RR_Header{Name: "example.", Rrtype: dns.TypeSOA, Class: dns.ClassINET, Ttl: 300},
		Ns: "ns.example.", Mbox: "h.example.", Serial: 1, Refresh: 1, Retry: 1, Expire: 1, Minttl: 30}
	a := func(name string, ttl uint32, ip string) dns.RR {
		return &dns.A{Hdr: dns.RR_Header{Name: name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: ttl}, A: net.ParseIP(ip)}
	}
	switch name := strings.ToLower(q.Name); {
	case name == "ext.example." && q.Qtype == dns.TypeA:
		m.Answer = []dns.RR{a(q.Name, 60, "192.0.2.1")}
	case name == "ext.example.":
		m.Ns = []dns.RR{soa}
	case name == "short.example.":
		m.Answer = []dns.RR{a(q.Name, 3, "192.0.2.3")}
	case name == "zero.example.":
		m.Answer = []dns.RR{a(q.Name, 0, "192.0.2.4")}
	case name == "big.example.":
		for i := range 100 {
			m.Answer = append(m.Answer, a(q.Name, 60, fmt.Sprintf("192.0.2.%d", i+1)))
		}
		if netw == "udp" {
			size := 512
			if opt := req.IsEdns0(); opt != nil {
				size = int(opt.UDPSize())
			}
			m.Truncate(size)
		}
	case strings.HasSuffix(name, "slow.example."):
		if block != nil {
			<-block
		} else {
			return // never answer
		}
		m.Answer = []dns.RR{a(q.Name, 60, "192.0.2.9")}
	case name == "fail.example.":
		m.Rcode = dns.RcodeServerFailure
	default:
		m.Rcode = dns.RcodeNameError
		m.Ns = []dns.RR{soa}
	}
	if opt := req.IsEdns0(); opt != nil {
		m.SetEdns0(4096, opt.Do())
	}
	w.WriteMsg(m)
}

func (u *upstream) queries() []string {
	u.mu.Lock()
	defer u.mu.Unlock()
	return slices.Clone(u.seen)
}

// deadUpstream returns a 127.0.0.1 address with nothing listening (UDP and
// TCP refused at once).
func deadUpstream(t testing.TB) string {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := pc.LocalAddr().String()
	pc.Close()
	return addr
}

// silentUpstream returns a 127.0.0.1 UDP address that reads and never
// answers.
func silentUpstream(t testing.TB) string {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	go func() {
		buf := make([]byte, 512)
		for {
			if _, _, err := pc.ReadFrom(buf); err != nil {
				return
			}
		}
	}()
	return pc.LocalAddr().String()
}

func TestForward(t *testing.T) {
	up := startUpstream(t)
	s := newTestServer(t, Config{Upstreams: []string{up.addr}})
	if err := s.SetSnapshot(testSnapshot()); err != nil {
		t.Fatal(err)
	}

	t.Run("answer", func(t *testing.T) {
		resp, _ := exchange(t, s, query("ext.example.", dns.TypeA, 0, false), false)
		if resp.Rcode != dns.RcodeSuccess || !slices.Equal(rdata(resp.Answer), []string{"192.0.2.1"}) {
			t.Fatalf("answer %v", resp)
		}
		if !resp.RecursionAvailable || resp.Authoritative {
			t.Errorf("RA %v AA %v, want RA and not AA", resp.RecursionAvailable, resp.Authoritative)
		}
		if resp.IsEdns0() != nil {
			t.Errorf("upstream's OPT leaked to a client without EDNS")
		}
	})
	t.Run("cache hit keeps the client's case", func(t *testing.T) {
		before := len(up.queries())
		hits := s.Stats().CacheHits
		resp, _ := exchange(t, s, query("EXT.Example.", dns.TypeA, 1232, false), false)
		if got := len(up.queries()) - before; got != 0 {
			t.Errorf("upstream asked %d more times, want 0 (cache)", got)
		}
		if s.Stats().CacheHits != hits+1 {
			t.Errorf("cache hits %d, want %d", s.Stats().CacheHits, hits+1)
		}
		if resp.Question[0].Name != "EXT.Example." || !strings.EqualFold(resp.Answer[0].Header().Name, "ext.example.") {
			t.Errorf("question %q answer owner %q", resp.Question[0].Name, resp.Answer[0].Header().Name)
		}
		if opt := resp.IsEdns0(); opt == nil || opt.UDPSize() != ourUDPSize {
			t.Errorf("OPT %v, want ours", opt)
		}
	})
	t.Run("DO bit is its own cache entry", func(t *testing.T) {
		before := len(up.queries())
		exchange(t, s, query("ext.example.", dns.TypeA, 1232, true), false)
		exchange(t, s, query("ext.example.", dns.TypeA, 1232, true), false)
		if got := len(up.queries()) - before; got != 1 {
			t.Errorf("upstream asked %d times, want 1", got)
		}
	})
	t.Run("TTL decrements", func(t *testing.T) {
		exchange(t, s, query("short.example.", dns.TypeA, 0, false), false)
		s.epoch = s.epoch.Add(-2 * time.Second) // two seconds pass
		resp, _ := exchange(t, s, query("short.example.", dns.TypeA, 0, false), false)
		if ttl := resp.Answer[0].Header().Ttl; ttl != 1 {
			t.Errorf("ttl %d after 2s of 3, want 1", ttl)
		}
		before := len(up.queries())
		s.epoch = s.epoch.Add(-2 * time.Second) // expired
		resp, _ = exchange(t, s, query("short.example.", dns.TypeA, 0, false), false)
		if got := len(up.queries()) - before; got != 1 || resp.Answer[0].Header().Ttl != 3 {
			t.Errorf("after expiry: upstream asked %d times, ttl %d; want 1 and 3", got, resp.Answer[0].Header().Ttl)
		}
	})
	t.Run("zero TTL is not cached", func(t *testing.T) {
		before := len(up.queries())
		exchange(t, s, query("zero.example.", dns.TypeA, 0, false), false)
		exchange(t, s, query("zero.example.", dns.TypeA, 0, false), false)
		if got := len(up.queries()) - before; got != 2 {
			t.Errorf("upstream asked %d times, want 2", got)
		}
	})
	t.Run("negative caching", func(t *testing.T) {
		before := len(up.queries())
		for _, q := range []struct {
			name  string
			qtype uint16
			rcode int
		}{{"missing.example.", dns.TypeA, dns.RcodeNameError}, {"ext.example.", dns.TypeMX, dns.RcodeSuccess}} {
			for i := range 2 {
				resp, _ := exchange(t, s, query(q.name, q.qtype, 0, false), false)
				if resp.Rcode != q.rcode || len(resp.Answer) != 0 || len(resp.Ns) != 1 {
					t.Fatalf("%s: %v", q.name, resp)
				}
				// SOA ttl is capped to its minimum (30), then decremented.
				if ttl := resp.Ns[0].Header().Ttl; ttl > 30 || (i == 0 && ttl != 30) {
					t.Errorf("%s: SOA ttl %d, want 30 at most", q.name, ttl)
				}
			}
		}
		if got := len(up.queries()) - before; got != 2 {
			t.Errorf("upstream asked %d times for 2 names asked twice, want 2", got)
		}
		s.epoch = s.epoch.Add(-31 * time.Second)
		exchange(t, s, query("missing.example.", dns.TypeA, 0, false), false)
		if got := len(up.queries()) - before; got != 3 {
			t.Errorf("negative answer not expired after its 30s: upstream asked %d times, want 3", got)
		}
	})
	t.Run("truncated upstream answer retried over TCP", func(t *testing.T) {
		before := len(up.queries())
		resp, size := exchange(t, s, query("big.example.", dns.TypeA, 0, true), true)
		if resp.Truncated || len(resp.Answer) != 100 {
			t.Errorf("tcp client: TC %v, %d answers, want 100", resp.Truncated, len(resp.Answer))
		}
		got := up.queries()[before:]
		if !slices.Equal(got, []string{"udp big.example. A", "tcp big.example. A"}) {
			t.Errorf("upstream saw %q, want udp then tcp", got)
		}
		// A UDP client gets the cached answer truncated to its buffer.
		resp, size = exchange(t, s, query("big.example.", dns.TypeA, 0, false), false)
		if !resp.Truncated || size > 512 || len(resp.Answer) == 0 {
			t.Errorf("udp client: TC %v size %d answers %d, want TC within 512", resp.Truncated, size, len(resp.Answer))
		}
		resp, size = exchange(t, s, query("big.example.", dns.TypeA, 1232, false), false)
		if !resp.Truncated || size > 1232 || resp.IsEdns0() == nil {
			t.Errorf("udp edns client: TC %v size %d, want TC within 1232 with OPT", resp.Truncated, size)
		}
	})
	t.Run("zone names are never forwarded", func(t *testing.T) {
		before := len(up.queries())
		for _, name := range []string{"web.zl.", "nope.zl.", "99.1.200.10.in-addr.arpa."} {
			exchange(t, s, query(name, dns.TypeA, 0, false), false)
		}
		if got := up.queries()[before:]; len(got) != 0 {
			t.Errorf("upstream saw %q", got)
		}
	})
}

func TestForwardFailover(t *testing.T) {
	up := startUpstream(t)
	tests := []struct {
		name      string
		upstreams func() []string
		qname     string
		rcode     int
		failures  uint64 // Stats.UpstreamFailures
	}{
		{"dead first", func() []string { return []string{deadUpstream(t), up.addr} }, "ext.example.", dns.RcodeSuccess, 1},
		{"silent first", func() []string { return []string{silentUpstream(t), up.addr} }, "ext.example.", dns.RcodeSuccess, 1},
		{"SERVFAIL passes on", func() []string { return []string{up.addr} }, "fail.example.", dns.RcodeServerFailure, 1},
		{"all dead", func() []string { return []string{deadUpstream(t), deadUpstream(t)} }, "ext.example.", dns.RcodeServerFailure, 2},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := newTestServer(t, Config{Upstreams: tc.upstreams(), Timeout: 200 * time.Millisecond})
			resp, _ := exchange(t, s, query(tc.qname, dns.TypeA, 0, false), false)
			if resp.Rcode != tc.rcode {
				t.Fatalf("rcode %s, want %s", dns.RcodeToString[resp.Rcode], dns.RcodeToString[tc.rcode])
			}
			if tc.rcode == dns.RcodeServerFailure && s.Stats().ServFail != 1 {
				t.Errorf("stats %+v, want one servfail", s.Stats())
			}
			if got := s.Stats().UpstreamFailures; got != tc.failures {
				t.Errorf("upstream failures %d, want %d", got, tc.failures)
			}
		})
	}
	t.Run("preferred upstream sticks", func(t *testing.T) {
		silent := silentUpstream(t)
		s := newTestServer(t, Config{Upstreams: []string{silent, up.addr}, Timeout: time.Second})
		exchange(t, s, query("ext.example.", dns.TypeA, 0, false), false)
		start := time.Now()
		exchange(t, s, query("missing.example.", dns.TypeA, 0, false), false)
		if d := time.Since(start); d >= time.Second {
			t.Errorf("second question took %s: the silent upstream was tried first again", d)
		}
	})
}

// TestObserve checks Config.Observe: one call per answered query, telling
// forwarded answers from the others; none for a dropped message.
func TestObserve(t *testing.T) {
	up := startUpstream(t)
	var mu sync.Mutex
	got := map[bool]int{}
	s := newTestServer(t, Config{Upstreams: []string{up.addr}, Observe: func(d time.Duration, fwd bool) {
		if d < 0 {
			t.Errorf("elapsed %s", d) // 0 is possible where the clock is coarse (Windows)
		}
		mu.Lock()
		got[fwd]++
		mu.Unlock()
	}})
	exchange(t, s, query("ext.example.", dns.TypeA, 0, false), false) // forwarded
	exchange(t, s, query("ext.example.", dns.TypeA, 0, false), false) // cache hit
	exchange(t, s, query("h1.node.zl.", dns.TypeA, 0, false), false)  // zone
	if _, err := s.Query(context.Background(), []byte{1, 2}, false); err == nil {
		t.Error("a two-byte message was answered")
	}
	mu.Lock()
	defer mu.Unlock()
	if got[true] != 1 || got[false] != 2 {
		t.Errorf("observed forwarded %d, others %d; want 1 and 2", got[true], got[false])
	}
}

func TestForwardTimeout(t *testing.T) {
	up := startUpstream(t)
	s := newTestServer(t, Config{
		Upstreams: []string{up.addr, silentUpstream(t), up.addr},
		Timeout:   150 * time.Millisecond, TotalTimeout: 400 * time.Millisecond,
	})
	start := time.Now()
	resp, _ := exchange(t, s, query("slow.example.", dns.TypeA, 0, false), false)
	elapsed := time.Since(start)
	if resp.Rcode != dns.RcodeServerFailure {
		t.Errorf("rcode %s, want SERVFAIL", dns.RcodeToString[resp.Rcode])
	}
	// Three attempts of 150ms would take 450ms; the total bound is 400ms.
	if elapsed < 300*time.Millisecond || elapsed > 2*time.Second {
		t.Errorf("SERVFAIL after %s, want the 400ms bound", elapsed)
	}
	t.Run("context ends the wait", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		defer cancel()
		wire, _ := query("other.slow.example.", dns.TypeA, 0, false).Pack()
		out, err := s.Query(ctx, wire, false)
		if err != nil {
			t.Fatal(err)
		}
		resp := new(dns.Msg)
		if err := resp.Unpack(out); err != nil || resp.Rcode != dns.RcodeServerFailure {
			t.Errorf("answer %v %v, want SERVFAIL", resp, err)
		}
	})
}

func TestForwardCoalesces(t *testing.T) {
	up := startUpstream(t)
	up.block = make(chan struct{})
	s := newTestServer(t, Config{Upstreams: []string{up.addr}})
	var wg sync.WaitGroup
	for range 20 {
		wg.Go(func() {
			resp, _ := exchange(t, s, query("slow.example.", dns.TypeA, 0, false), false)
			if len(resp.Answer) != 1 {
				t.Errorf("answer %v", resp)
			}
		})
	}
	// Let every query join the flight, then release the upstream.
	for deadline := time.Now().Add(2 * time.Second); len(up.queries()) == 0 && time.Now().Before(deadline); {
		time.Sleep(5 * time.Millisecond)
	}
	time.Sleep(50 * time.Millisecond)
	close(up.block)
	wg.Wait()
	if got := up.queries(); len(got) != 1 {
		t.Errorf("upstream saw %q, want one query", got)
	}
	st := s.Stats()
	if st.Forwarded+st.CacheHits != 20 || st.Queries != 20 {
		t.Errorf("stats %+v, want 20 queries all forwarded or cached", st)
	}
}

func TestCacheEviction(t *testing.T) {
	c := newCache(320)
	for i := range 3000 {
		key := fmt.Sprintf("k%d", i)
		c.put(&cacheEntry{key: key, expires: 1e12}, 0)
		if i == 10 {
			// Keep one entry hot: CLOCK gives it second chances.
			if c.get([]byte("k3"), 0) == nil {
				t.Fatal("k3 missing")
			}
		}
		if i%50 == 0 {
			c.get([]byte("k3"), 0)
		}
	}
	if n := c.len(); n > 320 || n < 300 {
		t.Errorf("cache holds %d entries, bound 320", n)
	}
	if c.get([]byte("k3"), 0) == nil {
		t.Errorf("recently used entry evicted")
	}
	if c.get([]byte("k2999"), 0) == nil {
		t.Errorf("newest entry missing")
	}
	if c.get([]byte("k2999"), 2e12) != nil {
		t.Errorf("expired entry served")
	}
}

func TestResolvConfUpstreams(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "resolv.conf")
	content := `# generated
nameserver 127.0.0.53
nameserver 192.0.2.10 # office
search example
nameserver ::1
nameserver 2001:db8::1
nameserver fe80::1%eth0
nameserver 192.0.2.10
nameserver not-an-ip
options edns0
`
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	got, err := ResolvConfUpstreams(path)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"192.0.2.10:53", "[2001:db8::1]:53"}
	if !slices.Equal(got, want) {
		t.Errorf("ResolvConfUpstreams = %q, want %q", got, want)
	}
	for _, u := range got {
		if _, err := netip.ParseAddrPort(u); err != nil {
			t.Errorf("%q does not parse as ip:port", u)
		}
	}
	if _, err := ResolvConfUpstreams(filepath.Join(dir, "missing")); err == nil || !strings.Contains(err.Error(), "missing") {
		t.Errorf("missing file: %v", err)
	}
}
