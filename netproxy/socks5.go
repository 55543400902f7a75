package netproxy

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"time"
)

// SOCKS5 protocol constants (RFC 1928).
const (
	socksVersion   = 5
	socksNoAuth    = 0x00
	socksNoMethods = 0xff

	socksConnect      = 1
	socksBind         = 2
	socksUDPAssociate = 3

	atypIPv4   = 1
	atypDomain = 3
	atypIPv6   = 4
)

// SOCKS5 reply codes.
const (
	repSucceeded          = 0
	repGeneralFailure     = 1
	repNetworkUnreachable = 3
	repHostUnreachable    = 4
	repConnRefused        = 5
	repTTLExpired         = 6
	repCmdNotSupported    = 7
	repAddrNotSupported   = 8
)

// handshakeTimeout bounds the greeting and the request.
const handshakeTimeout = 10 * time.Second

// SOCKS5 is a SOCKS5 server (RFC 1928, no authentication) into the mesh:
// CONNECT and UDP ASSOCIATE; BIND is refused with "command not supported".
// Names in requests (socks5h, `curl --socks5-hostname`) are resolved by the
// Dialer's Resolver, so mesh names work; a name that does not resolve is
// answered with "host unreachable" (4).
type SOCKS5 struct {
	Dialer *Dialer
	// DialTimeout bounds a CONNECT; zero: 10s.
	DialTimeout time.Duration
	Log         *slog.Logger

	wg sync.WaitGroup
}

func (s *SOCKS5) log() *slog.Logger {
	if s.Log == nil {
		return slog.Default()
	}
	return s.Log
}

// Serve accepts connections on ln until it is closed and serves each on a
// goroutine of its own. It returns when ln is closed and every connection
// it accepted has ended.
func (s *SOCKS5) Serve(ln net.Listener) error {
	defer s.wg.Wait()
	for {
		c, err := ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				time.Sleep(10 * time.Millisecond)
				continue
			}
			return fmt.Errorf("socks5 accept: %w", err)
		}
		s.wg.Go(func() { s.serveConn(c) })
	}
}

// socksRequest is a parsed request: the command and its destination, an
// address or a name.
type socksRequest struct {
	cmd  byte
	addr netip.AddrPort // when host == ""
	host string         // a name
	port uint16
}

func (r socksRequest) target() string {
	if r.host != "" {
		return net.JoinHostPort(r.host, fmt.Sprint(r.port))
	}
	return r.addr.String()
}

func (s *SOCKS5) serveConn(c net.Conn) {
	defer c.Close()
	c.SetDeadline(time.Now().Add(handshakeTimeout))
	br := bufio.NewReader(c)
	if err := socksGreeting(br, c); err != nil {
		s.log().Debug("socks5 greeting", "client", c.RemoteAddr(), "err", err)
		return
	}
	req, rep, err := readSocksRequest(br)
	if err != nil {
		s.log().Debug("socks5 request", "client", c.RemoteAddr(), "err", err)
		if rep != 0 {
			writeSocksReply(c, rep, netip.AddrPort{})
		}
		return
	}
	switch req.cmd {
	case socksConnect:
		s.connect(c, br, req)
	case socksUDPAssociate:
		s.associate(c, br, req)
	default:
		writeSocksReply(c, repCmdNotSupported, netip.AddrPort{})
	}
}

// socksGreeting reads the method list and picks "no authentication".
func socksGreeting(br *bufio.Reader, w io.Writer) error {
	var hdr [2]byte
	if _, err := io.ReadFull(br, hdr[:]); err != nil {
		return err
	}
	if hdr[0] != socksVersion {
		return fmt.Errorf("version %d, not 5", hdr[0])
	}
	methods := make([]byte, hdr[1])
	if _, err := io.ReadFull(br, methods); err != nil {
		return err
	}
	for _, m := range methods {
		if m == socksNoAuth {
			_, err := w.Write([]byte{socksVersion, socksNoAuth})
			return err
		}
	}
	w.Write([]byte{socksVersion, socksNoMethods})
	return errors.New("client offers no method without authentication")
}

// readSocksRequest reads VER CMD RSV ATYP DST.ADDR DST.PORT. On error, rep
// is the reply code to send (0: none, the stream is broken).
func readSocksRequest(br *bufio.Reader) (req socksRequest, rep byte, err error) {
	var hdr [4]byte
	if _, err := io.ReadFull(br, hdr[:]); err != nil {
		return req, 0, err
	}
	if hdr[0] != socksVersion {
		return req, repGeneralFailure, fmt.Errorf("request version %d", hdr[0])
	}
	req.cmd = hdr[1]
	host, addr, err := readSocksAddr(br, hdr[3])
	if err != nil {
		if errors.Is(err, errAtyp) {
			return req, repAddrNotSupported, err
		}
		return req, 0, err
	}
	var port [2]byte
	if _, err := io.ReadFull(br, port[:]); err != nil {
		return req, 0, err
	}
	req.port = binary.BigEndian.Uint16(port[:])
	req.host = host
	if host == "" {
		req.addr = netip.AddrPortFrom(addr, req.port)
	}
	return req, 0, nil
}

