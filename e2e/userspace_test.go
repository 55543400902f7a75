//go:build linux

package e2e

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/zlmesh/zlmesh/api"
	"github.com/zlmesh/zlmesh/testbed"
)

// socksUDPEnv makes the test binary, started inside a testbed host, send one
// datagram through a SOCKS5 UDP ASSOCIATE and print the reply: the value is
// "PROXY TARGET MSG".
const socksUDPEnv = "ZLMESH_E2E_SOCKSUDP"

// Ports of the userspace test: h3's proxies and forwards, and the servers
// behind them.
const (
	usSOCKS     = "127.0.0.1:1080"
	usHTTPProxy = "127.0.0.1:3128"
	usFwdHTTP   = 8080 // → 127.0.0.1:8000 on h3
	usFwdUDP    = 5300 // → 127.0.0.1:5301 on h3
	usWebPort   = 8000 // HTTP server in the container web1 on h1
	usUDPPort   = 5400 // UDP echo in the container web1 on h1
)

// TestUserspace runs h3 in userspace mode as nobody with no capabilities
// and checks, by what crosses the network: it joins; every host pings its
// overlay address and the address its name resolves to; a container on h1
// reaches h3's loopback servers through TCP and UDP forwards; h3 reaches
// the container by mesh name through SOCKS5 (CONNECT and UDP ASSOCIATE) and
// the HTTP proxy; what needs the kernel answers unsupported; a kill -9 and
// restart keeps its key and subnet.
func TestUserspace(t *testing.T) {
	bin := testbed.BuildZlmesh(t)
	tb := testbed.New(t, testbed.Options{
		Hosts:     3,
		Binary:    bin,
		Userspace: []string{"h3"},
		Args: func(h *testbed.Host) []string {
			args := slices.Clone(fastGossip)
			if h.Name == "h3" {
				args = append(args, "--socks5-listen", usSOCKS, "--http-proxy-listen", usHTTPProxy,
					"--forward", fmt.Sprintf("%d/tcp:127.0.0.1:8000", usFwdHTTP),
					"--forward", fmt.Sprintf("%d/udp:127.0.0.1:5301", usFwdUDP))
			}
			return args
		},
	})
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	h1, h2, h3 := tb.Host("h1"), tb.Host("h2"), tb.Host("h3")
	waitWhole(t, tb, tb.Hosts(), 60*time.Second)
	// WireGuard state of every host, h3's read through its UAPI socket
	// (owned by nobody), also after the kill and restart below.
	t.Cleanup(func() {
		if !t.Failed() {
			checkInvariants(t, tb)
		}
	})

	t.Run("unprivileged", func(t *testing.T) {
		checkUnprivileged(t, ctx, h3)
	})
	st3 := status(t, h3)
	if st3.Userspace == nil || len(st3.Userspace.Forwards) != 2 || st3.Userspace.SOCKS5 != usSOCKS {
		t.Fatalf("h3 status: userspace %+v", st3.Userspace)
	}
	overlay := st3.OverlayIP

	t.Run("ping", func(t *testing.T) {
		for _, h := range []*testbed.Host{h1, h2} {
			eventually(t, 20*time.Second, func() error { return h.Ping(ctx, overlay) })
			eventually(t, 20*time.Second, func() error {
				out, err := h.Exec(ctx, "dig", "+short", "+time=2", "@"+meshDNS, "h3.node.zl")
				if err != nil || strings.TrimSpace(string(out)) != overlay {
					return fmt.Errorf("%s: h3.node.zl is %q (%v), want %s", h.Name, out, err, overlay)
				}
				return nil
			})
		}
	})

	web := attach(t, ctx, tb, h1, "web1", "web")
	webName := web.c.ID() + ".web.zl"
	if _, err := web.c.StartProcess(ctx, testbed.HelperArgv("http-serve", fmt.Sprintf("0.0.0.0:%d", usWebPort))...); err != nil {
		t.Fatal(err)
	}
	if _, err := web.c.StartProcess(ctx, testbed.HelperArgv("udp-echo", fmt.Sprintf("0.0.0.0:%d", usUDPPort))...); err != nil {
		t.Fatal(err)
	}
	if _, err := h3.StartProcess(ctx, testbed.HelperArgv("http-serve", "127.0.0.1:8000")...); err != nil {
		t.Fatal(err)
	}
	if _, err := h3.StartProcess(ctx, testbed.HelperArgv("udp-echo", "127.0.0.1:5301")...); err != nil {
		t.Fatal(err)
	}

	t.Run("ping by name from a container", func(t *testing.T) {
		eventually(t, 20*time.Second, func() error {
			_, err := web.c.Exec(ctx, "ping", "-c1", "-W2", "h3.node.zl")
			return err
		})
	})

	t.Run("forward", func(t *testing.T) {
		url := fmt.Sprintf("http://h3.node.zl:%d/fwd", usFwdHTTP)
		eventually(t, 20*time.Second, func() error {
			out, err := web.c.Exec(ctx, "curl", "-sS", "--max-time", "3", url)
			if err != nil || string(out) != "zltb http /fwd" {
				return fmt.Errorf("curl %s from %s: %q %v", url, web.c, out, err)
			}
			return nil
		})
		for _, msg := range []string{"udp-one", "udp-two"} {
			out, err := web.c.Exec(ctx, testbed.HelperArgv("udp-send", fmt.Sprintf("%s:%d", overlay, usFwdUDP), msg)...)
			if err != nil || strings.TrimSpace(string(out)) != msg {
				t.Fatalf("udp through the forward: %q %v", out, err)
			}
		}
	})

	t.Run("forward to a closed port is refused", func(t *testing.T) {
		out, err := web.c.Exec(ctx, "curl", "-sS", "--max-time", "3", fmt.Sprintf("http://%s:9/", overlay))
		// curl says "Connection refused" or "Couldn't connect to server"
		// (exit 7) for a RST; a timeout would be exit 28.
		if err == nil || !strings.Contains(string(out), "refused") && !strings.Contains(string(out), "(7)") {
			t.Fatalf("curl to an unforwarded port: %q %v, want connection refused", out, err)
		}
	})

	t.Run("forward over the control API", func(t *testing.T) {
		f, err := h3.Client().AddForward(ctx, api.Forward{Protocol: "tcp", Port: 8081, Target: "127.0.0.1:8000"})
		if err != nil {
			t.Fatal(err)
		}
		if f.Target != "127.0.0.1:8000" {
			t.Fatalf("forward %+v", f)
		}
		out, err := web.c.Exec(ctx, "curl", "-sS", "--max-time", "3", fmt.Sprintf("http://%s:8081/api", overlay))
		if err != nil || string(out) != "zltb http /api" {
			t.Fatalf("through the API's forward: %q %v", out, err)
		}
		if _, err := h3.Client().AddForward(ctx, api.Forward{Port: 8081, Target: "127.0.0.1:9999"}); !isCode(err, api.CodeAlreadyExists) {
			t.Fatalf("conflicting forward: %v", err)
		}
		if err := h3.Client().RemoveForward(ctx, api.UnforwardRequest{Port: 8081}); err != nil {
			t.Fatal(err)
		}
		if out, err := web.c.Exec(ctx, "curl", "-sS", "--max-time", "3", fmt.Sprintf("http://%s:8081/api", overlay)); err == nil {
			t.Fatalf("removed forward still answers: %q", out)
		}
		if _, err := h1.Client().AddForward(ctx, api.Forward{Port: 8081}); !isCode(err, api.CodeUnsupported) {
			t.Fatalf("forward on a kernel-mode node: %v, want unsupported", err)
		}
	})

	t.Run("socks5 and http proxy", func(t *testing.T) {
		url := fmt.Sprintf("http://%s:%d/proxied", webName, usWebPort)
		for _, how := range [][]string{
			{"--socks5-hostname", usSOCKS},
			{"--proxy", "http://" + usHTTPProxy},
		} {
			argv := append([]string{"curl", "-sS", "--max-time", "5"}, how...)
			// The first try may precede the container's record on h3.
			eventually(t, 20*time.Second, func() error {
				out, err := h3.Exec(ctx, append(argv, url)...)
				if err != nil || string(out) != "zltb http /proxied" {
					return fmt.Errorf("%v %s on h3: %q %v", how, url, out, err)
				}
				return nil
			})
		}
		out, err := h3.Exec(ctx, "curl", "-sS", "--max-time", "5", "--socks5-hostname", usSOCKS, "http://nope.web.zl/")
		if err == nil || !strings.Contains(string(out), "(4)") {
			t.Fatalf("socks5 to an unknown name: %q %v, want reply 4 (host unreachable)", out, err)
		}
	})

	t.Run("socks5 udp associate", func(t *testing.T) {
		self, err := os.Executable()
		if err != nil {
			t.Fatal(err)
		}
		target := fmt.Sprintf("%s:%d", webName, usUDPPort)
		out, err := h3.Exec(ctx, "env", socksUDPEnv+"="+usSOCKS+" "+target+" socks-udp-hello", self)
		if err != nil || strings.TrimSpace(string(out)) != "socks-udp-hello" {
			t.Fatalf("udp through SOCKS5 to %s: %q %v", target, out, err)
		}
	})

	t.Run("attach is unsupported", func(t *testing.T) {
		c, err := tb.AddContainer(ctx, h3, "nope")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.Attach(ctx, "web"); !isCode(err, api.CodeUnsupported) {
			t.Fatalf("attach on a userspace node: %v, want unsupported", err)
		}
	})

	t.Run("proxy port in use", func(t *testing.T) {
		out, err := h3.Exec(ctx, bin, "up", "--userspace", "--name", "h3b", "--state-dir", "/tmp/zlus-h3b",
			"--socket", "/tmp/zlus-h3b.sock", "--cluster-key-file", tb.KeyFile, "--gossip-port", "7947", "--listen-port", "51821",
			"--socks5-listen", usSOCKS)
		msg := strings.TrimSpace(string(out))
		if err == nil || strings.Count(msg, "\n") != 0 || !strings.Contains(msg, "address already in use") {
			t.Fatalf("second node on a busy SOCKS port: %q %v, want one error line", msg, err)
		}
		if _, serr := os.Stat("/tmp/zlus-h3b"); serr == nil {
			t.Errorf("failed start left its state dir behind")
			os.RemoveAll("/tmp/zlus-h3b")
		}
	})

	t.Run("kill and restart", func(t *testing.T) {
		before := status(t, h3)
		if err := h3.Kill(); err != nil {
			t.Fatal(err)
		}
		if err := h3.Start(ctx); err != nil {
			t.Fatal(err)
		}
		if err := h3.WaitReady(ctx); err != nil {
			t.Fatal(err)
		}
		after := status(t, h3)
		if after.PublicKey != before.PublicKey || !slices.Equal(after.Blocks, before.Blocks) {
			t.Fatalf("after kill -9: key %s blocks %v, was %s %v", after.PublicKey, after.Blocks, before.PublicKey, before.Blocks)
		}
		checkUnprivileged(t, ctx, h3)
		eventually(t, 30*time.Second, func() error { return h1.Ping(ctx, overlay) })
		eventually(t, 20*time.Second, func() error {
			out, err := web.c.Exec(ctx, "curl", "-sS", "--max-time", "3", fmt.Sprintf("http://h3.node.zl:%d/again", usFwdHTTP))
			if err != nil || string(out) != "zltb http /again" {
				return fmt.Errorf("forward after restart: %q %v", out, err)
			}
			return nil
		})
	})
}

