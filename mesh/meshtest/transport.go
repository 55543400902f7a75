// Package meshtest has fakes for testing the mesh package and its users
// without sockets: an in-memory memberlist transport whose Network can
// partition groups of nodes, cut a node off, and heal.
//
// Packets are delivered like UDP: asynchronously, dropped when the
// receiver's queue is full, when the receiver is gone, or when the network
// separates the two nodes, never with an error to the sender. Streams are
// in-memory pipes (net.Pipe): dialing a node that is gone or cut off fails at
// once with an error, like a refused connection (a real partition would
// time out; tests stay fast). Streams already open when a partition starts
// keep working until closed.
package meshtest

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/memberlist"
)

// ErrUnreachable is returned by Dial when the network separates the nodes
// or nobody is at the address.
var ErrUnreachable = errors.New("meshtest: unreachable")

// packetQueue is each transport's packet channel size.
const packetQueue = 1024

// Network connects Transports. It is safe for concurrent use.
type Network struct {
	mu      sync.Mutex
	byAddr  map[netip.AddrPort]*Transport
	nextIP  uint32
	group   map[string]int  // node name → partition group (0 when absent)
	cut     map[string]bool // node name → cut off from everyone
	dropped atomic.Uint64
	packets atomic.Uint64
	bytes   atomic.Uint64
	streams atomic.Uint64
}

// NewNetwork returns an empty network.
func NewNetwork() *Network {
	return &Network{
		byAddr: make(map[netip.AddrPort]*Transport),
		group:  make(map[string]int),
		cut:    make(map[string]bool),
	}
}

// NewTransport returns a transport for the node called name at a fresh
// address (127.77.x.y:7946; the address is only a name inside the Network,
// nothing is sent on loopback).
func (n *Network) NewTransport(name string) *Transport {
	n.mu.Lock()
	defer n.mu.Unlock()
	for {
		n.nextIP++
		ip := n.nextIP
		addr := netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 77, byte(ip >> 8), byte(ip)}), 7946)
		if _, used := n.byAddr[addr]; !used && byte(ip) != 0 && byte(ip) != 255 {
			return n.attachLocked(name, addr)
		}
	}
}

// NewTransportAt returns a transport for name at addr (a node restarting at
// its old address). It fails while another transport holds addr.
func (n *Network) NewTransportAt(name string, addr netip.AddrPort) (*Transport, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if _, used := n.byAddr[addr]; used {
		return nil, fmt.Errorf("meshtest: address %s is in use", addr)
	}
	return n.attachLocked(name, addr), nil
}

func (n *Network) attachLocked(name string, addr netip.AddrPort) *Transport {
	t := &Transport{
		net:      n,
		name:     name,
		addr:     addr,
		packetCh: make(chan *memberlist.Packet, packetQueue),
		streamCh: make(chan net.Conn),
		done:     make(chan struct{}),
	}
	n.byAddr[addr] = t
	return t
}

// Partition splits the network: nodes (by name) in different groups cannot
// reach each other. Nodes not named stay in group 0 together. It replaces
// any previous partition.
func (n *Network) Partition(groups ...[]string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.group = make(map[string]int)
	for i, g := range groups {
		for _, name := range g {
			n.group[name] = i + 1
		}
	}
}

// Cut cuts the node called name off from every other node (its cable is
// pulled), until Heal.
func (n *Network) Cut(name string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.cut[name] = true
}

// Heal removes every partition and cut.
func (n *Network) Heal() {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.group = make(map[string]int)
	n.cut = make(map[string]bool)
}

// Dropped returns how many packets were dropped (partition, cut, no
// receiver, or full queue).
func (n *Network) Dropped() uint64 { return n.dropped.Load() }

// Stats counts what the network carried: packets delivered and their bytes,
// and streams opened.
type Stats struct {
	Packets, PacketBytes, Streams, Dropped uint64
}

// Stats returns the counters since the network was made.
func (n *Network) Stats() Stats {
	return Stats{Packets: n.packets.Load(), PacketBytes: n.bytes.Load(), Streams: n.streams.Load(), Dropped: n.dropped.Load()}
}

// route returns the transport at addr if from may reach it.
func (n *Network) route(from *Transport, addr string) (*Transport, bool) {
	ap, err := netip.ParseAddrPort(addr)
	if err != nil {
		return nil, false
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	to, ok := n.byAddr[netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())]
	if !ok || n.cut[from.name] || n.cut[to.name] || n.group[from.name] != n.group[to.name] {
		return nil, false
	}
	return to, true
}

