// Package netproxy carries traffic between local programs and the mesh when
// the node has no kernel interface (userspace mode): a SOCKS5 server and an
// HTTP proxy take local connections into the mesh, and forwards take mesh
// connections to the node's overlay address on to local ports.
//
// The package does not know gVisor. The mesh side is two small interfaces:
// Network (dial and listen inside the mesh) and Resolver (mesh names). For
// inbound traffic the network stack calls Forwards.HandleTCP and
// Forwards.HandleUDP with an Inbound request that it accepts or rejects.
// Tests give loopback sockets and maps instead (see the _test files);
// package userspace adapts a gVisor stack.
package netproxy

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
)

// Network is the mesh as the proxies see it.
type Network interface {
	// DialContext connects to address ("ip:port", never a name) inside the
	// mesh; network is "tcp" or "udp" (a connected UDP socket). It
	// honours ctx's deadline and cancellation.
	DialContext(ctx context.Context, network, address string) (net.Conn, error)
	// ListenUDP opens an unconnected UDP socket inside the mesh on an
	// ephemeral port, for SOCKS5 UDP ASSOCIATE. family is 4 or 6. The
	// caller closes it.
	ListenUDP(family int) (net.PacketConn, error)
}

// Resolver answers names from the mesh DNS (and what it forwards).
type Resolver interface {
	// LookupNetIP returns host's addresses. A name that does not exist
	// returns an error for which IsNotFound is true.
	LookupNetIP(ctx context.Context, host string) ([]netip.Addr, error)
}

// ErrNoSuchHost is returned (wrapped) when a name has no address.
var ErrNoSuchHost = errors.New("no such host")

// IsNotFound reports whether err says that a name does not resolve.
func IsNotFound(err error) bool {
	if errors.Is(err, ErrNoSuchHost) {
		return true
	}
	var de *net.DNSError
	return errors.As(err, &de) && de.IsNotFound
}

// Dialer dials names and addresses inside the mesh: names go through the
// Resolver first. It is what both proxies use.
type Dialer struct {
	Net      Network
	Resolver Resolver
}

// DialContext connects to address (host:port, host a name or an IP).
// An unresolvable name returns an error wrapping ErrNoSuchHost.
func (d *Dialer) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	ap, err := d.Resolve(ctx, address)
	if err != nil {
		return nil, err
	}
	return d.Net.DialContext(ctx, network, ap.String())
}

// Resolve turns host:port into one address, preferring IPv4.
func (d *Dialer) Resolve(ctx context.Context, address string) (netip.AddrPort, error) {
	host, port, err := net.SplitHostPort(address)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("address %q: %w", address, err)
	}
	p, err := strconv.ParseUint(port, 10, 16)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("address %q: bad port", address)
	}
	if a, err := netip.ParseAddr(host); err == nil {
		return netip.AddrPortFrom(a.Unmap(), uint16(p)), nil
	}
	if d.Resolver == nil {
		return netip.AddrPort{}, fmt.Errorf("resolve %s: %w", host, ErrNoSuchHost)
	}
	addrs, err := d.Resolver.LookupNetIP(ctx, host)
	if err != nil {
		if IsNotFound(err) {
			return netip.AddrPort{}, fmt.Errorf("resolve %s: %w", host, ErrNoSuchHost)
		}
		return netip.AddrPort{}, fmt.Errorf("resolve %s: %w", host, err)
	}
	if len(addrs) == 0 {
		return netip.AddrPort{}, fmt.Errorf("resolve %s: %w", host, ErrNoSuchHost)
	}
	best := addrs[0].Unmap()
	for _, a := range addrs {
		if a.Unmap().Is4() {
			best = a.Unmap()
			break
		}
	}
	return netip.AddrPortFrom(best, uint16(p)), nil
}

// CheckListen refuses a proxy listen address that is not loopback unless
// allowRemote is set: a proxy into the mesh open to the network lets anyone
// there into the mesh. It returns whether the address is remote (the
// caller then logs a warning).
func CheckListen(flag, addr string, allowRemote bool) (remote bool, err error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return false, fmt.Errorf("%s %q: want ip:port", flag, addr)
	}
	if p, err := strconv.ParseUint(port, 10, 16); err != nil || p == 0 {
		return false, fmt.Errorf("%s %q: port must be between 1 and 65535", flag, addr)
	}
	if host == "localhost" {
		return false, nil
	}
	a, err := netip.ParseAddr(host)
	if host != "" && err != nil {
		return false, fmt.Errorf("%s %q: want an IP address or localhost", flag, addr)
	}
	if host != "" && a.IsLoopback() {
		return false, nil
	}
	if !allowRemote {
		return true, fmt.Errorf("%s %s: not a loopback address; anyone who reaches it enters the mesh (pass --proxy-allow-remote to allow it)", flag, addr)
	}
	return true, nil
}
