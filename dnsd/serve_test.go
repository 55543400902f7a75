package dnsd

import (
	"context"
	"encoding/binary"
	"io"
	"net"
	"slices"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// startServe runs s.Serve on 127.0.0.1 (UDP and TCP on one random port) and
// returns the address; the server is stopped at cleanup and must return nil.
func startServe(t *testing.T, s *Server) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", pc.LocalAddr().String())
	if err != nil {
		pc.Close()
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, pc, l) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Serve = %v, want nil after cancel", err)
			}
		case <-time.After(5 * time.Second):
			t.Errorf("Serve did not return after cancel")
		}
	})
	return pc.LocalAddr().String()
}

func TestServe(t *testing.T) {
	up := startUpstream(t)
	s := newTestServer(t, Config{Upstreams: []string{up.addr}})
	if err := s.SetSnapshot(bigSnapshot(40)); err != nil {
		t.Fatal(err)
	}
	addr := startServe(t, s)

	for _, tc := range []struct {
		name    string
		net     string
		qname   string
		answers int
		tc      bool
	}{
		{"udp zone truncated", "udp", "big.zl.", -1, true},
		{"tcp zone whole", "tcp", "big.zl.", 40, false},
		{"udp forwarded", "udp", "ext.example.", 1, false},
		{"tcp forwarded", "tcp", "ext.example.", 1, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := &dns.Client{Net: tc.net, Timeout: 2 * time.Second}
			resp, _, err := c.Exchange(query(tc.qname, dns.TypeA, 0, false), addr)
			if err != nil {
				t.Fatal(err)
			}
			if resp.Truncated != tc.tc || (tc.answers >= 0 && len(resp.Answer) != tc.answers) {
				t.Errorf("TC %v with %d answers, want TC %v with %d", resp.Truncated, len(resp.Answer), tc.tc, tc.answers)
			}
		})
	}

	t.Run("tcp pipelined", func(t *testing.T) {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(3 * time.Second))
		names := []string{"big.zl.", "ext.example.", "nope.zl.", "big-3.big.zl."}
		var batch []byte
		for i, name := range names {
			q := query(name, dns.TypeA, 0, false)
			q.Id = uint16(i + 1)
			wire, _ := q.Pack()
			batch = binary.BigEndian.AppendUint16(batch, uint16(len(wire)))
			batch = append(batch, wire...)
		}
		if _, err := c.Write(batch); err != nil {
			t.Fatal(err)
		}
		var ids []uint16
		for range names {
			var lb [2]byte
			if _, err := io.ReadFull(c, lb[:]); err != nil {
				t.Fatal(err)
			}
			b := make([]byte, binary.BigEndian.Uint16(lb[:]))
			if _, err := io.ReadFull(c, b); err != nil {
				t.Fatal(err)
			}
			m := new(dns.Msg)
			if err := m.Unpack(b); err != nil {
				t.Fatal(err)
			}
			ids = append(ids, m.Id)
		}
		if !slices.Equal(ids, []uint16{1, 2, 3, 4}) {
			t.Errorf("answers in order %v, want 1 2 3 4", ids)
		}
	})

	t.Run("garbage is dropped, server keeps serving", func(t *testing.T) {
		c, err := net.Dial("udp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.Write([]byte{1, 2, 3})
		cl := &dns.Client{Timeout: 2 * time.Second}
		if _, _, err := cl.Exchange(query("big-1.big.zl.", dns.TypeA, 0, false), addr); err != nil {
			t.Errorf("after garbage: %v", err)
		}
	})
}

func TestServeNoListener(t *testing.T) {
	s := newTestServer(t, Config{})
	if err := s.Serve(context.Background(), nil, nil); err == nil {
		t.Error("Serve(nil, nil) = nil, want an error")
	}
}