// checkUnprivileged reads h's daemon's /proc status: uid nobody, every
// capability set empty, no /dev/net/tun open, and none to open in its
// mount namespace.
func checkUnprivileged(t *testing.T, ctx context.Context, h *testbed.Host) {
	t.Helper()
	pid := h.PID()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	fields := map[string]string{}
	for _, l := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(l, ":"); ok {
			fields[k] = strings.TrimSpace(v)
		}
	}
	if uid := strings.Fields(fields["Uid"]); len(uid) == 0 || uid[0] != "65534" || uid[1] != "65534" {
		t.Errorf("%s runs as uid %q, want nobody (65534)", h.Name, fields["Uid"])
	}
	for _, c := range []string{"CapEff", "CapPrm", "CapInh", "CapBnd", "CapAmb"} {
		if fields[c] != "0000000000000000" {
			t.Errorf("%s: %s = %s, want 0", h.Name, c, fields[c])
		}
	}
	fds, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	for _, fd := range fds {
		if target, _ := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, fd.Name())); strings.Contains(target, "net/tun") {
			t.Errorf("%s holds %s open", h.Name, target)
		}
	}
	if out, err := h.Exec(ctx, "sh", "-c", "test ! -e /dev/net/tun && echo absent"); err != nil || strings.TrimSpace(string(out)) != "absent" {
		t.Errorf("/dev/net/tun exists in %s: %q %v", h.Name, out, err)
	}
}