var errAtyp = errors.New("address type not supported")

// readSocksAddr reads ATYP's address: a name (host) or an IP (addr). A name
// that is an IP literal comes back as addr.
func readSocksAddr(r io.Reader, atyp byte) (host string, addr netip.Addr, err error) {
	switch atyp {
	case atypIPv4:
		var b [4]byte
		if _, err := io.ReadFull(r, b[:]); err != nil {
			return "", addr, err
		}
		return "", netip.AddrFrom4(b), nil
	case atypIPv6:
		var b [16]byte
		if _, err := io.ReadFull(r, b[:]); err != nil {
			return "", addr, err
		}
		return "", netip.AddrFrom16(b).Unmap(), nil
	case atypDomain:
		var l [1]byte
		if _, err := io.ReadFull(r, l[:]); err != nil {
			return "", addr, err
		}
		if l[0] == 0 {
			return "", addr, errors.New("empty name")
		}
		b := make([]byte, l[0])
		if _, err := io.ReadFull(r, b); err != nil {
			return "", addr, err
		}
		name := string(b)
		if a, err := netip.ParseAddr(name); err == nil {
			return "", a.Unmap(), nil
		}
		if !validHostname(name) {
			return "", addr, fmt.Errorf("name %q: not a host name", name)
		}
		return name, addr, nil
	}
	return "", addr, fmt.Errorf("%w: %d", errAtyp, atyp)
}

// appendSocksAddr appends ATYP ADDR PORT for ap.
func appendSocksAddr(b []byte, ap netip.AddrPort) []byte {
	a := ap.Addr().Unmap()
	if a.Is4() || !a.IsValid() {
		b = append(b, atypIPv4)
		v4 := [4]byte{}
		if a.IsValid() {
			v4 = a.As4()
		}
		b = append(b, v4[:]...)
	} else {
		b = append(b, atypIPv6)
		v6 := a.As16()
		b = append(b, v6[:]...)
	}
	return binary.BigEndian.AppendUint16(b, ap.Port())
}

func writeSocksReply(w io.Writer, rep byte, bound netip.AddrPort) error {
	_, err := w.Write(appendSocksAddr([]byte{socksVersion, rep, 0}, bound))
	return err
}

// replyFor maps a dial error to a SOCKS5 reply code.
func replyFor(err error) byte {
	msg := strings.ToLower(err.Error())
	switch {
	case IsNotFound(err):
		return repHostUnreachable
	case strings.Contains(msg, "refused") || strings.Contains(msg, "reset"):
		return repConnRefused
	case strings.Contains(msg, "no route") || strings.Contains(msg, "network is unreachable"):
		return repNetworkUnreachable
	case strings.Contains(msg, "host is unreachable"):
		return repHostUnreachable
	case errors.Is(err, context.DeadlineExceeded) || strings.Contains(msg, "timed out") || strings.Contains(msg, "timeout"):
		return repTTLExpired
	}
	return repGeneralFailure
}

func (s *SOCKS5) connect(c net.Conn, br *bufio.Reader, req socksRequest) {
	timeout := s.DialTimeout
	if timeout == 0 {
		timeout = 10 * time.Second
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	out, err := s.Dialer.DialContext(ctx, "tcp", req.target())
	cancel()
	if err != nil {
		rep := replyFor(err)
		s.log().Info("socks5 connect failed", "client", c.RemoteAddr(), "target", req.target(), "reply", rep, "err", err)
		writeSocksReply(c, rep, netip.AddrPort{})
		return
	}
	bound, _ := netip.ParseAddrPort(out.LocalAddr().String())
	if err := writeSocksReply(c, repSucceeded, bound); err != nil {
		out.Close()
		return
	}
	c.SetDeadline(time.Time{})
	splice(&bufferedConn{Conn: c, r: br}, out)
}

// bufferedConn is a net.Conn whose reads go through a bufio.Reader that
// may hold bytes already read from it.
type bufferedConn struct {
	net.Conn
	r *bufio.Reader
}

func (b *bufferedConn) Read(p []byte) (int, error) { return b.r.Read(p) }

func (b *bufferedConn) CloseWrite() error {
	if cw, ok := b.Conn.(closeWriter); ok {
		return cw.CloseWrite()
	}
	return b.Conn.Close()
}

// associate serves UDP ASSOCIATE: a UDP socket on the address the client
// reached us on relays its datagrams into the mesh and the answers back,
// for as long as the TCP connection stays open. Only datagrams from the
// client's IP are taken.
func (s *SOCKS5) associate(c net.Conn, br *bufio.Reader, req socksRequest) {
	local, _ := netip.ParseAddrPort(c.LocalAddr().String())
	client, _ := netip.ParseAddrPort(c.RemoteAddr().String())
	pc, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(local.Addr(), 0)))
	if err != nil {
		s.log().Warn("socks5 udp associate: local socket", "err", err)
		writeSocksReply(c, repGeneralFailure, netip.AddrPort{})
		return
	}
	defer pc.Close()
	family := 4
	if local.Addr().Unmap().Is6() {
		family = 6
	}
	mesh, err := s.Dialer.Net.ListenUDP(family)
	if err != nil {
		s.log().Warn("socks5 udp associate: mesh socket", "err", err)
		writeSocksReply(c, repGeneralFailure, netip.AddrPort{})
		return
	}
	defer mesh.Close()
	bound := pc.LocalAddr().(*net.UDPAddr).AddrPort()
	if err := writeSocksReply(c, repSucceeded, bound); err != nil {
		return
	}
	c.SetDeadline(time.Time{})

	r := &udpRelay{s: s, pc: pc, mesh: mesh, clientIP: client.Addr().Unmap()}
	if req.host == "" && req.addr.Port() != 0 && !req.addr.Addr().IsUnspecified() {
		r.setClient(netip.AddrPortFrom(req.addr.Addr().Unmap(), req.addr.Port()))
	}
	var wg sync.WaitGroup
	wg.Go(r.fromClient)
	wg.Go(r.fromMesh)
	io.Copy(io.Discard, br) // until the client closes the TCP connection
	pc.Close()
	mesh.Close()
	wg.Wait()
}

