// Package dnsd is the mesh DNS server: the mesh zone built from replicated
// records, forwarding with a cache for everything else, and a transport-free
// Query core used both by the packet-path hook and by socket listeners.
//
// # Names
//
// With the default zone "zl." (Config.Zone), names are case-insensitive and
// answers echo the case of the question:
//
//	<service>.zl.              A/AAAA of every endpoint of the service on every
//	                           node, rotated per query (round robin)
//	<container>.<service>.zl.  A/AAAA of that container
//	<node>.node.zl.            A/AAAA of the node's overlay address ("node" is
//	                           reserved: no service may be named so)
//	<guest>.guest.zl.          A/AAAA of a guest (a plain WireGuard client of
//	                           a node; "guest" is reserved like "node")
//	_<proto>.<service>.zl.     SRV: one record per port and target, priority
//	                           and weight 0, target <container>.<service>.zl.
//	                           or <node>.node.zl.; the targets' addresses come
//	                           as additional records
//	zl.                        SOA and NS (the NS target is zl. itself, whose
//	                           A/AAAA are Config.Addr and Config.Addr6 when set)
//	x.y.z.w.in-addr.arpa.      PTR for addresses inside Config.Cluster (and
//	(and ip6.arpa)             Config.Cluster6): <container>.<service>.zl.,
//	                           <node>.node.zl. or <guest>.guest.zl.; unknown addresses there are
//	                           NXDOMAIN, never forwarded
//
// Dual stack: a record's IPv6 twin (Endpoint.Addr6, NodeRecord.Addr6,
// GuestRecord.Addr6) is served as AAAA at the same names as its A, with its
// own PTR under ip6.arpa, and SRV answers carry both as additional records.
// A name with A records but no twin answers AAAA with NODATA, never
// NXDOMAIN.
//
// A name that exists with other types (including empty non-terminals such
// as node.zl.) answers NOERROR with no records; a name that does not exist
// answers NXDOMAIN. Both carry the zone's SOA in the authority section, with
// the negative TTL equal to Config.TTL. Zone answers are authoritative (AA).
// Zone transfers are refused.
//
// # Forwarding
//
// Every other name goes to Config.Upstreams. The upstreams are tried in turn,
// one attempt each, starting with the one that answered last; each attempt
// is bounded by Config.Timeout and the whole query by Config.TotalTimeout.
// An upstream that times out, fails, or answers SERVFAIL or REFUSED passes
// the query to the next; when none answers, the client gets SERVFAIL. A
// truncated UDP answer is asked again over TCP of the same upstream.
// Concurrent identical questions share one upstream exchange. Answers are
// cached by (name, type, class, DO bit) for the smallest TTL of their
// records, negative answers for the SOA's negative TTL (RFC 2308), and served
// with their TTLs decremented; the cache holds Config.CacheSize entries and
// evicts with the CLOCK (second chance) algorithm.
//
// # Transport
//
// Query takes and returns wire messages. UDP answers are truncated (TC bit,
// whole records only) to the client's EDNS0 buffer size, at least 512 and at
// most 1232 bytes; TCP answers are whole. OPT is echoed with our UDP size
// (1232) and the client's DO bit; EDNS versions other than 0 get BADVERS.
//
// The hot path (zone answers and cache hits) parses and writes wire bytes by
// hand over records prebuilt in each snapshot, and allocates nothing besides
// the returned slice; github.com/miekg/dns handles the upstream messages.
package dnsd

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// Defaults.
const (
	DefaultZone      = "zl."
	DefaultTTL       = 5 * time.Second
	DefaultTimeout   = 2 * time.Second
	DefaultCacheSize = 10000
)

// DefaultAddr is the mesh DNS address: the same on every node, inside the
// reserved top block of the default cluster CIDR.
var DefaultAddr = netip.MustParseAddr("10.203.255.53")

// maxTTL bounds Config.TTL.
const maxTTL = 24 * time.Hour

