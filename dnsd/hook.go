package dnsd

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sync"

	"github.com/zlmesh/zlmesh/tun"
)

// HookOrder is the order of the DNS hook among the outbound hooks: it runs
// before NAT and filtering (DESIGN.md: DNS intercept → NAT → filter), which
// should use larger orders.
const HookOrder = 100

// hookName names the hook in the Wrapper.
const hookName = "dnsd"

// packetPath is what the hook needs of tun.Wrapper; tests hand it a fake.
type packetPath interface {
	AddHook(dir tun.Direction, order int, name string, fn tun.HookFunc) (remove func())
	InjectInbound(pkt []byte) error
}

// Hook answers DNS for addrs (the mesh DNS addresses, usually DefaultAddr
// and on a dual-stack node its IPv6 twin) on w's packet path, so that DNS
// queries to them are answered locally and never reach WireGuard. It
// installs one outbound hook (order HookOrder) that, for packets whose
// destination is one of addrs:
//
//   - UDP to port 53: answers with the Query core and injects the answer
//     towards the OS (Consumed). Zone answers and cache hits are given
//     inline; questions that must go upstream are answered from a
//     goroutine (at most 1024 pending per address; beyond that they are
//     dropped and the client retries), so the packet path never waits on
//     an upstream. Answers are built as IPv4 or IPv6 packets from the
//     query's addressing (an IPv6 query behind extension headers gets a
//     plain IPv6 answer).
//   - TCP (any port): handed to a small gVisor TCP/IP stack per address
//     that owns only it and serves DNS over TCP on port 53 with the same
//     core (RFC 7766); its outbound segments are injected towards the OS.
//     Connections to other ports are reset by that stack (TCP RST).
//   - anything else (UDP to other ports, UDP fragments, ICMP, other
//     protocols): dropped.
//
// Packets to other destinations are accepted untouched after one address
// comparison per address: one hook serves all of addrs, so a second family
// costs the packet path a comparison, not a second hook. Each of addrs must
// be a valid address, IPv4 or IPv6, at least one, no two the same; the OS
// must route them into w's device. remove uninstalls the hook, stops the
// TCP stacks and waits for their connections and pending forwards to end;
// it may be called more than once. Several hooks may be installed on one
// Server.
func (s *Server) Hook(w *tun.Wrapper, addrs ...netip.Addr) (remove func(), err error) {
	if w == nil {
		return nil, errors.New("dnsd: hook: nil wrapper")
	}
	return s.hook(w, addrs...)
}

func (s *Server) hook(pp packetPath, addrs ...netip.Addr) (remove func(), err error) {
	if len(addrs) == 0 {
		return nil, errors.New("dnsd: hook: no address")
	}
	var hs addrHooks
	removeAll := func() {
		for _, h := range hs {
			h.stop()
		}
	}
	for _, addr := range addrs {
		addr = addr.Unmap()
		if !addr.IsValid() || addr.IsUnspecified() || addr.IsMulticast() {
			removeAll()
			return nil, fmt.Errorf("dnsd: hook: %v is not a usable DNS address", addr)
		}
		for _, h := range hs {
			if h.addr == addr {
				removeAll()
				return nil, fmt.Errorf("dnsd: hook: %v given twice", addr)
			}
		}
		h, err := s.newHook(pp, addr)
		if err != nil {
			removeAll()
			return nil, err
		}
		hs = append(hs, h)
	}
	fn := hs.outbound
	if len(hs) == 1 {
		fn = hs[0].outbound // one address: no loop
	}
	rm := pp.AddHook(tun.Outbound, HookOrder, hookName, fn)
	for _, h := range hs {
		s.log.Info("dnsd: answering on the packet path", "addr", h.addr)
	}
	var once sync.Once
	return func() {
		once.Do(func() {
			rm()
			removeAll()
		})
	}, nil
}

