package dnsd

import (
	"context"
	"encoding/binary"
	"testing"

	"github.com/miekg/dns"
)

// FuzzQuery feeds arbitrary bytes to Query: it must not panic; a message
// with no header or that is a response is an error; everything else gets an
// answer that parses, carries the query's ID, and fits the transport.
func FuzzQuery(f *testing.F) {
	for _, q := range []*dns.Msg{
		query("web.zl.", dns.TypeA, 0, false),
		query("WEB.zl.", dns.TypeAAAA, 1232, true),
		query("_tcp.web.zl.", dns.TypeSRV, 4096, false),
		query("10.1.200.10.in-addr.arpa.", dns.TypePTR, 0, false),
		query(mustReverse("fd5a:1:0:8::28"), dns.TypePTR, 0, false),
		query("v6-1.v6only.zl.", dns.TypeAAAA, 1232, false),
		query("zl.", dns.TypeANY, 0, false),
		query("nope.zl.", dns.TypeANY, 512, false),
		query("big.zl.", dns.TypeA, 0, false),
		query("example.com.", dns.TypeA, 0, false),
	} {
		b, _ := q.Pack()
		f.Add(b, false)
		f.Add(b, true)
	}
	f.Add([]byte{}, false)
	f.Add(make([]byte, 12), false)
	s := newTestServer(f, Config{Cluster6: testCluster6, Addr: DefaultAddr, Addr6: testDNS6})
	snap := testSnapshot()
	snap.Endpoints = append(snap.Endpoints, bigSnapshot(60).Endpoints...)
	dual := dualSnapshot()
	snap.Endpoints = append(snap.Endpoints, dual.Endpoints[3]) // IPv6 only
	snap.Nodes = dual.Nodes                                    // with twins
	if err := s.SetSnapshot(snap); err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, msg []byte, tcp bool) {
		out, err := s.Query(context.Background(), msg, tcp)
		if err != nil {
			if len(msg) >= headerLen && msg[2]&0x80 == 0 {
				t.Fatalf("error %v for a query with a header", err)
			}
			return
		}
		if len(msg) < headerLen {
			t.Fatalf("answer to a message without header")
		}
		resp := new(dns.Msg)
		if err := resp.Unpack(out); err != nil {
			t.Fatalf("answer does not parse: %v\nquery %x\nanswer %x", err, msg, out)
		}
		if resp.Id != binary.BigEndian.Uint16(msg) || !resp.Response {
			t.Fatalf("answer id %d response %v for query id %d", resp.Id, resp.Response, binary.BigEndian.Uint16(msg))
		}
		if !tcp && len(out) > ourUDPSize {
			t.Fatalf("udp answer of %d bytes", len(out))
		}
	})
}

// FuzzCacheEntry stores arbitrary upstream answers and serves them: no
// panic, and what is served parses and fits the limit.
func FuzzCacheEntry(f *testing.F) {
	up := func(n int, edns bool) []byte {
		m := new(dns.Msg)
		m.SetQuestion("ext.example.", dns.TypeA)
		m.Response = true
		for i := range n {
			rr, _ := dns.NewRR("ext.example. 60 IN A 192.0.2." + string(rune('0'+i%10)))
			m.Answer = append(m.Answer, rr)
		}
		rr, _ := dns.NewRR("example. 300 IN SOA ns.example. h.example. 1 1 1 1 30")
		m.Ns = append(m.Ns, rr)
		if edns {
			m.SetEdns0(4096, true)
		}
		b, _ := m.Pack()
		return b
	}
	f.Add(up(1, false), uint16(0))
	f.Add(up(0, true), uint16(1232))
	f.Add(up(60, true), uint16(512))
	s := newTestServer(f, Config{})
	f.Fuzz(func(t *testing.T, answer []byte, edns uint16) {
		resp := new(dns.Msg)
		if resp.Unpack(answer) != nil || len(resp.Question) != 1 {
			return
		}
		q := query(resp.Question[0].Name, resp.Question[0].Qtype, edns, false)
		q.Question[0].Qclass = resp.Question[0].Qclass
		wire, err := q.Pack()
		if err != nil {
			return
		}
		var r request
		if parseRequest(wire, &r) != nil || r.rcode != rcodeSuccess {
			return
		}
		var kb [maxName + 5]byte
		e, err := s.newEntry(resp, string(cacheKey(kb[:0], &r)))
		if err != nil {
			return
		}
		for _, tcp := range []bool{false, true} {
			out := e.appendTo(nil, &r, s.now(), r.limit(tcp))
			if len(out) > r.limit(tcp) {
				t.Fatalf("served %d bytes, limit %d", len(out), r.limit(tcp))
			}
			m := new(dns.Msg)
			if err := m.Unpack(out); err != nil {
				t.Fatalf("served answer does not parse: %v\n%x", err, out)
			}
		}
	})
}