// Config configures a Server. The zero value of every field selects its
// default.
type Config struct {
	// Zone is the mesh zone; default "zl.". Names may be given with or
	// without the trailing dot.
	Zone string
	// TTL of zone answers and of their negative answers (SOA minimum);
	// default 5s, whole seconds, at most 24h.
	TTL time.Duration
	// Addr is the mesh DNS address, served as the A or AAAA record of the
	// zone apex (the NS target). Zero: the apex has no address.
	Addr netip.Addr
	// Addr6 is the mesh DNS's IPv6 address (the twin of Addr), served as
	// the apex's AAAA record beside Addr. It must be IPv6. Zero: none.
	// Config only names the addresses; the node answers at each of them
	// with Hook and ListenShared.
	Addr6 netip.Addr
	// Cluster is the cluster CIDR: PTR names of addresses inside it are
	// answered locally (NXDOMAIN when unknown) and never forwarded. Zero:
	// no reverse zone. Cluster6 is the same for an IPv6 cluster prefix.
	Cluster  netip.Prefix
	Cluster6 netip.Prefix
	// Upstreams are the forwarders as "ip:port" (IPv6 as "[ip]:port"). Nil
	// means none: names outside the zones answer SERVFAIL. The node fills
	// it from the host's resolv.conf (ResolvConfUpstreams).
	Upstreams []string
	// Timeout bounds one attempt at one upstream; default 2s.
	Timeout time.Duration
	// TotalTimeout bounds one forwarded question over all attempts; default
	// twice Timeout.
	TotalTimeout time.Duration
	// CacheSize is the number of forwarded answers kept; default 10000.
	CacheSize int
	// Logger receives one line per event that matters; nil discards.
	Logger *slog.Logger
	// Observe, when not nil, is called once per answered query with the
	// time the server took to answer it (parse, zone or cache, upstream
	// exchange, encode), and whether an upstream was asked. It runs on
	// the query's path: it must be fast and safe for concurrent use.
	Observe func(elapsed time.Duration, forwarded bool)
}

// Stats are the Server's counters since New, for metrics. Every answered
// query counts in Queries and in at most one of Local, Forwarded, CacheHits,
// ServFail and FormErr (refused zone transfers count in Queries only).
type Stats struct {
	Queries   uint64 // queries answered
	Local     uint64 // answered from the zones (NXDOMAIN and NODATA included)
	Forwarded uint64 // answered by an upstream exchange (cache misses)
	CacheHits uint64 // answered from the cache
	ServFail  uint64 // answered SERVFAIL (no upstream, all upstreams failed)
	FormErr   uint64 // malformed queries answered FORMERR (or NOTIMP, BADVERS)
	// Dropped counts messages that got no answer: no header, not a query,
	// or more questions waiting on upstreams than a listener allows.
	Dropped uint64
	// UpstreamFailures counts failed attempts at one upstream (no answer
	// in time, a network error, an unusable answer); a question that one
	// upstream fails and the next answers counts one.
	UpstreamFailures uint64
}

// Server answers DNS queries. It is safe for concurrent use: queries never
// lock; SetSnapshot swaps the zone atomically.
type Server struct {
	cfg       Config
	log       *slog.Logger
	upstreams []string
	epoch     time.Time // base of the cache's monotonic clock

	zone  atomic.Pointer[zone]
	setMu sync.Mutex // serialises SetSnapshot

	cache     *cache
	flights   flights
	preferred atomic.Int32 // index of the upstream that answered last

	stats struct {
		queries, local, forwarded, cacheHits, servFail, formErr, dropped atomic.Uint64
		upstreamFailures                                                 atomic.Uint64
	}
}

