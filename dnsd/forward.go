package dnsd

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/miekg/dns"
)

// maxCacheTTL bounds how long a forwarded answer is cached, whatever its
// TTLs say.
const maxCacheTTL = time.Hour

// errUpstream is wrapped by the errors of failed upstream exchanges.
var errUpstream = errors.New("upstream failed")

// flights coalesces concurrent identical forwarded questions into one
// upstream exchange.
type flights struct {
	mu sync.Mutex
	m  map[string]*flight
}

// exchangeQuestion is what an upstream exchange asks.
type exchangeQuestion struct {
	name          []byte // lowercased wire form
	qtype, qclass uint16
	do            bool
}

type flight struct {
	done chan struct{}
	e    *cacheEntry // set before done is closed; nil on failure
}

// answerForward appends the answer to msg, asking the upstreams when the
// cache does not have it. msg must parse as a query (answer returned fwd).
func (s *Server) answerForward(ctx context.Context, dst []byte, msg []byte, tcp bool) []byte {
	var r request
	if err := parseRequest(msg, &r); err != nil || r.rcode != rcodeSuccess {
		// answer already accepted this message; parsing is deterministic.
		panic("dnsd: answerForward on a message answer did not forward")
	}
	if s.cfg.Observe != nil {
		defer s.observeForward(time.Now())
	}
	s.stats.queries.Add(1)
	var kb [maxName + 5]byte
	key := cacheKey(kb[:0], &r)
	if e := s.cache.get(key, s.now()); e != nil { // filled while we came here
		s.stats.cacheHits.Add(1)
		return e.appendTo(dst, &r, s.now(), r.limit(tcp))
	}
	e := s.resolve(ctx, &r, string(key))
	if e == nil {
		s.stats.servFail.Add(1)
		return appendError(dst, &r, rcodeServFail, true)
	}
	s.stats.forwarded.Add(1)
	return e.appendTo(dst, &r, s.now(), r.limit(tcp))
}

// observeForward reports a forwarded answer that started at start.
func (s *Server) observeForward(start time.Time) { s.cfg.Observe(time.Since(start), true) }

// resolve returns the upstream answer to r, sharing the exchange with
// concurrent identical questions, or nil when no upstream answered.
func (s *Server) resolve(ctx context.Context, r *request, key string) *cacheEntry {
	s.flights.mu.Lock()
	f := s.flights.m[key]
	if f == nil {
		// A flight that just ended stored its answer before leaving the
		// map: look again, so that every question joins a flight or finds
		// its answer, and upstreams are asked once.
		if e := s.cache.get([]byte(key), s.now()); e != nil {
			s.flights.mu.Unlock()
			return e
		}
	}
	leader := f == nil
	if leader {
		f = &flight{done: make(chan struct{})}
		s.flights.m[key] = f
	}
	s.flights.mu.Unlock()

	if leader {
		// The exchange belongs to every waiter, not to this caller: it is
		// bounded by TotalTimeout, not by ctx.
		q := exchangeQuestion{name: append([]byte(nil), r.name()...), qtype: r.qtype, qclass: r.qclass, do: r.do}
		go func() {
			f.e = s.exchangeAll(q, key)
			if f.e != nil && f.e.expires > f.e.stored {
				s.cache.put(f.e, f.e.stored)
			}
			s.flights.mu.Lock()
			delete(s.flights.m, key)
			s.flights.mu.Unlock()
			close(f.done)
		}()
	}
	select {
	case <-f.done:
		return f.e
	case <-ctx.Done():
		return nil
	}
}

// exchangeAll asks the upstreams in turn, starting with the one that
// answered last, until one gives a usable answer or TotalTimeout passes.
func (s *Server) exchangeAll(r exchangeQuestion, key string) *cacheEntry {
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.TotalTimeout)
	defer cancel()
	q := new(dns.Msg)
	q.Id = uint16(rand.Uint32())
	q.RecursionDesired = true
	q.Question = []dns.Question{{Name: presentWire(r.name), Qtype: r.qtype, Qclass: r.qclass}}
	q.SetEdns0(ourUDPSize, r.do)
	wire, err := q.Pack()
	if err != nil {
		s.log.Debug("dnsd: pack upstream query", "name", q.Question[0].Name, "err", err)
		return nil
	}
	first := int(s.preferred.Load())
	for i := range s.upstreams {
		if ctx.Err() != nil {
			break
		}
		idx := (first + i) % len(s.upstreams)
		up := s.upstreams[idx]
		resp, err := s.exchange(ctx, up, q, wire)
		if err != nil {
			s.stats.upstreamFailures.Add(1)
			s.log.Debug("dnsd: upstream attempt failed", "upstream", up, "name", q.Question[0].Name, "err", err)
			continue
		}
		e, err := s.newEntry(resp, key)
		if err != nil {
			s.stats.upstreamFailures.Add(1)
			s.log.Debug("dnsd: upstream answer unusable", "upstream", up, "name", q.Question[0].Name, "err", err)
			continue
		}
		if idx != first {
			s.preferred.Store(int32(idx))
		}
		return e
	}
	s.log.Warn("dnsd: no upstream answered", "name", q.Question[0].Name, "type", dns.TypeToString[r.qtype])
	return nil
}

