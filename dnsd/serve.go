package dnsd

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"

	"golang.org/x/net/ipv4"
)

// Limits of the socket and packet-path servers.
const (
	// maxPendingForwards bounds the questions waiting on upstreams at once
	// per listener; beyond it, new ones are dropped (the client retries).
	maxPendingForwards = 1024
	// maxTCPConns bounds concurrent TCP connections per listener; beyond it,
	// new connections are closed at once.
	maxTCPConns = 256
	// tcpIdleTimeout closes TCP connections that send nothing (RFC 7766
	// suggests seconds).
	tcpIdleTimeout = 10 * time.Second
)

// ListenShared opens n UDP sockets on addr that share it through
// SO_REUSEPORT (the kernel spreads datagrams over them, so n readers never
// wait on one socket's lock), and one TCP listener on addr; where
// SO_REUSEPORT is missing (not Linux) it opens one UDP socket. Serve each
// UDP socket (the first with the listener) to answer on all of them. On
// error nothing stays open.
func ListenShared(addr netip.AddrPort, n int) ([]net.PacketConn, net.Listener, error) {
	lc := net.ListenConfig{Control: reusePort}
	if !haveReusePort {
		n = 1
	}
	var pcs []net.PacketConn
	closeAll := func() {
		for _, pc := range pcs {
			pc.Close()
		}
	}
	for range max(n, 1) {
		pc, err := lc.ListenPacket(context.Background(), "udp", addr.String())
		if err != nil {
			closeAll()
			return nil, nil, fmt.Errorf("dnsd: listen udp %s: %w", addr, err)
		}
		pcs = append(pcs, pc)
	}
	l, err := net.Listen("tcp", addr.String())
	if err != nil {
		closeAll()
		return nil, nil, fmt.Errorf("dnsd: listen tcp %s: %w", addr, err)
	}
	return pcs, l, nil
}

// Serve answers DNS on pc (UDP) and l (TCP, RFC 7766: pipelined queries on
// one connection, answered in order) with the same core as Query. Either may
// be nil. Serve takes ownership of both: it closes them when ctx ends and
// then returns nil once every goroutine it started has stopped. It returns
// an error, after closing both, when one fails otherwise. Questions that
// must be forwarded are answered on their own goroutines, so one slow
// upstream never stalls the others.
func (s *Server) Serve(ctx context.Context, pc net.PacketConn, l net.Listener) error {
	if pc == nil && l == nil {
		return errors.New("dnsd: serve: no listener")
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	errc := make(chan error, 1)
	fail := func(err error) {
		select {
		case errc <- err:
		default:
		}
		cancel()
	}
	if pc != nil {
		s.log.Info("dnsd: serving udp", "addr", pc.LocalAddr())
		// Reads on one socket are serialised by its fd lock, so more
		// readers only overlap answering and writing with reading: one
		// per two cores (one on this project's two-core machines, which
		// measured the best latency).
		readers := max(1, runtime.GOMAXPROCS(0)/2)
		sem := make(chan struct{}, maxPendingForwards)
		for range readers {
			wg.Go(func() {
				if err := s.serveUDP(ctx, pc, sem, &wg); err != nil {
					fail(err)
				}
			})
		}
	}
	if l != nil {
		s.log.Info("dnsd: serving tcp", "addr", l.Addr())
		wg.Go(func() {
			if err := s.serveTCP(ctx, l, &wg); err != nil {
				fail(err)
			}
		})
	}
	<-ctx.Done()
	if pc != nil {
		pc.Close()
	}
	if l != nil {
		l.Close()
	}
	wg.Wait()
	select {
	case err := <-errc:
		return err
	default:
		return nil
	}
}

// udpBatch is how many datagrams one batched read or write moves.
const udpBatch = 32

// batchConn reads and writes datagrams in batches (recvmmsg, sendmmsg);
// x/net's ipv4 and ipv6 PacketConns are ones.
type batchConn interface {
	ReadBatch(ms []ipv4.Message, flags int) (int, error)
	WriteBatch(ms []ipv4.Message, flags int) (int, error)
}

// serveUDP reads queries from pc until ctx ends, answering zone questions
// and cache hits inline and forwarding on goroutines counted by wg.
func (s *Server) serveUDP(ctx context.Context, pc net.PacketConn, sem chan struct{}, wg *sync.WaitGroup) error {
	uc, _ := pc.(*net.UDPConn)
	if uc != nil {
		if bc := newBatchConn(uc); bc != nil {
			return s.serveUDPBatch(ctx, uc, bc, sem, wg)
		}
	}
	buf := make([]byte, maxTCPSize)
	out := make([]byte, 0, ourUDPSize+optRRLen)
	for {
		var (
			n    int
			ap   netip.AddrPort
			addr net.Addr
			err  error
		)
		if uc != nil {
			n, ap, err = uc.ReadFromUDPAddrPort(buf)
		} else {
			n, addr, err = pc.ReadFrom(buf)
		}
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				continue
			}
			return fmt.Errorf("dnsd: read udp %s: %w", pc.LocalAddr(), err)
		}
		resp, fwd, err := s.answer(out[:0], buf[:n], false)
		if err != nil {
			continue
		}
		if fwd {
			select {
			case sem <- struct{}{}:
			default:
				s.stats.dropped.Add(1)
				continue
			}
			req := append([]byte(nil), buf[:n]...)
			wg.Go(func() {
				defer func() { <-sem }()
				resp := s.answerForward(ctx, nil, req, false)
				if uc != nil {
					uc.WriteToUDPAddrPort(resp, ap)
				} else {
					pc.WriteTo(resp, addr)
				}
			})
			continue
		}
		if uc != nil {
			_, err = uc.WriteToUDPAddrPort(resp, ap)
		} else {
			_, err = pc.WriteTo(resp, addr)
		}
		if err != nil && ctx.Err() == nil {
			s.log.Debug("dnsd: write udp answer", "to", ap, "err", err)
		}
	}
}

