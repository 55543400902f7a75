package userspace

import (
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/zlmesh/zlmesh/netproxy"
	"github.com/zlmesh/zlmesh/tun"
	"github.com/zlmesh/zlmesh/tun/tuntest"
)

var (
	clientAddr = netip.MustParsePrefix("10.200.0.1/16")
	nodeAddr   = netip.MustParsePrefix("10.200.1.1/16")
)

// link copies packets between two devices both ways until they close.
func link(a, b tun.Device) {
	one := func(src, dst tun.Device) {
		bufs := make([][]byte, src.BatchSize())
		for i := range bufs {
			bufs[i] = make([]byte, 65535)
		}
		sizes := make([]int, len(bufs))
		for {
			n, err := src.Read(bufs, sizes, 0)
			if err != nil {
				return
			}
			batch := make([][]byte, n)
			for i := range batch {
				batch[i] = bufs[i][:sizes[i]]
			}
			dst.Write(batch, 0) // one batch, as wireguard-go writes

		}
	}
	go one(a, b)
	go one(b, a)
}

// pair makes a client stack and a node stack on one link; the node's
// stack serves fw.
func pair(t testing.TB, fw *netproxy.Forwards) (client *Net, node *tun.UserStack) {
	t.Helper()
	cs, err := tun.NewUserStack(0)
	if err != nil {
		t.Fatal(err)
	}
	ns, err := tun.NewUserStack(0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cs.Close(); ns.Close() })
	if err := cs.SetAddress(clientAddr); err != nil {
		t.Fatal(err)
	}
	if err := ns.SetAddress(nodeAddr); err != nil {
		t.Fatal(err)
	}
	Serve(ns.Stack(), fw)
	link(cs, ns)
	return &Net{Stack: cs.Stack(), NIC: tun.UserStackNIC}, ns
}

func localEcho(t *testing.T) netip.AddrPort {
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

func TestForwardTCP(t *testing.T) {
	fw := &netproxy.Forwards{}
	client, _ := pair(t, fw)
	echo := localEcho(t)
	fw.Add(netproxy.Forward{Proto: "tcp", Port: 80, Target: echo})
	closed, _ := net.Listen("tcp", "127.0.0.1:0")
	closedAP := closed.Addr().(*net.TCPAddr).AddrPort()
	closed.Close()
	fw.Add(netproxy.Forward{Proto: "tcp", Port: 81, Target: closedAP})

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := client.DialContext(ctx, "tcp", netip.AddrPortFrom(nodeAddr.Addr(), 80).String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	msg := strings.Repeat("zlmesh", 100000) // 600 kB, many segments
	go c.Write([]byte(msg))
	got := make([]byte, len(msg))
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadFull(c, got); err != nil || string(got) != msg {
		t.Fatalf("echo through the forward: %v", err)
	}

	for _, port := range []uint16{81, 82} {
		_, err := client.DialContext(ctx, "tcp", netip.AddrPortFrom(nodeAddr.Addr(), port).String())
		if err == nil || !strings.Contains(err.Error(), "refused") {
			t.Errorf("port %d: dial error %v, want connection refused (a RST)", port, err)
		}
	}
}

func TestForwardUDP(t *testing.T) {
	fw := &netproxy.Forwards{}
	client, _ := pair(t, fw)
	pc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	go func() {
		buf := make([]byte, 1500)
		for {
			n, from, err := pc.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			pc.WriteToUDPAddrPort(append([]byte("re:"), buf[:n]...), from)
		}
	}()
	fw.Add(netproxy.Forward{Proto: "udp", Port: 5353, Target: pc.LocalAddr().(*net.UDPAddr).AddrPort()})

	c, err := client.DialContext(context.Background(), "udp", netip.AddrPortFrom(nodeAddr.Addr(), 5353).String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for _, m := range []string{"one", "two"} {
		c.Write([]byte(m))
		buf := make([]byte, 100)
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		n, err := c.Read(buf)
		if err != nil || string(buf[:n]) != "re:"+m {
			t.Fatalf("%q %v", buf[:n], err)
		}
	}
}

// TestPing sends an ICMP echo request to the node's stack and expects the
// reply out of it.
func TestPing(t *testing.T) {
	ns, err := tun.NewUserStack(0)
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	ns.SetAddress(nodeAddr)
	req := tuntest.ICMPEcho(clientAddr.Addr(), nodeAddr.Addr(), 7, 1, []byte("ping"))
	if _, err := ns.Write([][]byte{req}, 0); err != nil {
		t.Fatal(err)
	}
	bufs := [][]byte{make([]byte, 1500)}
	sizes := []int{0}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if _, err := ns.Read(bufs, sizes, 0); err != nil {
			t.Error(err)
		}
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("no echo reply")
	}
	var p tun.Packet
	p.Decode(bufs[0][:sizes[0]])
	if p.Src != nodeAddr.Addr() || p.Dst != clientAddr.Addr() || bufs[0][20] != 0 /* echo reply */ {
		t.Fatalf("reply %x", bufs[0][:sizes[0]])
	}
}

// TestRenumber: after SetAddress the stack answers on the new address
// and no longer on the old one.
func TestRenumber(t *testing.T) {
	fw := &netproxy.Forwards{}
	client, node := pair(t, fw)
	fw.Add(netproxy.Forward{Proto: "tcp", Port: 80, Target: localEcho(t)})
	moved := netip.MustParsePrefix("10.200.2.1/16")
	if err := node.SetAddress(moved); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	c, err := client.DialContext(ctx, "tcp", netip.AddrPortFrom(moved.Addr(), 80).String())
	if err != nil {
		t.Fatalf("new address: %v", err)
	}
	c.Close()
	ctx2, cancel2 := context.WithTimeout(context.Background(), time.Second)
	defer cancel2()
	if c, err := client.DialContext(ctx2, "tcp", netip.AddrPortFrom(nodeAddr.Addr(), 80).String()); err == nil {
		c.Close()
		t.Fatal("old address still answers")
	}
}

// TestSOCKSThroughStack runs the SOCKS5 server with the client stack as
// its network and a resolver answering from a fixed map.
func TestSOCKSThroughStack(t *testing.T) {
	fw := &netproxy.Forwards{}
	client, _ := pair(t, fw)
	fw.Add(netproxy.Forward{Proto: "tcp", Port: 80, Target: localEcho(t)})
	d := &netproxy.Dialer{Net: client, Resolver: fixed{"node1.node.zl": nodeAddr.Addr()}}
	c, err := d.DialContext(context.Background(), "tcp", "node1.node.zl:80")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Write([]byte("x"))
	b := make([]byte, 1)
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadFull(c, b); err != nil {
		t.Fatal(err)
	}
	if _, err := d.DialContext(context.Background(), "tcp", "nope.zl:80"); !errors.Is(err, netproxy.ErrNoSuchHost) {
		t.Fatalf("unknown name: %v", err)
	}
}

type fixed map[string]netip.Addr

func (f fixed) LookupNetIP(_ context.Context, h string) ([]netip.Addr, error) {
	if a, ok := f[h]; ok {
		return []netip.Addr{a}, nil
	}
	return nil, &net.DNSError{Name: h, IsNotFound: true, Err: "no such host"}
}
