package testbed

import (
	"bytes"
	"io"
	"net"
	"strings"
	"testing"
	"time"
)

func TestPartitionRules(t *testing.T) {
	got := partitionRules([][]string{{"h1", "h2"}, {"h3"}})
	want := `table bridge zltestbed
delete table bridge zltestbed
table bridge zltestbed {
	chain forward {
		type filter hook forward priority 0; policy accept;
		iifname { "h1", "h2" } oifname { "h3" } drop
		iifname { "h3" } oifname { "h1", "h2" } drop
	}
}
`
	if got != want {
		t.Errorf("partitionRules:\n%s\nwant:\n%s", got, want)
	}
	if h := healRules(); !strings.HasPrefix(got, h) {
		t.Errorf("a partition does not start by removing the old one")
	}
}

func TestChecksum(t *testing.T) {
	cases := []struct {
		name string
		in   []byte
		want uint16
	}{
		{"echo request", []byte{8, 0, 0, 0, 0x12, 0x34, 0, 1}, 0xe5ca},
		{"odd length", []byte{0xff}, 0x00ff},
		{"all ones", []byte{0xff, 0xff}, 0},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := checksum(c.in); got != c.want {
				t.Errorf("checksum = %#04x, want %#04x", got, c.want)
			}
		})
	}
}

func TestQuotesEcho(t *testing.T) {
	// An ICMP error quotes the IP header of our request and its first 8
	// bytes: type, code, checksum, id, sequence.
	echo := []byte{8, 0, 0, 0, 0x12, 0x34, 0, 1}
	v4 := append(append([]byte{0x45}, make([]byte, 19)...), echo...)
	v4opts := append(append([]byte{0x46}, make([]byte, 23)...), echo...)
	v6 := append(make([]byte, 40), echo...)
	cases := []struct {
		name string
		q    []byte
		v6   bool
		id   uint16
		want bool
	}{
		{"ipv4", v4, false, 0x1234, true},
		{"ipv4 with options", v4opts, false, 0x1234, true},
		{"ipv6", v6, true, 0x1234, true},
		{"other id", v4, false, 0x4321, false},
		{"truncated", v4[:25], false, 0x1234, false},
		{"empty", nil, false, 0x1234, false},
		{"bad header length", append([]byte{0x4f}, make([]byte, 30)...), false, 0, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := quotesEcho(c.q, c.v6, c.id, 1); got != c.want {
				t.Errorf("quotesEcho = %v, want %v", got, c.want)
			}
		})
	}
}

func FuzzQuotesEcho(f *testing.F) {
	f.Add([]byte{0x45, 0, 0, 0}, false)
	f.Add(make([]byte, 48), true)
	f.Fuzz(func(t *testing.T, q []byte, v6 bool) {
		quotesEcho(q, v6, 1, 1) // must not panic
	})
}

func TestHelperArguments(t *testing.T) {
	cases := []struct {
		role string
		args []string
	}{
		{"nc", []string{"x"}},
		{"tcp-echo", nil},
		{"tcp-send", []string{"127.0.0.1:1"}},
		{"udp-echo", []string{"a", "b"}},
	}
	for _, c := range cases {
		t.Run(c.role, func(t *testing.T) {
			if err := runHelper(c.role, c.args, io.Discard); err == nil {
				t.Error("no error")
			}
		})
	}
	if argv := HelperArgv("tcp-echo", "127.0.0.1:1"); len(argv) != 4 || argv[1] != helperMarker {
		t.Errorf("HelperArgv = %q", argv)
	}
}

func TestHelperEchoOnLoopback(t *testing.T) {
	for _, proto := range []string{"tcp", "udp"} {
		t.Run(proto, func(t *testing.T) {
			// Pick a free port, then serve on it.
			var addr string
			if proto == "tcp" {
				ln, err := net.Listen("tcp", "127.0.0.1:0")
				if err != nil {
					t.Fatal(err)
				}
				addr = ln.Addr().String()
				ln.Close()
			} else {
				pc, err := net.ListenPacket("udp", "127.0.0.1:0")
				if err != nil {
					t.Fatal(err)
				}
				addr = pc.LocalAddr().String()
				pc.Close()
			}
			go runHelper(proto+"-echo", []string{addr}, io.Discard)
			var out bytes.Buffer
			var err error
			for range 50 {
				out.Reset()
				if err = runHelper(proto+"-send", []string{addr, "hello"}, &out); err == nil {
					break
				}
				time.Sleep(20 * time.Millisecond)
			}
			if err != nil || out.String() != "hello" {
				t.Errorf("%s-send: %q %v", proto, out.String(), err)
			}
		})
	}
}
