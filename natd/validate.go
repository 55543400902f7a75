package natd

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"strings"
)

// Validate checks cfg and returns the first problem, wrapping ErrInvalid (and
// ErrConflict for a host port claimed twice), naming the field and the value.
// It does not look at the kernel: a HostAddr that is not (yet) a local
// address is accepted and simply matches nothing.
func (c Config) Validate() error {
	if err := c.validateNet(); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	if len(c.Ports) > MaxPorts {
		return fmt.Errorf("%w: %d ports, at most %d", ErrInvalid, len(c.Ports), MaxPorts)
	}
	// Host ports by protocol and port: published on all addresses (any),
	// on one address (first), and by protocol, port and address (one).
	all := make(map[uint32]int, len(c.Ports))
	first := make(map[uint32]int)
	one := make(map[uint64]int)
	for i, p := range c.Ports {
		if err := c.validatePort(p); err != nil {
			return fmt.Errorf("%w: ports[%d] %s: %w", ErrInvalid, i, p, err)
		}
		proto, _ := protoNumber(p.Proto)
		pp := uint32(proto)<<16 | uint32(p.HostPort)
		if !p.HostAddr.IsValid() {
			if j, dup := all[pp]; dup {
				return fmt.Errorf("%w: %w: ports[%d] %s: same host port as ports[%d]", ErrInvalid, ErrConflict, i, p, j)
			}
			if len(first) > 0 {
				if j, ok := first[pp]; ok {
					return fmt.Errorf("%w: %w: ports[%d] %s on all addresses overlaps ports[%d] %s", ErrInvalid, ErrConflict, i, p, j, c.Ports[j])
				}
			}
			all[pp] = i
			continue
		}
		if j, ok := all[pp]; ok {
			return fmt.Errorf("%w: %w: ports[%d] %s overlaps ports[%d] %s on all addresses", ErrInvalid, ErrConflict, i, p, j, c.Ports[j])
		}
		a := p.HostAddr.As4()
		k := uint64(pp)<<32 | uint64(binary.BigEndian.Uint32(a[:]))
		if j, dup := one[k]; dup {
			return fmt.Errorf("%w: %w: ports[%d] %s: same host port as ports[%d]", ErrInvalid, ErrConflict, i, p, j)
		}
		one[k] = i
		if _, ok := first[pp]; !ok {
			first[pp] = i
		}
	}
	return nil
}

func (c Config) validateNet() error {
	if err := checkPrefix("cluster", c.Cluster); err != nil {
		return err
	}
	if len(c.Local) == 0 {
		return fmt.Errorf("no local prefix (the node's blocks)")
	}
	if len(c.Local) > MaxLocal {
		return fmt.Errorf("%d local prefixes: at most %d", len(c.Local), MaxLocal)
	}
	for _, l := range c.Local {
		if err := checkPrefix("local prefix", l); err != nil {
			return err
		}
		if l.Bits() < c.Cluster.Bits() || !c.Cluster.Contains(l.Addr()) {
			return fmt.Errorf("local prefix %s is not inside cluster %s", l, c.Cluster)
		}
	}
	if !c.Overlay.IsValid() {
		return fmt.Errorf("overlay address missing")
	}
	if !c.Overlay.Is4() {
		return fmt.Errorf("overlay address %s: only IPv4 is supported", c.Overlay)
	}
	if !c.Cluster.Contains(c.Overlay) {
		return fmt.Errorf("overlay address %s is not inside cluster %s", c.Overlay, c.Cluster)
	}
	if err := checkIfName("overlay interface", c.overlayIf(), false); err != nil {
		return err
	}
	if err := checkIfName("bridge prefix", c.bridgePrefix(), true); err != nil {
		return err
	}
	if strings.HasPrefix(c.overlayIf(), c.bridgePrefix()) {
		return fmt.Errorf("overlay interface %q starts with the bridge prefix %q", c.overlayIf(), c.bridgePrefix())
	}
	return nil
}

func (c Config) validatePort(p Port) error {
	if _, ok := protoNumber(p.Proto); !ok {
		return fmt.Errorf("protocol %q: want \"tcp\" or \"udp\"", p.Proto)
	}
	if p.HostPort == 0 {
		return fmt.Errorf("host port 0")
	}
	if a := p.HostAddr; a.IsValid() {
		switch {
		case a.Is4In6():
			return fmt.Errorf("host address %s: write it as IPv4", a)
		case !a.Is4():
			return fmt.Errorf("host address %s: only IPv4 is supported", a)
		case a.IsUnspecified():
			return fmt.Errorf("host address %s: leave it unset to publish on all addresses", a)
		case a.IsLoopback():
			return fmt.Errorf("host address %s: loopback addresses are not published", a)
		case a.IsMulticast() || a == netip.AddrFrom4([4]byte{255, 255, 255, 255}):
			return fmt.Errorf("host address %s is not a unicast address", a)
		}
	}
	t := p.Target
	if !t.IsValid() {
		return fmt.Errorf("target missing")
	}
	if !t.Addr().Is4() || t.Addr().Is4In6() {
		return fmt.Errorf("target %s: only IPv4 is supported", t)
	}
	if t.Port() == 0 {
		return fmt.Errorf("target %s: port 0", t)
	}
	if !c.Cluster.Contains(t.Addr()) {
		return fmt.Errorf("target %s is outside the cluster %s", t, c.Cluster)
	}
	return nil
}

func checkPrefix(what string, p netip.Prefix) error {
	switch {
	case !p.IsValid():
		return fmt.Errorf("%s missing", what)
	case !p.Addr().Is4() || p.Addr().Is4In6():
		return fmt.Errorf("%s %s: only IPv4 is supported", what, p)
	case p.Masked() != p:
		return fmt.Errorf("%s %s has host bits set (want %s)", what, p, p.Masked())
	case p.Bits() == 0:
		return fmt.Errorf("%s %s covers every address", what, p)
	}
	return nil
}

// checkIfName accepts a Linux interface name (1 to 15 bytes, no '/', no
// whitespace or control characters, not "." or ".."). A prefix is matched as
// a wildcard, so it may be at most 14 bytes long to leave room for a suffix.
func checkIfName(what, name string, prefix bool) error {
	max := 15
	if prefix {
		max = 14
	}
	if name == "" || len(name) > max {
		return fmt.Errorf("%s %q: want 1 to %d bytes", what, name, max)
	}
	if name == "." || name == ".." {
		return fmt.Errorf("%s %q is not an interface name", what, name)
	}
	for _, r := range name {
		if r == '/' || r == ':' || r <= ' ' || r == 0x7f || r > 0x7e {
			return fmt.Errorf("%s %q: character %q not allowed", what, name, r)
		}
	}
	return nil
}

func (c Config) overlayIf() string {
	if c.OverlayIf == "" {
		return DefaultOverlayIf
	}
	return c.OverlayIf
}

func (c Config) bridgePrefix() string {
	if c.BridgePrefix == "" {
		return DefaultBridgePrefix
	}
	return c.BridgePrefix
}

// String renders p as "tcp 192.0.2.10:8080 → 10.200.3.34:80" ("*:8080" for
// all addresses).
func (p Port) String() string {
	host := "*"
	if p.HostAddr.IsValid() {
		host = p.HostAddr.String()
	}
	return fmt.Sprintf("%s %s:%d → %s", p.Proto, host, p.HostPort, p.Target)
}

// protoNumber maps a protocol name to its IP protocol number.
func protoNumber(proto string) (uint8, bool) {
	switch proto {
	case "tcp":
		return 6, true
	case "udp":
		return 17, true
	}
	return 0, false
}
