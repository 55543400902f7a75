package tun

import "net/netip"

// Direction of a packet, named relative to the network.
type Direction int

const (
	// Outbound packets come from the OS and go to WireGuard.
	Outbound Direction = iota
	// Inbound packets come from WireGuard and go to the OS.
	Inbound
)

// Verdict is what a hook decides about a packet.
type Verdict int

const (
	// Accept passes the packet to the next hook, and after the last one on.
	Accept Verdict = iota
	// Drop discards the packet.
	Drop
	// Consumed means the hook took the packet (and may have injected an
	// answer); it goes no further.
	Consumed
)

// Packet is one IP packet as the hooks see it, parsed once. Buf is the whole
// IP packet; it is valid only during the hook call and must be copied to be
// kept.
type Packet struct {
	Buf      []byte
	Version  int // 4 or 6; 0 when the packet did not parse
	Proto    uint8
	Src, Dst netip.Addr
	// SrcPort and DstPort are set for TCP and UDP.
	SrcPort, DstPort uint16
	// Payload is the transport payload (after the TCP or UDP header), nil
	// for other protocols and fragments.
	Payload []byte
}

// HookFunc inspects or answers one packet.
type HookFunc func(p *Packet) Verdict

// Wrapper is a Device around another one that runs hooks on the packet path.
type Wrapper struct{}

// NewWrapper wraps dev.
func NewWrapper(dev Device) *Wrapper { panic("unimplemented") }

// AddHook adds a hook for one direction. Hooks run in ascending order.
func (w *Wrapper) AddHook(dir Direction, order int, name string, fn HookFunc) (remove func()) {
	panic("unimplemented")
}

// InjectInbound writes a whole IP packet towards the OS.
func (w *Wrapper) InjectInbound(pkt []byte) error { panic("unimplemented") }