// serveUDPBatch is serveUDP reading and writing up to udpBatch datagrams
// per system call.
func (s *Server) serveUDPBatch(ctx context.Context, uc *net.UDPConn, bc batchConn, sem chan struct{}, wg *sync.WaitGroup) error {
	rms := make([]ipv4.Message, udpBatch)
	wms := make([]ipv4.Message, udpBatch)
	outs := make([][]byte, udpBatch)
	for i := range rms {
		rms[i].Buffers = [][]byte{make([]byte, 4096)}
		wms[i].Buffers = make([][]byte, 1)
		outs[i] = make([]byte, 0, ourUDPSize+optRRLen)
	}
	for {
		n, err := bc.ReadBatch(rms, 0)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				continue
			}
			return fmt.Errorf("dnsd: read udp %s: %w", uc.LocalAddr(), err)
		}
		k := 0
		for i := range n {
			m := &rms[i]
			if m.Flags&msgTrunc != 0 { // larger than any query we take
				s.stats.dropped.Add(1)
				continue
			}
			req := m.Buffers[0][:m.N]
			resp, fwd, err := s.answer(outs[k][:0], req, false)
			if err != nil {
				continue
			}
			if fwd {
				select {
				case sem <- struct{}{}:
				default:
					s.stats.dropped.Add(1)
					continue
				}
				req := append([]byte(nil), req...)
				addr := m.Addr
				wg.Go(func() {
					defer func() { <-sem }()
					uc.WriteTo(s.answerForward(ctx, nil, req, false), addr)
				})
				continue
			}
			outs[k] = resp
			wms[k].Buffers[0] = resp
			wms[k].Addr = m.Addr
			k++
		}
		for off := 0; off < k; {
			w, err := bc.WriteBatch(wms[off:k], 0)
			if err != nil {
				if ctx.Err() == nil {
					s.log.Debug("dnsd: write udp answers", "err", err)
				}
				// Skip the datagram that failed; send the rest.
				w = max(w, 1)
			}
			off += w
		}
		for i := range k {
			wms[i].Addr = nil
		}
	}
}

// serveTCP accepts connections until ctx ends.
func (s *Server) serveTCP(ctx context.Context, l net.Listener, wg *sync.WaitGroup) error {
	sem := make(chan struct{}, maxTCPConns)
	for {
		c, err := l.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				continue
			}
			return fmt.Errorf("dnsd: accept tcp %s: %w", l.Addr(), err)
		}
		select {
		case sem <- struct{}{}:
		default:
			c.Close()
			continue
		}
		wg.Go(func() {
			defer func() { <-sem }()
			s.serveConn(ctx, c)
		})
	}
}

// serveConn answers length-prefixed queries on c, in order, until the peer
// closes, stays idle for tcpIdleTimeout, sends something that is not a
// query, or ctx ends. It closes c.
func (s *Server) serveConn(ctx context.Context, c net.Conn) {
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { c.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	r := bufio.NewReaderSize(c, 4096)
	w := bufio.NewWriterSize(c, 4096)
	var req []byte
	out := make([]byte, 2, 512)
	for {
		c.SetReadDeadline(time.Now().Add(tcpIdleTimeout))
		var lb [2]byte
		if _, err := io.ReadFull(r, lb[:]); err != nil {
			return
		}
		n := int(binary.BigEndian.Uint16(lb[:]))
		if cap(req) < n {
			req = make([]byte, n)
		}
		req = req[:n]
		if _, err := io.ReadFull(r, req); err != nil {
			return
		}
		resp, fwd, err := s.answer(out[:2], req, true)
		if err != nil {
			return
		}
		if fwd {
			resp = s.answerForward(ctx, out[:2], req, true)
		}
		out = resp
		binary.BigEndian.PutUint16(out, uint16(len(out)-2))
		c.SetWriteDeadline(time.Now().Add(tcpIdleTimeout))
		if _, err := w.Write(out); err != nil {
			return
		}
		// Flush unless the next query is already here (pipelining).
		if r.Buffered() == 0 {
			if err := w.Flush(); err != nil {
				return
			}
		}
	}
}

// ResolvConfUpstreams reads the nameservers of a resolv.conf file as
// upstreams ("ip:53", IPv6 bracketed). Loopback nameservers are dropped (a
// local stub such as systemd-resolved's 127.0.0.53 cannot be reached from
// where the mesh DNS runs, and may forward back to us), as are zoned
// link-local ones. An empty result is not an error.
func ResolvConfUpstreams(path string) ([]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("dnsd: read resolv.conf %s: %w", path, err)
	}
	defer f.Close()
	var ups []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if i := strings.IndexAny(line, "#;"); i >= 0 {
			line = line[:i]
		}
		fields := strings.Fields(line)
		if len(fields) < 2 || fields[0] != "nameserver" {
			continue
		}
		a, err := netip.ParseAddr(fields[1])
		if err != nil || a.IsLoopback() || a.IsUnspecified() || a.Zone() != "" {
			continue
		}
		u := netip.AddrPortFrom(a.Unmap(), 53).String()
		if !slices.Contains(ups, u) {
			ups = append(ups, u)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("dnsd: read resolv.conf %s: %w", path, err)
	}
	return ups, nil
}