// exchange asks one upstream over UDP, and again over TCP when the answer
// is truncated. The attempt is bounded by Timeout and by ctx.
func (s *Server) exchange(ctx context.Context, upstream string, q *dns.Msg, wire []byte) (*dns.Msg, error) {
	actx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	defer cancel()
	resp, err := exchangeConn(actx, "udp", upstream, q, wire)
	if err == nil && resp.Truncated {
		cancel()
		actx, cancel = context.WithTimeout(ctx, s.cfg.Timeout)
		defer cancel()
		resp, err = exchangeConn(actx, "tcp", upstream, q, wire)
	}
	if err != nil {
		return nil, err
	}
	switch resp.Rcode {
	case dns.RcodeSuccess, dns.RcodeNameError:
		return resp, nil
	default:
		return nil, fmt.Errorf("%w: %s answered %s", errUpstream, upstream, dns.RcodeToString[resp.Rcode])
	}
}

// exchangeConn sends wire (the packed q) to upstream over network ("udp" or
// "tcp") on a fresh socket and returns the matching answer. Over UDP,
// answers with a foreign ID or question are ignored (late or spoofed).
func exchangeConn(ctx context.Context, network, upstream string, q *dns.Msg, wire []byte) (*dns.Msg, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, network, upstream)
	if err != nil {
		return nil, fmt.Errorf("%w: dial %s %s: %w", errUpstream, network, upstream, err)
	}
	defer c.Close()
	if dl, ok := ctx.Deadline(); ok {
		c.SetDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { c.SetDeadline(time.Unix(1, 0)) })
	defer stop()

	if network == "tcp" {
		b := binary.BigEndian.AppendUint16(make([]byte, 0, 2+len(wire)), uint16(len(wire)))
		if _, err := c.Write(append(b, wire...)); err != nil {
			return nil, fmt.Errorf("%w: write tcp %s: %w", errUpstream, upstream, err)
		}
		var lb [2]byte
		if _, err := io.ReadFull(c, lb[:]); err != nil {
			return nil, fmt.Errorf("%w: read tcp %s: %w", errUpstream, upstream, err)
		}
		buf := make([]byte, binary.BigEndian.Uint16(lb[:]))
		if _, err := io.ReadFull(c, buf); err != nil {
			return nil, fmt.Errorf("%w: read tcp %s: %w", errUpstream, upstream, err)
		}
		resp, err := unpackAnswer(buf, q)
		if err != nil {
			return nil, fmt.Errorf("%w: tcp %s: %w", errUpstream, upstream, err)
		}
		return resp, nil
	}

	if _, err := c.Write(wire); err != nil {
		return nil, fmt.Errorf("%w: write udp %s: %w", errUpstream, upstream, err)
	}
	buf := make([]byte, maxTCPSize)
	for {
		n, err := c.Read(buf)
		if err != nil {
			return nil, fmt.Errorf("%w: read udp %s: %w", errUpstream, upstream, err)
		}
		if resp, err := unpackAnswer(buf[:n], q); err == nil {
			return resp, nil
		}
	}
}

// unpackAnswer parses b as the answer to q.
func unpackAnswer(b []byte, q *dns.Msg) (*dns.Msg, error) {
	resp := new(dns.Msg)
	if err := resp.Unpack(b); err != nil {
		return nil, fmt.Errorf("unpack answer: %w", err)
	}
	if !resp.Response || resp.Id != q.Id {
		return nil, fmt.Errorf("answer id %d is not for query id %d", resp.Id, q.Id)
	}
	if len(resp.Question) != 1 || !strings.EqualFold(resp.Question[0].Name, q.Question[0].Name) ||
		resp.Question[0].Qtype != q.Question[0].Qtype || resp.Question[0].Qclass != q.Question[0].Qclass {
		return nil, fmt.Errorf("answer question %v is not %v", resp.Question, q.Question)
	}
	return resp, nil
}

