package userspace

import (
	"context"
	"io"
	"net"
	"net/netip"
	"testing"

	"github.com/zlmesh/zlmesh/netproxy"
)

// BenchmarkForwardTCP moves bulk TCP from a client stack through a forward
// of the node's stack to a loopback sink, packets handed over in batches
// as wireguard-go does (no encryption): the netstack's own cost, with the
// node stack's receive coalescing (GRO) on and off.
func BenchmarkForwardTCP(b *testing.B) {
	b.Run("gro=on", func(b *testing.B) { benchForwardTCP(b, true) })
	b.Run("gro=off", func(b *testing.B) { benchForwardTCP(b, false) })
}

func benchForwardTCP(b *testing.B, gro bool) {
	sink, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer sink.Close()
	go func() {
		for {
			c, err := sink.Accept()
			if err != nil {
				return
			}
			go func() { io.Copy(io.Discard, c); c.Close() }()
		}
	}()
	fw := &netproxy.Forwards{}
	client, node := pair(b, fw)
	node.SetGRO(gro)
	fw.Add(netproxy.Forward{Proto: "tcp", Port: 5201, Target: sink.Addr().(*net.TCPAddr).AddrPort()})
	c, err := client.DialContext(context.Background(), "tcp", netip.AddrPortFrom(nodeAddr.Addr(), 5201).String())
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	buf := make([]byte, 64<<10)
	b.SetBytes(int64(len(buf)))
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := c.Write(buf); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkSOCKS moves bulk TCP from a loopback client through the SOCKS5
// server into a client stack, across to the node stack's forward and a
// loopback sink (no encryption): what the SOCKS5 path adds to
// BenchmarkForwardTCP.
func BenchmarkSOCKS(b *testing.B) {
	sink, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer sink.Close()
	go func() {
		for {
			c, err := sink.Accept()
			if err != nil {
				return
			}
			go func() { io.Copy(io.Discard, c); c.Close() }()
		}
	}()
	fw := &netproxy.Forwards{}
	client, _ := pair(b, fw)
	fw.Add(netproxy.Forward{Proto: "tcp", Port: 5201, Target: sink.Addr().(*net.TCPAddr).AddrPort()})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	s := &netproxy.SOCKS5{Dialer: &netproxy.Dialer{Net: client}}
	go s.Serve(ln)
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	dst := netip.AddrPortFrom(nodeAddr.Addr(), 5201)
	a4 := dst.Addr().As4()
	c.Write([]byte{5, 1, 0})
	c.Write([]byte{5, 1, 0, 1, a4[0], a4[1], a4[2], a4[3], byte(dst.Port() >> 8), byte(dst.Port())})
	hdr := make([]byte, 12)
	if _, err := io.ReadFull(c, hdr); err != nil || hdr[3] != 0 {
		b.Fatalf("socks handshake: %v %v", hdr, err)
	}
	buf := make([]byte, 64<<10)
	b.SetBytes(int64(len(buf)))
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := c.Write(buf); err != nil {
			b.Fatal(err)
		}
	}
}