// newHook makes the hook of one address, its TCP stack running.
func (s *Server) newHook(pp packetPath, addr netip.Addr) (*hook, error) {
	ctx, cancel := context.WithCancel(context.Background())
	h := &hook{
		s:      s,
		pp:     pp,
		addr:   addr,
		ctx:    ctx,
		cancel: cancel,
		sem:    make(chan struct{}, maxPendingForwards),
	}
	h.bufs.New = func() any {
		return &hookBufs{answer: make([]byte, 0, ourUDPSize+optRRLen), packet: make([]byte, 0, 2048)}
	}
	ns, err := newNetstack(s, ctx, addr, pp.InjectInbound)
	if err != nil {
		cancel()
		return nil, fmt.Errorf("dnsd: hook %s: %w", addr, err)
	}
	h.ns = ns
	return h, nil
}

// stop ends one address's hook after the packet-path hook is removed (or
// never installed): no new forward starts, the TCP stack stops, pending
// forwards and connections end.
func (h *hook) stop() {
	h.mu.Lock()
	h.closed = true
	h.mu.Unlock()
	h.cancel()
	h.ns.close()
	h.wg.Wait()
	h.s.log.Info("dnsd: stopped answering on the packet path", "addr", h.addr)
}

// addrHooks are the hooks of several addresses behind one packet-path hook.
type addrHooks []*hook

// outbound runs on every packet from the OS: one comparison per address
// for packets to other destinations.
func (hs addrHooks) outbound(p *tun.Packet) tun.Verdict {
	for _, h := range hs {
		if p.Dst == h.addr {
			return h.serve(p)
		}
	}
	return tun.Accept
}

// hook answers one address behind a packet-path hook (addrHooks).
type hook struct {
	s      *Server
	pp     packetPath
	addr   netip.Addr
	ns     *netstack
	ctx    context.Context
	cancel context.CancelFunc
	sem    chan struct{} // pending forwarded UDP questions
	mu     sync.Mutex    // guards closed and wg.Add against remove's Wait
	closed bool
	wg     sync.WaitGroup
	bufs   sync.Pool // *hookBufs
}

// outbound runs on every packet from the OS; it must stay cheap for
// packets to other addresses.
func (h *hook) outbound(p *tun.Packet) tun.Verdict {
	if p.Dst != h.addr {
		return tun.Accept
	}
	return h.serve(p)
}

// serve handles one packet to h.addr.
func (h *hook) serve(p *tun.Packet) tun.Verdict {
	switch p.Proto {
	case tun.ProtoUDP:
		if p.DstPort != 53 || p.Payload == nil {
			return tun.Drop
		}
		return h.udp(p)
	case tun.ProtoTCP:
		h.ns.deliver(p.Version, p.Buf)
		return tun.Consumed
	}
	return tun.Drop
}

// udp answers one DNS query over UDP.
func (h *hook) udp(p *tun.Packet) tun.Verdict {
	b := h.bufs.Get().(*hookBufs)
	defer h.bufs.Put(b)
	out, fwd, err := h.s.answer(b.answer[:0], p.Payload, false)
	if err != nil {
		return tun.Drop
	}
	if !fwd {
		b.answer = out
		b.packet = tun.AppendUDPReply(b.packet[:0], p, out)
		h.inject(b.packet)
		return tun.Consumed
	}
	select {
	case h.sem <- struct{}{}:
	default:
		h.s.stats.dropped.Add(1)
		return tun.Drop
	}
	// The hook may still be called briefly after remove (see
	// tun.Wrapper.AddHook); no goroutine may start once remove waits.
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		<-h.sem
		return tun.Drop
	}
	h.wg.Add(1)
	h.mu.Unlock()
	req := append([]byte(nil), p.Payload...)
	// The reply needs only the addressing of p; p itself is reused.
	q := tun.Packet{Version: p.Version, Proto: p.Proto, Src: p.Src, Dst: p.Dst, SrcPort: p.SrcPort, DstPort: p.DstPort}
	go func() {
		defer h.wg.Done()
		defer func() { <-h.sem }()
		out := h.s.answerForward(h.ctx, nil, req, false)
		if h.ctx.Err() == nil {
			h.inject(tun.UDPReply(&q, out))
		}
	}()
	return tun.Consumed
}

// hookBufs are the buffers of one inline answer: the DNS message and the IP
// packet around it.
type hookBufs struct {
	answer, packet []byte
}

func (h *hook) inject(pkt []byte) {
	if len(pkt) == 0 {
		return
	}
	if err := h.pp.InjectInbound(pkt); err != nil {
		h.s.log.Debug("dnsd: inject answer", "err", err)
	}
}
