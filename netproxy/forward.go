package netproxy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Forward makes the node's overlay address answer on Port (Proto "tcp" or
// "udp") by connecting to Target, a local address.
type Forward struct {
	Proto  string
	Port   uint16
	Target netip.AddrPort
}

// String is the spec form ParseForward reads: "8080/tcp:127.0.0.1:80".
func (f Forward) String() string {
	return fmt.Sprintf("%d/%s:%s", f.Port, f.Proto, f.Target)
}

// Key names the overlay side of a forward: "8080/tcp".
func (f Forward) Key() string { return fmt.Sprintf("%d/%s", f.Port, f.Proto) }

// ParseForward reads PORT[/tcp|/udp][:LOCALADDR:LOCALPORT]. The protocol
// defaults to tcp, the target to 127.0.0.1 on the same port. LOCALADDR is an
// IP address ([::1] for IPv6), not a name.
func ParseForward(spec string) (Forward, error) {
	bad := func(why string) (Forward, error) {
		return Forward{}, fmt.Errorf("forward %q: %s (want PORT[/tcp|udp][:LOCALADDR:LOCALPORT])", spec, why)
	}
	head, target, hasTarget := strings.Cut(spec, ":")
	portStr, proto, hasProto := strings.Cut(head, "/")
	f := Forward{Proto: "tcp"}
	if hasProto {
		switch proto {
		case "tcp", "udp":
			f.Proto = proto
		default:
			return bad("protocol must be tcp or udp")
		}
	}
	p, err := strconv.ParseUint(portStr, 10, 16)
	if err != nil || p == 0 {
		return bad("port must be a number between 1 and 65535")
	}
	f.Port = uint16(p)
	if !hasTarget {
		f.Target = netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, 0, 1}), f.Port)
		return f, nil
	}
	ap, err := netip.ParseAddrPort(target)
	if err != nil {
		return bad("local target must be ip:port")
	}
	if ap.Port() == 0 || !ap.Addr().IsValid() || ap.Addr().IsUnspecified() || ap.Addr().IsMulticast() || ap.Addr().Zone() != "" {
		return bad("local target must be a unicast ip and a port between 1 and 65535")
	}
	f.Target = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	return f, nil
}

// ErrForwardExists and ErrNoForward are returned (wrapped) by Add and
// Remove.
var (
	ErrForwardExists = errors.New("port already forwarded")
	ErrNoForward     = errors.New("no such forward")
)

// Inbound is one connection or UDP flow from the mesh to the node's overlay
// address, as the network stack hands it to Forwards.
type Inbound struct {
	Proto string // "tcp" or "udp"
	Port  uint16 // the overlay port it was sent to
	From  netip.AddrPort
	// Accept completes the connection (TCP) or makes the flow's
	// connected socket (UDP) and returns the mesh side of it.
	Accept func() (net.Conn, error)
	// Reject refuses it: a TCP RST (an ICMP port unreachable for UDP
	// where the stack sends one). Reject may be nil for UDP.
	Reject func()
}

// Forwards is the table of forwards and what serves them. Its methods are
// safe for concurrent use; HandleTCP and HandleUDP run on the stack's
// goroutines.
type Forwards struct {
	// DialLocal connects to a forward's target; nil: net.Dialer.
	DialLocal func(ctx context.Context, network, address string) (net.Conn, error)
	// DialTimeout bounds a local TCP connect; zero: 5s.
	DialTimeout time.Duration
	// UDPIdle is how long a UDP flow lives without traffic; zero: 60s.
	UDPIdle time.Duration
	Log     *slog.Logger

	mu    sync.Mutex
	rules map[string]Forward // Key → forward
}

// Add installs f. A forward on the same port and protocol is an error
// wrapping ErrForwardExists unless it is identical (then Add does nothing).
func (fw *Forwards) Add(f Forward) error {
	fw.mu.Lock()
	defer fw.mu.Unlock()
	if fw.rules == nil {
		fw.rules = map[string]Forward{}
	}
	if old, ok := fw.rules[f.Key()]; ok {
		if old == f {
			return nil
		}
		return fmt.Errorf("forward %s: %w (to %s)", f.Key(), ErrForwardExists, old.Target)
	}
	fw.rules[f.Key()] = f
	return nil
}

// Remove deletes the forward of port/proto; connections it made go on.
func (fw *Forwards) Remove(proto string, port uint16) (Forward, error) {
	fw.mu.Lock()
	defer fw.mu.Unlock()
	k := Forward{Proto: proto, Port: port}.Key()
	f, ok := fw.rules[k]
	if !ok {
		return Forward{}, fmt.Errorf("forward %s: %w", k, ErrNoForward)
	}
	delete(fw.rules, k)
	return f, nil
}