func isCode(err error, code string) bool {
	var ae *api.Error
	return errors.As(err, &ae) && ae.Code == code
}

// socksUDPMain is the SOCKS5 UDP client role (socksUDPEnv).
func socksUDPMain(spec string) int {
	f := strings.Fields(spec)
	if len(f) != 3 {
		fmt.Fprintln(os.Stderr, "want PROXY TARGET MSG")
		return 2
	}
	reply, err := socksUDP(f[0], f[1], f[2])
	if err != nil {
		fmt.Fprintln(os.Stderr, "socks udp:", err)
		return 1
	}
	fmt.Println(reply)
	return 0
}

// socksUDP sends msg to target (host:port, a name) through a SOCKS5 UDP
// ASSOCIATE at proxy and returns the reply's payload.
func socksUDP(proxy, target, msg string) (string, error) {
	c, err := net.DialTimeout("tcp", proxy, 3*time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write([]byte{5, 1, 0}); err != nil {
		return "", err
	}
	var g [2]byte
	if _, err := io.ReadFull(c, g[:]); err != nil || g[1] != 0 {
		return "", fmt.Errorf("greeting %v %v", g, err)
	}
	c.Write([]byte{5, 3, 0, 1, 0, 0, 0, 0, 0, 0})
	var rep [10]byte
	if _, err := io.ReadFull(c, rep[:]); err != nil || rep[1] != 0 || rep[3] != 1 {
		return "", fmt.Errorf("associate reply %v %v", rep, err)
	}
	relay := netip.AddrPortFrom(netip.AddrFrom4([4]byte(rep[4:8])), binary.BigEndian.Uint16(rep[8:]))
	uc, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(relay))
	if err != nil {
		return "", err
	}
	defer uc.Close()
	host, portStr, _ := net.SplitHostPort(target)
	var port uint16
	fmt.Sscan(portStr, &port)
	dgram := append([]byte{0, 0, 0, 3, byte(len(host))}, host...)
	dgram = binary.BigEndian.AppendUint16(dgram, port)
	dgram = append(dgram, msg...)
	buf := make([]byte, 2048)
	for try := 0; try < 3; try++ {
		uc.Write(dgram)
		uc.SetReadDeadline(time.Now().Add(2 * time.Second))
		n, err := uc.Read(buf)
		if err != nil {
			continue
		}
		if n < 10 || buf[3] != 1 {
			return "", fmt.Errorf("reply header %x", buf[:n])
		}
		return string(bytes.TrimSpace(buf[10:n])), nil
	}
	return "", errors.New("no reply through the relay")
}
