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
// as wireguard-go does (no encryption): the netstack's own cost.
func BenchmarkForwardTCP(b *testing.B) {
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