// newEntry turns an upstream answer into a cache entry: the OPT record
// removed, the question lowercased, negative answers' SOA TTL capped to the
// SOA minimum, and the lifetime set to the smallest TTL (RFC 2308 for
// negative answers, which without a SOA are not cached).
func (s *Server) newEntry(resp *dns.Msg, key string) (*cacheEntry, error) {
	if opt := resp.IsEdns0(); opt != nil && opt.ExtendedRcode() != 0 {
		return nil, fmt.Errorf("extended rcode %s", dns.RcodeToString[opt.ExtendedRcode()])
	}
	extra := resp.Extra[:0:0]
	for _, rr := range resp.Extra {
		if t := rr.Header().Rrtype; t != dns.TypeOPT && t != dns.TypeTSIG {
			extra = append(extra, rr)
		}
	}
	resp.Extra = extra
	resp.Id = 0
	resp.Question[0].Name = presentWire(wireLower(resp.Question[0].Name))
	resp.Compress = true

	ttl := uint32(maxCacheTTL / time.Second)
	negative := resp.Rcode == dns.RcodeNameError || len(resp.Answer) == 0
	if negative {
		var soa *dns.SOA
		for _, rr := range resp.Ns {
			if x, ok := rr.(*dns.SOA); ok {
				soa = x
				x.Hdr.Ttl = min(x.Hdr.Ttl, x.Minttl)
			}
		}
		if soa == nil {
			ttl = 0
		} else {
			ttl = min(ttl, soa.Hdr.Ttl)
		}
	}
	for _, sec := range [][]dns.RR{resp.Answer, resp.Ns, resp.Extra} {
		for _, rr := range sec {
			ttl = min(ttl, rr.Header().Ttl)
		}
	}
	msg, err := resp.Pack()
	if err != nil {
		return nil, fmt.Errorf("repack answer: %w", err)
	}
	if len(msg) > maxTCPSize {
		return nil, fmt.Errorf("answer of %d bytes", len(msg))
	}
	// What we serve must parse: miekg/dns unpacks some records it cannot
	// pack back (empty rdata), so check the round trip.
	if err := new(dns.Msg).Unpack(msg); err != nil {
		return nil, fmt.Errorf("repacked answer does not parse: %w", err)
	}
	name := key[:len(key)-5] // see cacheKey
	if len(msg) < headerLen+len(name) || string(msg[headerLen:headerLen+len(name)]) != name {
		return nil, fmt.Errorf("repacked question differs from %q", presentName([]byte(name)))
	}
	e := &cacheEntry{key: key, msg: msg}
	if !e.index() {
		return nil, fmt.Errorf("repacked answer does not parse")
	}
	e.stored = s.now()
	e.expires = e.stored + int64(ttl)*1e9
	return e, nil
}

// index fills e's record offsets by walking e.msg.
func (e *cacheEntry) index() bool {
	m := e.msg
	if len(m) < headerLen || binary.BigEndian.Uint16(m[4:]) != 1 {
		return false
	}
	e.an = int(binary.BigEndian.Uint16(m[6:]))
	e.ns = int(binary.BigEndian.Uint16(m[8:]))
	e.ar = int(binary.BigEndian.Uint16(m[10:]))
	off, ok := skipName(m, headerLen)
	if !ok || off+4 > len(m) {
		return false
	}
	off += 4
	for range e.an + e.ns + e.ar {
		if off, ok = skipName(m, off); !ok || off+10 > len(m) {
			return false
		}
		e.ttls = append(e.ttls, uint16(off+4))
		off += 10 + int(binary.BigEndian.Uint16(m[off+8:]))
		if off > len(m) {
			return false
		}
		e.ends = append(e.ends, uint16(off))
	}
	return off == len(m)
}

// presentWire converts a lowercased wire name to the presentation form
// miekg/dns uses, escaping what needs it.
func presentWire(b []byte) string {
	// Unpacking the name through miekg/dns gives its exact escaping.
	name, _, err := dns.UnpackDomainName(b, 0)
	if err != nil {
		return presentName(b)
	}
	return name
}

// wireLower converts a presentation name to lowercased wire form.
func wireLower(name string) []byte {
	b := make([]byte, 256)
	n, err := dns.PackDomainName(dns.Fqdn(name), b, 0, nil, false)
	if err != nil {
		return []byte{0}
	}
	b = b[:n]
	for i := 0; i < len(b) && b[i] != 0; i += 1 + int(b[i]) {
		for j := i + 1; j <= i+int(b[i]); j++ {
			if 'A' <= b[j] && b[j] <= 'Z' {
				b[j] += 'a' - 'A'
			}
		}
	}
	return b
}
