package testbed

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"time"
)

// Helper programs: the machine has no nc or socat, so a test binary can act
// as small servers and clients inside hosts, containers and the outside.
// HelperArgv gives the argv (the test binary itself plus a marker), and
// RunHelper, called first thing in TestMain, plays the role:
//
//	func TestMain(m *testing.M) {
//		testbed.RunHelper()
//		os.Exit(m.Run())
//	}
//
//	srv, _ := tb.StartOutside(ctx, testbed.HelperArgv("tcp-echo", "198.51.100.2:8080")...)
//	out, err := c.Exec(ctx, testbed.HelperArgv("tcp-send", "198.51.100.2:8080", "hello")...)
//	// out == "hello"; srv.Output() has "tcp from 192.0.2.11:…: 5 bytes"
//
// Roles:
//
//	tcp-echo ADDR       accept connections on ADDR, echo each to its end; print "listening ADDR",
//	                    then "tcp from IP:PORT: N bytes" per connection
//	udp-echo ADDR       echo datagrams on ADDR; print "listening ADDR", then "udp from IP:PORT: N bytes"
//	tcp-send ADDR MSG   connect, send MSG, half-close, print what comes back; exit 1 unless it is MSG
//	udp-send ADDR MSG   send MSG, print the reply; exit 1 unless it is MSG
//	http-serve ADDR     serve HTTP on ADDR: every GET answers "zltb http <path>"; print "listening ADDR"
//
// Servers run until killed (Process.Stop, Close); clients give up after
// HelperTimeout.

// helperMarker is os.Args[1] of a helper process.
const helperMarker = "zltb-helper"

// HelperTimeout bounds each step (connect, send, receive) of the helper
// clients.
const HelperTimeout = 2 * time.Second

// HelperArgv returns the argv that runs the current binary in the helper role
// with its arguments. The binary must call RunHelper from TestMain.
func HelperArgv(role string, args ...string) []string {
	self, err := os.Executable()
	if err != nil {
		self = os.Args[0]
	}
	return append([]string{self, helperMarker, role}, args...)
}

// RunHelper plays a helper role and exits when the process was started by
// HelperArgv; otherwise it returns at once.
func RunHelper() {
	if len(os.Args) < 3 || os.Args[1] != helperMarker {
		return
	}
	if err := runHelper(os.Args[2], os.Args[3:], os.Stdout); err != nil {
		fmt.Fprintf(os.Stderr, "%s %s: %v\n", helperMarker, os.Args[2], err)
		os.Exit(1)
	}
	os.Exit(0)
}

func runHelper(role string, args []string, out io.Writer) error {
	want := map[string]int{"tcp-echo": 1, "udp-echo": 1, "tcp-send": 2, "udp-send": 2, "http-serve": 1}
	n, ok := want[role]
	if !ok {
		return fmt.Errorf("unknown role (want tcp-echo, udp-echo, tcp-send, udp-send or http-serve)")
	}
	if len(args) != n {
		return fmt.Errorf("want %d arguments, got %q", n, args)
	}
	switch role {
	case "tcp-echo":
		return tcpEcho(args[0], out)
	case "udp-echo":
		return udpEcho(args[0], out)
	case "tcp-send":
		return tcpSend(args[0], args[1], out)
	case "http-serve":
		return httpServe(args[0], out)
	default:
		return udpSend(args[0], args[1], out)
	}
}

func tcpEcho(addr string, out io.Writer) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "listening %s\n", ln.Addr())
	for {
		c, err := ln.Accept()
		if err != nil {
			return err
		}
		go func() {
			defer c.Close()
			n, _ := io.Copy(c, c)
			fmt.Fprintf(out, "tcp from %s: %d bytes\n", c.RemoteAddr(), n)
		}()
	}
}

func udpEcho(addr string, out io.Writer) error {
	pc, err := net.ListenPacket("udp", addr)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "listening %s\n", pc.LocalAddr())
	buf := make([]byte, 65535)
	for {
		n, from, err := pc.ReadFrom(buf)
		if err != nil {
			return err
		}
		pc.WriteTo(buf[:n], from)
		fmt.Fprintf(out, "udp from %s: %d bytes\n", from, n)
	}
}

var errMismatch = errors.New("the reply differs from what was sent")

func tcpSend(addr, msg string, out io.Writer) error {
	c, err := net.DialTimeout("tcp", addr, HelperTimeout)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(2 * HelperTimeout))
	if _, err := io.WriteString(c, msg); err != nil {
		return err
	}
	if err := c.(*net.TCPConn).CloseWrite(); err != nil {
		return err
	}
	reply, err := io.ReadAll(c)
	out.Write(reply)
	if err != nil {
		return err
	}
	if string(reply) != msg {
		return errMismatch
	}
	return nil
}

func udpSend(addr, msg string, out io.Writer) error {
	c, err := net.DialTimeout("udp", addr, HelperTimeout)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(HelperTimeout))
	if _, err := io.WriteString(c, msg); err != nil {
		return err
	}
	buf := make([]byte, 65535)
	n, err := c.Read(buf)
	if err != nil {
		return err
	}
	out.Write(buf[:n])
	if !bytes.Equal(buf[:n], []byte(msg)) {
		return errMismatch
	}
	return nil
}

func httpServe(addr string, out io.Writer) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "listening %s\n", ln.Addr())
	return http.Serve(ln, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(out, "http from %s: %s %s\n", r.RemoteAddr, r.Method, r.URL.Path)
		fmt.Fprintf(w, "zltb http %s", r.URL.Path)
	}))
}
