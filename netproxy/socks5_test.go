package netproxy

import (
	"bytes"
	"encoding/binary"
	"io"
	"net"
	"net/netip"
	"testing"
	"time"
)

func startSOCKS(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &SOCKS5{Dialer: testDialer(), DialTimeout: 2 * time.Second}
	done := make(chan struct{})
	go func() { s.Serve(ln); close(done) }()
	t.Cleanup(func() { ln.Close(); <-done })
	return ln.Addr().String()
}

// socksDial does the greeting and one request; it returns the connection,
// the reply code and the bound address.
func socksDial(t *testing.T, proxy string, cmd byte, dst []byte) (net.Conn, byte, netip.AddrPort) {
	t.Helper()
	c, err := net.Dial("tcp", proxy)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(5 * time.Second))
	c.Write([]byte{5, 1, 0})
	var g [2]byte
	if _, err := io.ReadFull(c, g[:]); err != nil || g != [2]byte{5, 0} {
		t.Fatalf("greeting answer %v, %v", g, err)
	}
	c.Write(append([]byte{5, cmd, 0}, dst...))
	var hdr [4]byte
	if _, err := io.ReadFull(c, hdr[:]); err != nil {
		t.Fatalf("reply: %v", err)
	}
	_, addr, err := readSocksAddr(c, hdr[3])
	if err != nil {
		t.Fatal(err)
	}
	var p [2]byte
	io.ReadFull(c, p[:])
	c.SetDeadline(time.Time{})
	return c, hdr[1], netip.AddrPortFrom(addr, binary.BigEndian.Uint16(p[:]))
}

func nameDst(name string, port uint16) []byte {
	b := append([]byte{atypDomain, byte(len(name))}, name...)
	return binary.BigEndian.AppendUint16(b, port)
}

func TestSOCKS5Connect(t *testing.T) {
	echo := echoTCP(t)
	proxy := startSOCKS(t)
	tests := []struct {
		name string
		dst  []byte
		rep  byte
	}{
		{"ip", appendSocksAddr(nil, echo), repSucceeded},
		{"mesh name", nameDst("web1.web.zl", echo.Port()), repSucceeded},
		{"unknown name", nameDst("nope.zl", echo.Port()), repHostUnreachable},
		{"closed port", appendSocksAddr(nil, closedPort(t)), repConnRefused},
		{"bad atyp", []byte{9, 1, 2, 3, 4, 0, 80}, repAddrNotSupported},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, rep, _ := socksDial(t, proxy, socksConnect, tt.dst)
			if rep != tt.rep {
				t.Fatalf("reply %d, want %d", rep, tt.rep)
			}
			if rep != repSucceeded {
				return
			}
			c.Write([]byte("hello"))
			got := make([]byte, 5)
			c.SetReadDeadline(time.Now().Add(5 * time.Second))
			if _, err := io.ReadFull(c, got); err != nil || string(got) != "hello" {
				t.Fatalf("echo %q, %v", got, err)
			}
		})
	}
}

func TestSOCKS5BindRefused(t *testing.T) {
	proxy := startSOCKS(t)
	_, rep, _ := socksDial(t, proxy, socksBind, appendSocksAddr(nil, netip.MustParseAddrPort("127.0.0.1:1")))
	if rep != repCmdNotSupported {
		t.Fatalf("reply %d, want %d", rep, repCmdNotSupported)
	}
}

func TestSOCKS5NoAcceptableMethod(t *testing.T) {
	proxy := startSOCKS(t)
	c, err := net.Dial("tcp", proxy)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	c.Write([]byte{5, 1, 2}) // username/password only
	got, _ := io.ReadAll(c)
	if !bytes.Equal(got, []byte{5, 0xff}) {
		t.Fatalf("answer %v, want [5 255] then close", got)
	}
}

func TestSOCKS5UDPAssociate(t *testing.T) {
	echo := echoUDP(t)
	proxy := startSOCKS(t)
	c, rep, relay := socksDial(t, proxy, socksUDPAssociate, appendSocksAddr(nil, netip.MustParseAddrPort("0.0.0.0:0")))
	if rep != repSucceeded {
		t.Fatalf("reply %d", rep)
	}
	_ = c
	uc, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(relay))
	if err != nil {
		t.Fatal(err)
	}
	defer uc.Close()
	for _, dst := range [][]byte{appendSocksAddr(nil, echo), nameDst("web1.web.zl", echo.Port())} {
		uc.Write(append(append([]byte{0, 0, 0}, dst...), "ping"...))
		buf := make([]byte, 1500)
		uc.SetReadDeadline(time.Now().Add(5 * time.Second))
		n, err := uc.Read(buf)
		if err != nil {
			t.Fatal(err)
		}
		d, payload, err := parseSocksUDP(buf[:n])
		if err != nil {
			t.Fatal(err)
		}
		if d != echo.String() || string(payload) != "re:ping" {
			t.Fatalf("got %q from %s, want re:ping from %s", payload, d, echo)
		}
	}
}

func TestParseSocksUDP(t *testing.T) {
	tests := []struct {
		name    string
		in      []byte
		dst     string
		payload string
		bad     bool
	}{
		{"ipv4", append([]byte{0, 0, 0, 1, 10, 0, 0, 1, 0, 53}, "x"...), "10.0.0.1:53", "x", false},
		{"name", append([]byte{0, 0, 0, 3, 2, 'a', 'b', 0, 53}, "yz"...), "ab:53", "yz", false},
		{"ipv6", append(append([]byte{0, 0, 0, 4}, netip.MustParseAddr("fd00::1").AsSlice()...), 0, 1), "[fd00::1]:1", "", false},
		{"fragment", []byte{0, 0, 1, 1, 10, 0, 0, 1, 0, 53}, "", "", true},
		{"short", []byte{0, 0}, "", "", true},
		{"truncated", []byte{0, 0, 0, 1, 10, 0}, "", "", true},
		{"bad atyp", []byte{0, 0, 0, 7, 10, 0, 0, 1, 0, 53}, "", "", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dst, payload, err := parseSocksUDP(tt.in)
			if (err != nil) != tt.bad {
				t.Fatalf("err %v, want bad=%v", err, tt.bad)
			}
			if !tt.bad && (dst != tt.dst || string(payload) != tt.payload) {
				t.Fatalf("got %q %q, want %q %q", dst, payload, tt.dst, tt.payload)
			}
		})
	}
}

func FuzzParseSocksUDP(f *testing.F) {
	f.Add([]byte{0, 0, 0, 1, 10, 0, 0, 1, 0, 53, 'x'})
	f.Add([]byte{0, 0, 0, 3, 2, 'a', 'b', 0, 53})
	f.Fuzz(func(t *testing.T, b []byte) {
		dst, payload, err := parseSocksUDP(b)
		if err != nil {
			return
		}
		if _, _, err := net.SplitHostPort(dst); err != nil {
			t.Fatalf("dst %q: %v", dst, err)
		}
		if len(payload) > len(b) {
			t.Fatal("payload longer than input")
		}
	})
}