// udpRelay is one UDP association.
type udpRelay struct {
	s        *SOCKS5
	pc       *net.UDPConn   // the client side
	mesh     net.PacketConn // the mesh side
	clientIP netip.Addr

	mu     sync.Mutex
	client netip.AddrPort // learnt from the first datagram
}

func (r *udpRelay) setClient(ap netip.AddrPort) {
	r.mu.Lock()
	r.client = ap
	r.mu.Unlock()
}

func (r *udpRelay) getClient() netip.AddrPort {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.client
}

// fromClient takes datagrams "RSV RSV FRAG ATYP DST.ADDR DST.PORT DATA"
// from the client and sends DATA into the mesh. Fragments are dropped.
func (r *udpRelay) fromClient() {
	buf := make([]byte, 65535)
	for {
		n, from, err := r.pc.ReadFromUDPAddrPort(buf)
		if err != nil {
			return
		}
		from = netip.AddrPortFrom(from.Addr().Unmap(), from.Port())
		if from.Addr() != r.clientIP {
			continue
		}
		if c := r.getClient(); !c.IsValid() {
			r.setClient(from)
		} else if c != from {
			continue
		}
		dst, payload, err := parseSocksUDP(buf[:n])
		if err != nil {
			r.s.log().Debug("socks5 udp: bad datagram", "err", err)
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		ap, err := r.s.Dialer.Resolve(ctx, dst)
		cancel()
		if err != nil {
			r.s.log().Debug("socks5 udp: resolve", "target", dst, "err", err)
			continue
		}
		r.mesh.WriteTo(payload, net.UDPAddrFromAddrPort(ap))
	}
}

// fromMesh wraps each datagram from the mesh in the SOCKS UDP header and
// sends it to the client.
func (r *udpRelay) fromMesh() {
	buf := make([]byte, 65535)
	out := make([]byte, 0, 65535+22)
	for {
		n, from, err := r.mesh.ReadFrom(buf)
		if err != nil {
			return
		}
		src, err := netip.ParseAddrPort(from.String())
		if err != nil {
			continue
		}
		client := r.getClient()
		if !client.IsValid() {
			continue
		}
		out = appendSocksAddr(append(out[:0], 0, 0, 0), src)
		out = append(out, buf[:n]...)
		r.pc.WriteToUDPAddrPort(out, client)
	}
}

// parseSocksUDP splits a SOCKS5 UDP datagram into its destination
// (host:port) and payload.
func parseSocksUDP(b []byte) (dst string, payload []byte, err error) {
	if len(b) < 4 {
		return "", nil, errors.New("short datagram")
	}
	if b[2] != 0 {
		return "", nil, errors.New("fragmented datagram")
	}
	r := &sliceReader{b: b[4:]}
	host, addr, err := readSocksAddr(r, b[3])
	if err != nil {
		return "", nil, err
	}
	var port [2]byte
	if _, err := io.ReadFull(r, port[:]); err != nil {
		return "", nil, err
	}
	p := binary.BigEndian.Uint16(port[:])
	if host != "" {
		return net.JoinHostPort(host, fmt.Sprint(p)), r.b, nil
	}
	return netip.AddrPortFrom(addr, p).String(), r.b, nil
}

type sliceReader struct{ b []byte }

func (r *sliceReader) Read(p []byte) (int, error) {
	if len(r.b) == 0 {
		return 0, io.EOF
	}
	n := copy(p, r.b)
	r.b = r.b[n:]
	return n, nil
}

// validHostname accepts letters, digits, '-', '_' and '.' (what a DNS host
// name can hold); anything else never resolves and could confuse host:port
// parsing.
func validHostname(s string) bool {
	for _, r := range s {
		ok := r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.'
		if !ok {
			return false
		}
	}
	return true
}
