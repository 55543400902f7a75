package tun

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"sync"
	"syscall"

	wgtun "golang.zx2c4.com/wireguard/tun"
	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/link/channel"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv6"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/stack/gro"
	"gvisor.dev/gvisor/pkg/tcpip/transport/icmp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/udp"
)

// UserStackNIC is the NIC id of a UserStack's only link.
const UserStackNIC tcpip.NICID = 1

// userStackBatch is how many packets one Read hands to WireGuard at most.
const userStackBatch = 64

// userStackQueue is the depth of the link's outbound queue (packets the
// stack sent that Read has not taken yet).
const userStackQueue = 1024

// UserStack is the device of userspace mode: a gVisor TCP/IP stack whose
// only link is this Device. Packets the stack sends come out of Read;
// packets given to Write reach the stack. Unlike CreateNetstack it exposes
// the stack (Stack) so callers can add forwarders and change its address
// (SetAddress) while it runs, as the node does when it renumbers.
//
// It starts with no address and a default route for IPv4 and IPv6 through
// its link: a socket of the stack reaches any address through WireGuard.
// ICMP echo to its address is answered by the stack itself. It is pure Go,
// needs no privilege and opens no file.
//
// Read blocks until a packet is there or the device is closed; Write never
// blocks for long (the stack processes each packet inline). After Close,
// Read and Write fail with os.ErrClosed.
type UserStack struct {
	ep     *channel.Endpoint
	link   *groLink
	st     *stack.Stack
	mtu    int
	events chan Event
	ctx    context.Context
	cancel context.CancelFunc

	// mu guards addrs.
	mu    sync.Mutex
	addrs [2]netip.Prefix // by family: IPv4, IPv6

	// groMu serializes Write (GRO keeps per-batch state) and guards gro.
	groMu sync.Mutex
	gro   gro.GRO

	closeOnce sync.Once
}

// groLink is the stack's link: the channel endpoint, remembering the
// dispatcher the stack attaches (Write hands it packets through GRO) and
// saying that received checksums need no second check. That is true of
// what Write delivers: GRO verifies the IPv4 and TCP checksums of every
// TCP segment it may coalesce (a coalesced segment's checksums are stale,
// so the stack must not check them again); everything else came through
// WireGuard, whose authentication covers the whole packet as the peer's
// stack made it.
type groLink struct {
	*channel.Endpoint
	mu   sync.Mutex
	disp stack.NetworkDispatcher
}

func (l *groLink) Attach(d stack.NetworkDispatcher) {
	l.mu.Lock()
	l.disp = d
	l.mu.Unlock()
	l.Endpoint.Attach(d)
}

func (l *groLink) Capabilities() stack.LinkEndpointCapabilities {
	return l.Endpoint.Capabilities() | stack.CapabilityRXChecksumOffload
}

func (l *groLink) dispatcher() stack.NetworkDispatcher {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.disp
}

var _ Device = (*UserStack)(nil)

// NewUserStack makes a UserStack with the given MTU (<= 0: DefaultMTU).
func NewUserStack(mtu int) (*UserStack, error) {
	mtu, err := checkMTU(mtu)
	if err != nil {
		return nil, fmt.Errorf("create userspace stack: %w", err)
	}
	st := stack.New(stack.Options{
		NetworkProtocols:   []stack.NetworkProtocolFactory{ipv4.NewProtocol, ipv6.NewProtocol},
		TransportProtocols: []stack.TransportProtocolFactory{tcp.NewProtocol, udp.NewProtocol, icmp.NewProtocol4, icmp.NewProtocol6},
		HandleLocal:        true,
	})
	fail := func(what string, e tcpip.Error) (*UserStack, error) {
		st.Close()
		return nil, fmt.Errorf("create userspace stack: %s: %v", what, e)
	}
	sack := tcpip.TCPSACKEnabled(true)
	if e := st.SetTransportProtocolOption(tcp.ProtocolNumber, &sack); e != nil {
		return fail("enable SACK", e)
	}
	// Larger buffers than gVisor's defaults: one stream through WireGuard
	// needs a window of a few MB to fill a fast link.
	rcv := tcpip.TCPReceiveBufferSizeRangeOption{Min: tcp.MinBufferSize, Default: 1 << 20, Max: 8 << 20}
	if e := st.SetTransportProtocolOption(tcp.ProtocolNumber, &rcv); e != nil {
		return fail("receive buffer", e)
	}
	snd := tcpip.TCPSendBufferSizeRangeOption{Min: tcp.MinBufferSize, Default: 1 << 20, Max: 8 << 20}
	if e := st.SetTransportProtocolOption(tcp.ProtocolNumber, &snd); e != nil {
		return fail("send buffer", e)
	}
	ep := channel.New(userStackQueue, uint32(mtu), "")
	link := &groLink{Endpoint: ep}
	if e := st.CreateNIC(UserStackNIC, link); e != nil {
		ep.Close()
		return fail("create NIC", e)
	}
	st.SetRouteTable([]tcpip.Route{
		{Destination: header.IPv4EmptySubnet, NIC: UserStackNIC},
		{Destination: header.IPv6EmptySubnet, NIC: UserStackNIC},
	})
	ctx, cancel := context.WithCancel(context.Background())
	s := &UserStack{ep: ep, link: link, st: st, mtu: mtu, events: make(chan Event, 1), ctx: ctx, cancel: cancel}
	s.gro.Init(true)
	s.events <- wgtun.EventUp
	return s, nil
}

