// Package userspace joins a gVisor stack (tun.UserStack) to the netstack-
// agnostic proxies and forwards of package netproxy: Net dials and listens
// inside the stack, Resolver asks the mesh DNS through the stack, and
// Serve hands connections arriving at the stack's address to
// netproxy.Forwards.
package userspace

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"strings"

	"github.com/zlmesh/zlmesh/netproxy"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv6"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/udp"
	"gvisor.dev/gvisor/pkg/waiter"
)

// Net is netproxy.Network over a gVisor stack whose one NIC is nic.
type Net struct {
	Stack *stack.Stack
	NIC   tcpip.NICID
}

var _ netproxy.Network = (*Net)(nil)

func fullAddr(nic tcpip.NICID, ap netip.AddrPort) (tcpip.FullAddress, tcpip.NetworkProtocolNumber) {
	a := ap.Addr().Unmap()
	proto := tcpip.NetworkProtocolNumber(ipv4.ProtocolNumber)
	if a.Is6() {
		proto = ipv6.ProtocolNumber
	}
	return tcpip.FullAddress{NIC: nic, Addr: tcpip.AddrFromSlice(a.AsSlice()), Port: ap.Port()}, proto
}

// DialContext connects to address (ip:port) over "tcp" or "udp".
func (n *Net) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return nil, fmt.Errorf("dial %s %q: want ip:port", network, address)
	}
	fa, proto := fullAddr(n.NIC, ap)
	switch strings.TrimRight(network, "46") {
	case "tcp":
		return gonet.DialContextTCP(ctx, n.Stack, fa, proto)
	case "udp":
		return gonet.DialUDP(n.Stack, nil, &fa, proto)
	}
	return nil, fmt.Errorf("dial %s %s: network not supported", network, address)
}

// ListenUDP opens an unconnected UDP socket on an ephemeral port.
func (n *Net) ListenUDP(family int) (net.PacketConn, error) {
	any := netip.IPv4Unspecified()
	if family == 6 {
		any = netip.IPv6Unspecified()
	}
	fa, proto := fullAddr(n.NIC, netip.AddrPortFrom(any, 0))
	fa.Addr = tcpip.Address{}
	return gonet.DialUDP(n.Stack, &fa, nil, proto)
}

// Resolver is a resolver that sends every query to dns (the mesh DNS
// address, port 53) through the stack, so queries take the same packet path
// (and the same DNS hook) as a container's.
func Resolver(n *Net, dns netip.Addr) netproxy.Resolver {
	server := netip.AddrPortFrom(dns, 53).String()
	return resolver{&net.Resolver{
		PreferGo: true,
		Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return n.DialContext(ctx, network, server)
		},
	}}
}

type resolver struct{ r *net.Resolver }

func (r resolver) LookupNetIP(ctx context.Context, host string) ([]netip.Addr, error) {
	return r.r.LookupNetIP(ctx, "ip", host)
}

// Serve makes connections and UDP flows to the stack's addresses reach fw:
// TCP SYNs that match no socket of the stack go to fw.HandleTCP (which
// rejects with a RST when no forward matches), UDP datagrams that match
// no socket to fw.HandleUDP (unmatched ones get the stack's port
// unreachable). Outbound connections of the stack (proxies, DNS) are
// sockets of their own and never reach fw.
func Serve(st *stack.Stack, fw *netproxy.Forwards) {
	tcpFwd := tcp.NewForwarder(st, 0, 1024, func(r *tcp.ForwarderRequest) {
		id := r.ID()
		fw.HandleTCP(netproxy.Inbound{
			Proto: "tcp",
			Port:  id.LocalPort,
			From:  addrPort(id.RemoteAddress, id.RemotePort),
			Accept: func() (net.Conn, error) {
				var wq waiter.Queue
				ep, err := r.CreateEndpoint(&wq)
				if err != nil {
					r.Complete(true)
					return nil, fmt.Errorf("accept %d/tcp: %v", id.LocalPort, err)
				}
				r.Complete(false)
				ep.SocketOptions().SetKeepAlive(true)
				return gonet.NewTCPConn(&wq, ep), nil
			},
			Reject: func() { r.Complete(true) },
		})
	})
	st.SetTransportProtocolHandler(tcp.ProtocolNumber, tcpFwd.HandlePacket)

	udpFwd := udp.NewForwarder(st, func(r *udp.ForwarderRequest) {
		// Ignored: whether HandleUDP took the flow; the hook below
		// only calls the forwarder for forwarded ports.
		id := r.ID()
		fw.HandleUDP(netproxy.Inbound{
			Proto: "udp",
			Port:  id.LocalPort,
			From:  addrPort(id.RemoteAddress, id.RemotePort),
			Accept: func() (net.Conn, error) {
				var wq waiter.Queue
				ep, err := r.CreateEndpoint(&wq)
				if err != nil {
					return nil, fmt.Errorf("accept %d/udp: %v", id.LocalPort, err)
				}
				return gonet.NewUDPConn(&wq, ep), nil
			},
		})
	})
	st.SetTransportProtocolHandler(udp.ProtocolNumber, func(id stack.TransportEndpointID, pkt *stack.PacketBuffer) bool {
		if _, ok := fw.Lookup("udp", id.LocalPort); !ok {
			return false // the stack answers port unreachable
		}
		return udpFwd.HandlePacket(id, pkt)
	})
}

func addrPort(a tcpip.Address, port uint16) netip.AddrPort {
	ip, _ := netip.AddrFromSlice(a.AsSlice())
	return netip.AddrPortFrom(ip.Unmap(), port)
}
