package dnsd

import (
	"context"
	"fmt"
	"net/netip"
	"sync"

	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/link/channel"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv6"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
)

// netstackMTU is the MTU of the stack's link. Segments stay within the
// client's MSS in any case; this only caps our side (tun.DefaultMTU).
const netstackMTU = 1420

// netstack terminates DNS over TCP for one address: a gVisor TCP/IP stack
// with that address only, fed the OS's packets to it by deliver, whose
// outbound packets are injected towards the OS.
type netstack struct {
	st     *stack.Stack
	ep     *channel.Endpoint
	l      *gonet.TCPListener
	proto  tcpip.NetworkProtocolNumber
	inject func([]byte) error
	wg     sync.WaitGroup
}

// newNetstack starts the stack and its two goroutines: the accept loop
// (serving each connection with s) and the loop that injects the stack's
// packets. Both stop when ctx ends and close is called.
func newNetstack(s *Server, ctx context.Context, addr netip.Addr, inject func([]byte) error) (*netstack, error) {
	n := &netstack{inject: inject}
	opts := stack.Options{TransportProtocols: []stack.TransportProtocolFactory{tcp.NewProtocol}}
	route := header.IPv4EmptySubnet
	if addr.Is4() {
		n.proto = ipv4.ProtocolNumber
		opts.NetworkProtocols = []stack.NetworkProtocolFactory{ipv4.NewProtocol}
	} else {
		n.proto = ipv6.ProtocolNumber
		opts.NetworkProtocols = []stack.NetworkProtocolFactory{ipv6.NewProtocol}
		route = header.IPv6EmptySubnet
	}
	n.st = stack.New(opts)
	sack := tcpip.TCPSACKEnabled(true)
	n.st.SetTransportProtocolOption(tcp.ProtocolNumber, &sack)
	n.ep = channel.New(256, netstackMTU, "")
	fail := func(what string, err tcpip.Error) (*netstack, error) {
		n.st.Close()
		n.ep.Close()
		return nil, fmt.Errorf("tcp stack: %s: %v", what, err)
	}
	if err := n.st.CreateNIC(1, n.ep); err != nil {
		return fail("create nic", err)
	}
	pa := tcpip.ProtocolAddress{Protocol: n.proto, AddressWithPrefix: tcpip.AddrFromSlice(addr.AsSlice()).WithPrefix()}
	if err := n.st.AddProtocolAddress(1, pa, stack.AddressProperties{}); err != nil {
		return fail("add address", err)
	}
	n.st.SetRouteTable([]tcpip.Route{{Destination: route, NIC: 1}})
	l, err := gonet.ListenTCP(n.st, tcpip.FullAddress{NIC: 1, Addr: pa.AddressWithPrefix.Address, Port: 53}, n.proto)
	if err != nil {
		n.st.Close()
		n.ep.Close()
		return nil, fmt.Errorf("tcp stack: listen %s:53: %w", addr, err)
	}
	n.l = l
	n.wg.Go(func() { n.routineInject(ctx) })
	n.wg.Go(func() { n.routineAccept(ctx, s) })
	return n, nil
}

// deliver hands one IP packet from the OS to the stack. pkt is copied; the
// caller keeps it.
func (n *netstack) deliver(version int, pkt []byte) {
	proto := tcpip.NetworkProtocolNumber(ipv4.ProtocolNumber)
	if version == 6 {
		proto = ipv6.ProtocolNumber
	}
	if proto != n.proto {
		return
	}
	pb := stack.NewPacketBuffer(stack.PacketBufferOptions{Payload: buffer.MakeWithData(pkt)})
	n.ep.InjectInbound(proto, pb)
	pb.DecRef()
}

// routineInject writes the stack's outbound packets towards the OS.
func (n *netstack) routineInject(ctx context.Context) {
	var b []byte
	for {
		pb := n.ep.ReadContext(ctx)
		if pb == nil {
			return
		}
		b = b[:0]
		for _, s := range pb.AsSlices() {
			b = append(b, s...)
		}
		pb.DecRef()
		n.inject(b) // errors: the OS side is gone; TCP retransmits
	}
}

// routineAccept serves each connection on its own goroutine, at most
// maxTCPConns at once.
func (n *netstack) routineAccept(ctx context.Context, s *Server) {
	sem := make(chan struct{}, maxTCPConns)
	for {
		c, err := n.l.Accept()
		if err != nil {
			return // closed
		}
		select {
		case sem <- struct{}{}:
		default:
			c.Close()
			continue
		}
		n.wg.Go(func() {
			defer func() { <-sem }()
			s.serveConn(ctx, c)
		})
	}
}

// close stops the stack after ctx has ended: the listener, the
// connections, the goroutines.
func (n *netstack) close() {
	n.l.Close()
	n.wg.Wait()
	n.st.Close()
	n.ep.Close()
	n.st.Wait()
}
