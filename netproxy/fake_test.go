package netproxy

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"testing"
)

// loopNet is a Network over the machine's loopback: "the mesh" is 127.0.0.1.
type loopNet struct{}

func (loopNet) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	if _, err := netip.ParseAddrPort(address); err != nil {
		return nil, fmt.Errorf("loopNet: %q is not ip:port", address)
	}
	var d net.Dialer
	return d.DialContext(ctx, network, address)
}

func (loopNet) ListenUDP(family int) (net.PacketConn, error) {
	return net.ListenPacket("udp4", "127.0.0.1:0")
}

// mapResolver resolves from a map; other names do not exist.
type mapResolver map[string]netip.Addr

func (m mapResolver) LookupNetIP(_ context.Context, host string) ([]netip.Addr, error) {
	if a, ok := m[host]; ok {
		return []netip.Addr{a}, nil
	}
	return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
}

func testDialer() *Dialer {
	return &Dialer{Net: loopNet{}, Resolver: mapResolver{"web1.web.zl": netip.MustParseAddr("127.0.0.1")}}
}

// echoTCP serves TCP echo on loopback and returns its address.
func echoTCP(t *testing.T) netip.AddrPort {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { io.Copy(c, c); c.Close() }()
		}
	}()
	return ln.Addr().(*net.TCPAddr).AddrPort()
}

// echoUDP answers every datagram with "re:" and the datagram.
func echoUDP(t *testing.T) netip.AddrPort {
	t.Helper()
	pc, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.MustParseAddrPort("127.0.0.1:0")))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	go func() {
		buf := make([]byte, 65535)
		for {
			n, from, err := pc.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			pc.WriteToUDPAddrPort(append([]byte("re:"), buf[:n]...), from)
		}
	}()
	return pc.LocalAddr().(*net.UDPAddr).AddrPort()
}

// closedPort returns a loopback TCP port nothing listens on.
func closedPort(t *testing.T) netip.AddrPort {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ap := ln.Addr().(*net.TCPAddr).AddrPort()
	ln.Close()
	return ap
}