// New validates cfg, fills its defaults and returns a Server with an empty
// mesh zone. It starts no goroutine; see Serve and Hook.
func New(cfg Config) (*Server, error) {
	if cfg.Zone == "" {
		cfg.Zone = DefaultZone
	}
	if _, err := wireName(cfg.Zone); err != nil || cfg.Zone == "." {
		return nil, fmt.Errorf("dnsd: zone %q: not a valid zone name", cfg.Zone)
	}
	if cfg.TTL == 0 {
		cfg.TTL = DefaultTTL
	}
	if cfg.TTL < time.Second || cfg.TTL > maxTTL || cfg.TTL%time.Second != 0 {
		return nil, fmt.Errorf("dnsd: ttl %s: must be whole seconds between 1s and %s", cfg.TTL, maxTTL)
	}
	if cfg.Addr6.IsValid() && (!cfg.Addr6.Is6() || cfg.Addr6.Is4In6()) {
		return nil, fmt.Errorf("dnsd: addr6 %s: not an IPv6 address", cfg.Addr6)
	}
	if cfg.Cluster.IsValid() && !cfg.Cluster.Addr().Is4() {
		return nil, fmt.Errorf("dnsd: cluster %s: not an IPv4 prefix (use Cluster6)", cfg.Cluster)
	}
	if cfg.Cluster6.IsValid() && !cfg.Cluster6.Addr().Is6() {
		return nil, fmt.Errorf("dnsd: cluster6 %s: not an IPv6 prefix", cfg.Cluster6)
	}
	for _, u := range cfg.Upstreams {
		ap, err := netip.ParseAddrPort(u)
		if err != nil || ap.Port() == 0 {
			return nil, fmt.Errorf("dnsd: upstream %q: want ip:port", u)
		}
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.TotalTimeout == 0 {
		cfg.TotalTimeout = 2 * cfg.Timeout
	}
	if cfg.Timeout < 0 || cfg.TotalTimeout < 0 {
		return nil, fmt.Errorf("dnsd: negative timeout")
	}
	if cfg.CacheSize == 0 {
		cfg.CacheSize = DefaultCacheSize
	}
	if cfg.CacheSize < 0 {
		return nil, fmt.Errorf("dnsd: cache size %d: negative", cfg.CacheSize)
	}
	s := &Server{
		cfg:       cfg,
		log:       cfg.Logger,
		upstreams: append([]string(nil), cfg.Upstreams...),
		epoch:     time.Now(),
		cache:     newCache(cfg.CacheSize),
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	s.flights.m = make(map[string]*flight)
	z, err := buildZone(&s.cfg, &Snapshot{}, uint32(time.Now().Unix()))
	if err != nil {
		return nil, fmt.Errorf("dnsd: build empty zone: %w", err)
	}
	s.zone.Store(z)
	return s, nil
}

// reversePrefixes are the cluster prefixes answered locally for PTR.
func (c *Config) reversePrefixes() []netip.Prefix {
	var ps []netip.Prefix
	for _, p := range []netip.Prefix{c.Cluster, c.Cluster6} {
		if p.IsValid() {
			ps = append(ps, p.Masked())
		}
	}
	return ps
}

// SetSnapshot replaces the mesh records with snap. Queries see either the
// old or the new records, never a mix, and never wait. Records that cannot
// be served (bad names, missing addresses, SRV targets that name nothing) are
// skipped and described in the returned error, which wraps ErrInvalidRecord;
// the rest is installed all the same. snap is not retained.
func (s *Server) SetSnapshot(snap Snapshot) error {
	s.setMu.Lock()
	defer s.setMu.Unlock()
	z, err := buildZone(&s.cfg, &snap, s.zone.Load().serial+1)
	s.zone.Store(z)
	if err != nil {
		return fmt.Errorf("dnsd: snapshot: %w", err)
	}
	return nil
}

// Stats returns the counters. It never blocks.
func (s *Server) Stats() Stats {
	return Stats{
		Queries:   s.stats.queries.Load(),
		Local:     s.stats.local.Load(),
		Forwarded: s.stats.forwarded.Load(),
		CacheHits: s.stats.cacheHits.Load(),
		ServFail:  s.stats.servFail.Load(),
		FormErr:   s.stats.formErr.Load(),
		Dropped:   s.stats.dropped.Load(),

		UpstreamFailures: s.stats.upstreamFailures.Load(),
	}
}

// Query answers one DNS message: req is the query as received (not
// retained), tcp tells the transport (UDP answers are truncated to the
// client's buffer size). The answer is a new slice owned by the caller. A
// malformed query with a parsable header gets a FORMERR answer; a message
// that is too short for a header, or that is a response, returns an error
// and should be dropped. Query blocks only while forwarding, for at most
// Config.TotalTimeout or until ctx ends (then the answer is SERVFAIL). Safe
// for concurrent use.
func (s *Server) Query(ctx context.Context, req []byte, tcp bool) ([]byte, error) {
	bp := bufPool.Get().(*[]byte)
	defer bufPool.Put(bp)
	out, fwd, err := s.answer((*bp)[:0], req, tcp)
	if err != nil {
		return nil, err
	}
	if fwd {
		out = s.answerForward(ctx, out[:0], req, tcp)
	}
	*bp = out[:0]
	return append([]byte(nil), out...), nil
}

var bufPool = sync.Pool{New: func() any { b := make([]byte, 0, 1024); return &b }}

// errDropped marks messages Query does not answer.
var errDropped = errors.New("dropped")

// answer appends the answer to req to dst when it can be given without
// waiting: zone answers, cache hits, errors. When the question must be
// forwarded it returns fwd true and dst unchanged.
func (s *Server) answer(dst []byte, msg []byte, tcp bool) (out []byte, fwd bool, err error) {
	if s.cfg.Observe != nil {
		start := time.Now()
		defer func() {
			if err == nil && !fwd {
				s.cfg.Observe(time.Since(start), false)
			}
		}()
	}
	var r request
	if err := parseRequest(msg, &r); err != nil {
		s.stats.dropped.Add(1)
		return dst, false, fmt.Errorf("dnsd: %w: %w", errDropped, err)
	}
	if r.rcode != rcodeSuccess {
		s.stats.queries.Add(1)
		s.stats.formErr.Add(1)
		return appendError(dst, &r, r.rcode, s.ra()), false, nil
	}
	z := s.zone.Load()
	if n := z.names[string(r.name())]; n != nil {
		s.stats.queries.Add(1)
		s.stats.local.Add(1)
		return s.appendLocal(dst, &r, n.apex, n, tcp), false, nil
	}
	if ap := z.apexOf(&r); ap != nil {
		s.stats.queries.Add(1)
		s.stats.local.Add(1)
		return s.appendLocal(dst, &r, ap, nil, tcp), false, nil
	}
	if r.qtype == typeAXFR || r.qtype == typeIXFR {
		s.stats.queries.Add(1)
		return appendError(dst, &r, rcodeRefused, s.ra()), false, nil
	}
	if len(s.upstreams) == 0 {
		s.stats.queries.Add(1)
		s.stats.servFail.Add(1)
		return appendError(dst, &r, rcodeServFail, false), false, nil
	}
	var kb [maxName + 5]byte
	if e := s.cache.get(cacheKey(kb[:0], &r), s.now()); e != nil {
		s.stats.queries.Add(1)
		s.stats.cacheHits.Add(1)
		return e.appendTo(dst, &r, s.now(), r.limit(tcp)), false, nil
	}
	return dst, true, nil
}

// ra is the RA bit: recursion is available when there are upstreams.
func (s *Server) ra() bool { return len(s.upstreams) > 0 }

// now is the cache clock: nanoseconds since New, monotonic.
func (s *Server) now() int64 { return int64(time.Since(s.epoch)) }

// apexOf returns the zone apex r's name falls under, or nil when the name is
// outside all our zones.
func (z *zone) apexOf(r *request) *apex {
	for i := 1; i < r.nlabels; i++ {
		if ap := z.apexes[string(r.key[r.labels[i]:r.keyLen])]; ap != nil {
			return ap
		}
	}
	return nil
}

// appendLocal appends the answer for a name in zone ap: the records of n
// of the question's type, NODATA when n has none, NXDOMAIN when n is nil.
func (s *Server) appendLocal(dst []byte, r *request, ap *apex, n *node, tcp bool) []byte {
	if r.qclass != classIN && r.qclass != classANY || r.qtype == typeAXFR || r.qtype == typeIXFR {
		return appendError(dst, r, rcodeRefused, s.ra())
	}
	start := len(dst)
	limit := start + r.limit(tcp)
	if r.edns {
		limit -= optRRLen
	}
	var flags uint16 = flagAA
	if s.ra() {
		flags |= flagRA
	}
	dst = appendHeader(dst, r, flags, 1, 0, 0, 0)
	dst = append(dst, r.question...)
	an, ns, ar := 0, 0, 0
	tc := false
	rcode := rcodeSuccess

	if n == nil {
		rcode = rcodeNXDomain
	} else {
		// add appends the records of one set, rotated by k.
		add := func(set [][]byte, k uint32) {
			for i := range set {
				if tc {
					return
				}
				rr := set[(int(k)+i)%len(set)]
				if len(dst)+2+len(rr) > limit {
					tc = true
					return
				}
				dst = appendPtr(dst, headerLen)
				dst = append(dst, rr...)
				an++
			}
		}
		var k uint32
		if len(n.a)+len(n.aaaa) > 1 {
			k = n.next.Add(1) - 1
		}
		switch r.qtype {
		case typeA:
			add(n.a, k)
		case typeAAAA:
			add(n.aaaa, k)
		case typeSRV:
			add(n.srv, 0)
		case typePTR:
			add(n.ptr, 0)
		case typeNS:
			add(n.ns, 0)
		case typeSOA:
			add(n.soa, 0)
		case typeANY:
			add(n.soa, 0)
			add(n.ns, 0)
			add(n.a, k)
			add(n.aaaa, k)
			add(n.srv, 0)
			add(n.ptr, 0)
		}
		if !tc && (r.qtype == typeSRV || r.qtype == typeANY) {
			for _, g := range n.glue {
				if len(dst)+len(g) > limit {
					break // additional records may be left out without TC
				}
				dst = append(dst, g...)
				ar++
			}
		}
	}
	if an == 0 && !tc {
		// Negative answer: the SOA, owned by the apex as the question
		// spelled it.
		if len(dst)+2+len(ap.soa) > limit {
			tc = true
		} else {
			dst = appendPtr(dst, headerLen+r.suffixOffset(ap.name))
			dst = append(dst, ap.soa...)
			ns++
		}
	}
	if tc {
		flags |= flagTC
	}
	if r.edns {
		dst = appendOPT(dst, r, rcodeSuccess)
		ar++
	}
	flags |= flagQR | r.flags&(opcodeMask|flagRD|flagCD) | uint16(rcode)
	dst[start+2] = byte(flags >> 8)
	dst[start+3] = byte(flags)
	setCounts(dst[start:], an, ns, ar)
	return dst
}