// Stack is the gVisor stack, for dialing, listening and forwarders. The
// caller must not remove its NIC or close it; Close does.
func (s *UserStack) Stack() *stack.Stack { return s.st }

// Addr is the stack's current IPv4 address (zero before the first
// SetAddress of one).
func (s *UserStack) Addr() netip.Prefix {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.addrs[0]
}

// Addr6 is the stack's current IPv6 address (zero before the first
// SetAddress of one).
func (s *UserStack) Addr6() netip.Prefix {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.addrs[1]
}

// SetAddress makes addr the stack's only address of its family, replacing
// the previous one of that family (connections bound to it then fail); the
// other family's address stays. Idempotent.
func (s *UserStack) SetAddress(addr netip.Prefix) error {
	if err := checkAddress(addr); err != nil {
		return fmt.Errorf("userspace stack address: %w", err)
	}
	fam := 0
	if addr.Addr().Is6() {
		fam = 1
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	old := s.addrs[fam]
	if old == addr {
		return nil
	}
	proto := tcpip.NetworkProtocolNumber(ipv4.ProtocolNumber)
	if fam == 1 {
		proto = ipv6.ProtocolNumber
	}
	pa := tcpip.ProtocolAddress{
		Protocol:          proto,
		AddressWithPrefix: tcpip.AddressWithPrefix{Address: tcpip.AddrFromSlice(addr.Addr().AsSlice()), PrefixLen: addr.Bits()},
	}
	if e := s.st.AddProtocolAddress(UserStackNIC, pa, stack.AddressProperties{}); e != nil {
		if _, dup := e.(*tcpip.ErrDuplicateAddress); !dup {
			return fmt.Errorf("userspace stack: add address %s: %v", addr, e)
		}
	}
	if old.IsValid() && old.Addr() != addr.Addr() {
		s.st.RemoveAddress(UserStackNIC, tcpip.AddrFromSlice(old.Addr().AsSlice()))
	}
	s.addrs[fam] = addr
	// The stack only routes (and so answers) through the NIC: the
	// default routes stay; the prefix adds nothing to them.
	return nil
}

// Read hands the stack's next packets to WireGuard: it blocks for the first
// and takes the ones already queued behind it, up to len(bufs).
func (s *UserStack) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	pb := s.ep.ReadContext(s.ctx)
	if pb == nil {
		return 0, os.ErrClosed
	}
	n := 0
	for {
		sizes[n] = copyPacket(bufs[n][offset:], pb)
		pb.DecRef()
		n++
		if n == len(bufs) {
			return n, nil
		}
		if pb = s.ep.Read(); pb == nil {
			return n, nil
		}
	}
}

// copyPacket copies the whole packet pb into b (truncating if it does not
// fit, which an MTU-bounded link never makes happen) and returns its size.
func copyPacket(b []byte, pb *stack.PacketBuffer) int {
	n := 0
	for _, v := range pb.AsSlices() {
		n += copy(b[n:], v)
	}
	return n
}

// SetGRO switches receive coalescing on (the default) or off. With it, the
// TCP segments of one flow in one batch given to Write reach the stack as
// one larger segment (gVisor's GRO, which checks each one's checksums
// first), so the stack's TCP runs once per batch rather than per packet.
func (s *UserStack) SetGRO(on bool) {
	s.groMu.Lock()
	defer s.groMu.Unlock()
	s.gro.Init(on)
}

// Write gives packets from WireGuard to the stack. Packets that are not
// IPv4 or IPv6 are dropped with EAFNOSUPPORT. Writes are serialized.
func (s *UserStack) Write(bufs [][]byte, offset int) (int, error) {
	if s.ctx.Err() != nil {
		return 0, os.ErrClosed
	}
	s.groMu.Lock()
	defer s.groMu.Unlock()
	if s.gro.Dispatcher = s.link.dispatcher(); s.gro.Dispatcher == nil {
		return 0, os.ErrClosed
	}
	defer s.gro.Flush()
	for _, b := range bufs {
		pkt := b[offset:]
		if len(pkt) == 0 {
			continue
		}
		var proto tcpip.NetworkProtocolNumber
		switch pkt[0] >> 4 {
		case 4:
			proto = header.IPv4ProtocolNumber
		case 6:
			proto = header.IPv6ProtocolNumber
		default:
			return 0, syscall.EAFNOSUPPORT
		}
		pb := stack.NewPacketBuffer(stack.PacketBufferOptions{Payload: buffer.MakeWithData(pkt)})
		pb.NetworkProtocolNumber = proto
		s.gro.Enqueue(pb)
		pb.DecRef()
	}
	return len(bufs), nil
}

// BatchSize is how many packets Read may return at once.
func (s *UserStack) BatchSize() int { return userStackBatch }

// File is nil: there is no file behind a userspace stack.
func (s *UserStack) File() *os.File { return nil }

// MTU of the stack's link.
func (s *UserStack) MTU() (int, error) { return s.mtu, nil }

// Name is "userspace".
func (s *UserStack) Name() (string, error) { return "userspace", nil }

// Events sends wireguard-go's EventUp once.
func (s *UserStack) Events() <-chan Event { return s.events }

// Close stops the stack: its connections fail, Read returns os.ErrClosed.
// It may be called more than once.
func (s *UserStack) Close() error {
	s.closeOnce.Do(func() {
		s.cancel()
		s.st.Close()
		s.ep.Close()
		s.st.Wait()
		close(s.events)
	})
	return nil
}
