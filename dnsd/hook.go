package dnsd

import (
	"context"
	"encoding/binary"
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

// Hook answers DNS for addr (the mesh DNS address) on w's packet path, so
// that DNS queries to it are answered locally and never reach WireGuard. It
// installs an outbound hook (order HookOrder) that, for packets whose
// destination is addr:
//
//   - UDP to port 53: answers with the Query core and injects the answer
//     towards the OS (Consumed). Zone answers and cache hits are given
//     inline; questions that must go upstream are answered from a
//     goroutine (at most 1024 pending; beyond that they are dropped and the
//     client retries), so the packet path never waits on an upstream.
//   - TCP (any port): handed to a small gVisor TCP/IP stack that owns only
//     addr and serves DNS over TCP on port 53 with the same core (RFC 7766);
//     its outbound segments are injected towards the OS. Connections to
//     other ports are reset by that stack (TCP RST).
//   - anything else (UDP to other ports, UDP fragments, ICMP, other
//     protocols): dropped.
//
// Packets to other destinations are accepted untouched after one address
// comparison. addr must be a valid address; it is usually DefaultAddr, and
// the OS must route it into w's device. remove uninstalls the hook, stops
// the TCP stack and waits for its connections and pending forwards to end;
// it may be called more than once. Several hooks (for example one per
// address) may be installed on one Server.
func (s *Server) Hook(w *tun.Wrapper, addr netip.Addr) (remove func(), err error) {
	if w == nil {
		return nil, errors.New("dnsd: hook: nil wrapper")
	}
	return s.hook(w, addr)
}

func (s *Server) hook(pp packetPath, addr netip.Addr) (remove func(), err error) {
	addr = addr.Unmap()
	if !addr.IsValid() || addr.IsUnspecified() || addr.IsMulticast() {
		return nil, fmt.Errorf("dnsd: hook: %v is not a usable DNS address", addr)
	}
	ctx, cancel := context.WithCancel(context.Background())
	h := &hook{
		s:      s,
		pp:     pp,
		addr:   addr,
		ctx:    ctx,
		cancel: cancel,
		sem:    make(chan struct{}, maxPendingForwards),
	}
	h.bufs.New = func() any { b := make([]byte, 0, 2048); return &b }
	ns, err := newNetstack(s, ctx, addr, pp.InjectInbound)
	if err != nil {
		cancel()
		return nil, fmt.Errorf("dnsd: hook %s: %w", addr, err)
	}
	h.ns = ns
	rm := pp.AddHook(tun.Outbound, HookOrder, hookName, h.outbound)
	s.log.Info("dnsd: answering on the packet path", "addr", addr)
	var once sync.Once
	return func() {
		once.Do(func() {
			rm()
			cancel()
			ns.close()
			h.wg.Wait()
			s.log.Info("dnsd: stopped answering on the packet path", "addr", addr)
		})
	}, nil
}

// hook is one installed packet-path hook.
type hook struct {
	s      *Server
	pp     packetPath
	addr   netip.Addr
	ns     *netstack
	ctx    context.Context
	cancel context.CancelFunc
	sem    chan struct{} // pending forwarded UDP questions
	wg     sync.WaitGroup
	bufs   sync.Pool // *[]byte answer buffers
}

// outbound runs on every packet from the OS; it must stay cheap for
// packets to other addresses.
func (h *hook) outbound(p *tun.Packet) tun.Verdict {
	if p.Dst != h.addr {
		return tun.Accept
	}
	switch p.Proto {
	case protoUDP:
		if p.DstPort != 53 || p.Payload == nil {
			return tun.Drop
		}
		return h.udp(p)
	case protoTCP:
		h.ns.deliver(p.Version, p.Buf)
		return tun.Consumed
	}
	return tun.Drop
}

// udp answers one DNS query over UDP.
func (h *hook) udp(p *tun.Packet) tun.Verdict {
	bp := h.bufs.Get().(*[]byte)
	defer h.bufs.Put(bp)
	hl := ipHeaderLen(p.Version) + udpHeaderLen
	buf := (*bp)[:hl]
	out, fwd, err := h.s.answer(buf, p.Payload, false)
	if err != nil {
		return tun.Drop
	}
	if !fwd {
		*bp = out[:0]
		h.inject(finishUDPReply(out, p))
		return tun.Consumed
	}
	select {
	case h.sem <- struct{}{}:
	default:
		h.s.stats.dropped.Add(1)
		return tun.Drop
	}
	req := append([]byte(nil), p.Payload...)
	// The reply needs only the addressing of p; p itself is reused.
	q := tun.Packet{Version: p.Version, Proto: p.Proto, Src: p.Src, Dst: p.Dst, SrcPort: p.SrcPort, DstPort: p.DstPort}
	h.wg.Go(func() {
		defer func() { <-h.sem }()
		out := h.s.answerForward(h.ctx, make([]byte, hl, hl+512), req, false)
		if h.ctx.Err() == nil {
			h.inject(finishUDPReply(out, &q))
		}
	})
	return tun.Consumed
}

func (h *hook) inject(pkt []byte) {
	if pkt == nil {
		return
	}
	if err := h.pp.InjectInbound(pkt); err != nil {
		h.s.log.Debug("dnsd: inject answer", "err", err)
	}
}

const (
	protoTCP      = 6
	protoUDP      = 17
	ipv4HeaderLen = 20
	ipv6HeaderLen = 40
	udpHeaderLen  = 8
)

func ipHeaderLen(version int) int {
	if version == 6 {
		return ipv6HeaderLen
	}
	return ipv4HeaderLen
}

// finishUDPReply fills the IP and UDP headers at the front of b (whose rest
// is the DNS answer) so that b answers p: from p.Dst:p.DstPort to
// p.Src:p.SrcPort, checksums computed (IPv4: DF, TTL 64; IPv6: hop limit
// 64). It returns nil for a packet that would not fit an IP packet.
func finishUDPReply(b []byte, p *tun.Packet) []byte {
	hl := ipHeaderLen(p.Version)
	udpLen := len(b) - hl
	if udpLen > 0xFFFF || (p.Version == 4 && len(b) > 0xFFFF) {
		return nil
	}
	ip, udp := b[:hl], b[hl:]
	clear(ip)
	if p.Version == 4 {
		ip[0] = 0x45
		binary.BigEndian.PutUint16(ip[2:], uint16(len(b)))
		binary.BigEndian.PutUint16(ip[6:], 0x4000) // DF
		ip[8] = 64
		ip[9] = protoUDP
		src, dst := p.Dst.As4(), p.Src.As4()
		copy(ip[12:16], src[:])
		copy(ip[16:20], dst[:])
		binary.BigEndian.PutUint16(ip[10:], ^fold(sum(ip, 0)))
	} else {
		ip[0] = 0x60
		binary.BigEndian.PutUint16(ip[4:], uint16(udpLen))
		ip[6] = protoUDP
		ip[7] = 64
		src, dst := p.Dst.As16(), p.Src.As16()
		copy(ip[8:24], src[:])
		copy(ip[24:40], dst[:])
	}
	binary.BigEndian.PutUint16(udp[0:], p.DstPort)
	binary.BigEndian.PutUint16(udp[2:], p.SrcPort)
	binary.BigEndian.PutUint16(udp[4:], uint16(udpLen))
	binary.BigEndian.PutUint16(udp[6:], 0)
	// Pseudo-header: addresses, protocol, UDP length.
	var acc uint64
	if p.Version == 4 {
		acc = sum(ip[12:20], 0)
	} else {
		acc = sum(ip[8:40], 0)
	}
	acc += protoUDP + uint64(udpLen)
	cs := ^fold(sum(udp, acc))
	if cs == 0 {
		cs = 0xFFFF // 0 means "no checksum"
	}
	binary.BigEndian.PutUint16(udp[6:], cs)
	return b
}

// sum adds b to acc as big-endian 16-bit words (Internet checksum).
func sum(b []byte, acc uint64) uint64 {
	for len(b) >= 2 {
		acc += uint64(binary.BigEndian.Uint16(b))
		b = b[2:]
	}
	if len(b) == 1 {
		acc += uint64(b[0]) << 8
	}
	return acc
}

func fold(acc uint64) uint16 {
	for acc > 0xFFFF {
		acc = acc>>16 + acc&0xFFFF
	}
	return uint16(acc)
}