// Transport is a memberlist.NodeAwareTransport inside a Network. Routing
// is by address only (the name in memberlist.Address is ignored), so a node
// restarted at another address is a different destination, as on a real
// network.
type Transport struct {
	net      *Network
	name     string
	addr     netip.AddrPort
	packetCh chan *memberlist.Packet
	streamCh chan net.Conn
	done     chan struct{}
	once     sync.Once
}

var _ memberlist.NodeAwareTransport = (*Transport)(nil)

// Addr returns the transport's address.
func (t *Transport) Addr() netip.AddrPort { return t.addr }

// Name returns the node name the transport was made for.
func (t *Transport) Name() string { return t.name }

// FinalAdvertiseAddr returns the transport's address, whatever is asked.
func (t *Transport) FinalAdvertiseAddr(string, int) (net.IP, int, error) {
	return net.IP(t.addr.Addr().AsSlice()), int(t.addr.Port()), nil
}

// WriteTo sends a packet to addr (host:port).
func (t *Transport) WriteTo(b []byte, addr string) (time.Time, error) {
	return t.WriteToAddress(b, memberlist.Address{Addr: addr})
}

// WriteToAddress sends a copy of b to a.Addr. It never blocks and never
// fails: undeliverable packets are dropped.
func (t *Transport) WriteToAddress(b []byte, a memberlist.Address) (time.Time, error) {
	now := time.Now()
	select {
	case <-t.done:
		return now, errors.New("meshtest: transport is shut down")
	default:
	}
	to, ok := t.net.route(t, a.Addr)
	if !ok {
		t.net.dropped.Add(1)
		return now, nil
	}
	p := &memberlist.Packet{
		Buf:       append([]byte(nil), b...),
		From:      net.UDPAddrFromAddrPort(t.addr),
		Timestamp: now,
	}
	select {
	case <-to.done:
		t.net.dropped.Add(1)
	case to.packetCh <- p:
		t.net.packets.Add(1)
		t.net.bytes.Add(uint64(len(b)))
	default:
		t.net.dropped.Add(1)
	}
	return now, nil
}

// PacketCh returns the received packets.
func (t *Transport) PacketCh() <-chan *memberlist.Packet { return t.packetCh }

// DialTimeout opens a stream to addr (host:port).
func (t *Transport) DialTimeout(addr string, timeout time.Duration) (net.Conn, error) {
	return t.DialAddressTimeout(memberlist.Address{Addr: addr}, timeout)
}

// DialAddressTimeout opens a stream to a.Addr. It fails at once when the
// node is unreachable, and after timeout when it does not accept.
func (t *Transport) DialAddressTimeout(a memberlist.Address, timeout time.Duration) (net.Conn, error) {
	select {
	case <-t.done:
		return nil, errors.New("meshtest: transport is shut down")
	default:
	}
	to, ok := t.net.route(t, a.Addr)
	if !ok {
		return nil, fmt.Errorf("dial %s: %w", a.Addr, ErrUnreachable)
	}
	local, remote := net.Pipe()
	mine := &conn{Conn: local, local: t.addr, remote: to.addr}
	theirs := &conn{Conn: remote, local: to.addr, remote: t.addr}
	var timer <-chan time.Time
	if timeout > 0 {
		tm := time.NewTimer(timeout)
		defer tm.Stop()
		timer = tm.C
	}
	select {
	case to.streamCh <- theirs:
		t.net.streams.Add(1)
		return mine, nil
	case <-to.done:
	case <-t.done:
	case <-timer:
	}
	local.Close()
	remote.Close()
	return nil, fmt.Errorf("dial %s: %w", a.Addr, ErrUnreachable)
}

// StreamCh returns the accepted streams.
func (t *Transport) StreamCh() <-chan net.Conn { return t.streamCh }

// Shutdown detaches the transport from the network (its address becomes
// free) and makes every later send fail. It is idempotent.
func (t *Transport) Shutdown() error {
	t.once.Do(func() {
		t.net.mu.Lock()
		if t.net.byAddr[t.addr] == t {
			delete(t.net.byAddr, t.addr)
		}
		t.net.mu.Unlock()
		close(t.done)
	})
	return nil
}

// conn is a pipe end with TCP-like addresses.
type conn struct {
	net.Conn
	local, remote netip.AddrPort
}

func (c *conn) LocalAddr() net.Addr  { return net.TCPAddrFromAddrPort(c.local) }
func (c *conn) RemoteAddr() net.Addr { return net.TCPAddrFromAddrPort(c.remote) }
