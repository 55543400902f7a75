package netproxy

import (
	"errors"
	"io"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"
)

func TestParseForward(t *testing.T) {
	lo := netip.MustParseAddr("127.0.0.1")
	tests := []struct {
		spec string
		want Forward
		bad  string
	}{
		{"8080", Forward{"tcp", 8080, netip.AddrPortFrom(lo, 8080)}, ""},
		{"53/udp", Forward{"udp", 53, netip.AddrPortFrom(lo, 53)}, ""},
		{"80/tcp:127.0.0.1:8000", Forward{"tcp", 80, netip.AddrPortFrom(lo, 8000)}, ""},
		{"80:[::1]:8000", Forward{"tcp", 80, netip.MustParseAddrPort("[::1]:8000")}, ""},
		{"80/sctp", Forward{}, "protocol"},
		{"0", Forward{}, "port"},
		{"70000", Forward{}, "port"},
		{"http", Forward{}, "port"},
		{"80:localhost:8000", Forward{}, "ip:port"},
		{"80:127.0.0.1:0", Forward{}, "unicast"},
		{"80:0.0.0.0:80", Forward{}, "unicast"},
		{"", Forward{}, "port"},
	}
	for _, tt := range tests {
		t.Run(tt.spec, func(t *testing.T) {
			got, err := ParseForward(tt.spec)
			if tt.bad != "" {
				if err == nil || !strings.Contains(err.Error(), tt.bad) {
					t.Fatalf("err %v, want one mentioning %q", err, tt.bad)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("got %+v, %v; want %+v", got, err, tt.want)
			}
			if back, err := ParseForward(got.String()); err != nil || back != got {
				t.Fatalf("String %q does not parse back: %+v %v", got.String(), back, err)
			}
		})
	}
}

func FuzzParseForward(f *testing.F) {
	for _, s := range []string{"8080", "53/udp", "80/tcp:127.0.0.1:8000", "80:[::1]:1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, spec string) {
		fw, err := ParseForward(spec)
		if err != nil {
			return
		}
		if back, err := ParseForward(fw.String()); err != nil || back != fw {
			t.Fatalf("%q → %+v → %q → %+v, %v", spec, fw, fw.String(), back, err)
		}
	})
}

func TestForwardsTable(t *testing.T) {
	var fw Forwards
	a, _ := ParseForward("80/tcp:127.0.0.1:8000")
	if err := fw.Add(a); err != nil {
		t.Fatal(err)
	}
	if err := fw.Add(a); err != nil {
		t.Fatalf("identical Add: %v", err)
	}
	b, _ := ParseForward("80/tcp:127.0.0.1:9000")
	if err := fw.Add(b); !errors.Is(err, ErrForwardExists) {
		t.Fatalf("conflicting Add: %v", err)
	}
	u, _ := ParseForward("80/udp")
	if err := fw.Add(u); err != nil {
		t.Fatalf("same port other protocol: %v", err)
	}
	if l := fw.List(); len(l) != 2 || l[0] != a || l[1] != u {
		t.Fatalf("List %v", l)
	}
	if _, err := fw.Remove("tcp", 81); !errors.Is(err, ErrNoForward) {
		t.Fatalf("Remove missing: %v", err)
	}
	if got, err := fw.Remove("tcp", 80); err != nil || got != a {
		t.Fatalf("Remove: %v %v", got, err)
	}
}

// pipeInbound makes an Inbound whose Accept returns one end of a pipe; the
// test keeps the other as the mesh client.
func pipeInbound(proto string, port uint16) (Inbound, net.Conn, chan string) {
	client, server := net.Pipe()
	verdict := make(chan string, 1)
	in := Inbound{
		Proto:  proto,
		Port:   port,
		From:   netip.MustParseAddrPort("10.200.1.1:40000"),
		Accept: func() (net.Conn, error) { verdict <- "accept"; return server, nil },
		Reject: func() { verdict <- "reject"; server.Close() },
	}
	return in, client, verdict
}

func TestHandleTCP(t *testing.T) {
	echo := echoTCP(t)
	fw := &Forwards{DialTimeout: 2 * time.Second}
	fw.Add(Forward{Proto: "tcp", Port: 80, Target: echo})
	fw.Add(Forward{Proto: "tcp", Port: 81, Target: closedPort(t)})

	t.Run("forwarded", func(t *testing.T) {
		in, client, verdict := pipeInbound("tcp", 80)
		go fw.HandleTCP(in)
		if v := <-verdict; v != "accept" {
			t.Fatal(v)
		}
		client.Write([]byte("hi"))
		b := make([]byte, 2)
		client.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.ReadFull(client, b); err != nil || string(b) != "hi" {
			t.Fatalf("%q %v", b, err)
		}
		client.Close()
	})
	for _, port := range []uint16{81, 82} { // target closed; no forward
		in, _, verdict := pipeInbound("tcp", port)
		go fw.HandleTCP(in)
		if v := <-verdict; v != "reject" {
			t.Fatalf("port %d: %s, want reject", port, v)
		}
	}
}

func TestHandleUDP(t *testing.T) {
	echo := echoUDP(t)
	fw := &Forwards{UDPIdle: time.Second}
	fw.Add(Forward{Proto: "udp", Port: 53, Target: echo})

	in, _, _ := pipeInbound("udp", 54)
	if fw.HandleUDP(in) {
		t.Fatal("HandleUDP took a flow to a port without forward")
	}
	// A pair of connected UDP sockets stands in for the mesh flow.
	a, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	b, err := net.DialUDP("udp", nil, a.LocalAddr().(*net.UDPAddr))
	if err != nil {
		t.Fatal(err)
	}
	aAddr := a.LocalAddr().(*net.UDPAddr)
	a.Close()
	meshSide, err := net.DialUDP("udp", aAddr, b.LocalAddr().(*net.UDPAddr))
	if err != nil {
		t.Fatal(err)
	}
	in = Inbound{Proto: "udp", Port: 53, Accept: func() (net.Conn, error) { return meshSide, nil }}
	if !fw.HandleUDP(in) {
		t.Fatal("HandleUDP refused a forwarded flow")
	}
	b.Write([]byte("q"))
	buf := make([]byte, 100)
	b.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, err := b.Read(buf)
	if err != nil || string(buf[:n]) != "re:q" {
		t.Fatalf("%q %v", buf[:n], err)
	}
}