// List returns the forwards sorted by protocol and port.
func (fw *Forwards) List() []Forward {
	fw.mu.Lock()
	defer fw.mu.Unlock()
	out := make([]Forward, 0, len(fw.rules))
	for _, f := range fw.rules {
		out = append(out, f)
	}
	slices.SortFunc(out, func(a, b Forward) int {
		if a.Proto != b.Proto {
			return strings.Compare(a.Proto, b.Proto)
		}
		return int(a.Port) - int(b.Port)
	})
	return out
}

// Lookup returns the forward of port/proto.
func (fw *Forwards) Lookup(proto string, port uint16) (Forward, bool) {
	fw.mu.Lock()
	defer fw.mu.Unlock()
	f, ok := fw.rules[Forward{Proto: proto, Port: port}.Key()]
	return f, ok
}

func (fw *Forwards) log() *slog.Logger {
	if fw.Log == nil {
		return slog.Default()
	}
	return fw.Log
}

func (fw *Forwards) dial(ctx context.Context, network, address string) (net.Conn, error) {
	if fw.DialLocal != nil {
		return fw.DialLocal(ctx, network, address)
	}
	var d net.Dialer
	return d.DialContext(ctx, network, address)
}

// HandleTCP serves one TCP connection from the mesh: with no forward on its
// port, or when the local target refuses, it is rejected (the mesh client
// sees a reset, as from a closed port); otherwise it is accepted and
// spliced to the target until both sides end. It blocks for the whole
// connection; the stack calls it on a goroutine of its own.
func (fw *Forwards) HandleTCP(in Inbound) {
	f, ok := fw.Lookup("tcp", in.Port)
	if !ok {
		in.Reject()
		return
	}
	timeout := fw.DialTimeout
	if timeout == 0 {
		timeout = 5 * time.Second
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	local, err := fw.dial(ctx, "tcp", f.Target.String())
	cancel()
	if err != nil {
		fw.log().Info("forward: local target refused", "forward", f.String(), "from", in.From, "err", err)
		in.Reject()
		return
	}
	mesh, err := in.Accept()
	if err != nil {
		local.Close()
		fw.log().Debug("forward: accept", "forward", f.String(), "from", in.From, "err", err)
		return
	}
	splice(mesh, local)
}

// HandleUDP takes the first datagram of a new UDP flow from the mesh. It
// reports false when no forward matches (the stack then treats the port as
// closed). Otherwise it accepts the flow and relays it to a local socket
// connected to the target, both ways, until the flow has been idle for
// UDPIdle. It does not block.
func (fw *Forwards) HandleUDP(in Inbound) bool {
	f, ok := fw.Lookup("udp", in.Port)
	if !ok {
		return false
	}
	mesh, err := in.Accept()
	if err != nil {
		fw.log().Debug("forward: accept udp", "forward", f.String(), "from", in.From, "err", err)
		return true
	}
	go func() {
		local, err := fw.dial(context.Background(), "udp", f.Target.String())
		if err != nil {
			fw.log().Info("forward: local udp target", "forward", f.String(), "err", err)
			mesh.Close()
			return
		}
		idle := fw.UDPIdle
		if idle == 0 {
			idle = 60 * time.Second
		}
		relayUDP(mesh, local, idle)
	}()
	return true
}

// relayUDP copies datagrams between two connected UDP sockets until neither
// has carried one for idle, then closes both.
func relayUDP(a, b net.Conn, idle time.Duration) {
	var last sync.Mutex
	seen := time.Now()
	touch := func() { last.Lock(); seen = time.Now(); last.Unlock() }
	done := make(chan struct{}, 2)
	one := func(dst, src net.Conn) {
		defer func() { done <- struct{}{} }()
		buf := make([]byte, 65535)
		for {
			src.SetReadDeadline(time.Now().Add(idle))
			n, err := src.Read(buf)
			if err != nil {
				var ne net.Error
				if errors.As(err, &ne) && ne.Timeout() {
					last.Lock()
					quiet := time.Since(seen) >= idle
					last.Unlock()
					if !quiet {
						continue
					}
				}
				a.Close()
				b.Close()
				return
			}
			touch()
			if _, err := dst.Write(buf[:n]); err != nil {
				// A local ICMP refusal surfaces as an error on the
				// next read or write; keep the flow until idle.
				continue
			}
		}
	}
	go one(b, a)
	go one(a, b)
	<-done
	<-done
}
