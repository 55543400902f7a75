package natd

import (
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
	if err := c.validateNet6(); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	if len(c.Ports) > MaxPorts {
		return fmt.Errorf("%w: %d ports, at most %d", ErrInvalid, len(c.Ports), MaxPorts)
	}
	// Host ports by family, protocol and port (famPort): published on all
	// addresses of the family (all), on one address (first), and by
	// address, protocol and port (one).
	all := make(map[uint32]int, len(c.Ports))
	first := make(map[uint32]int)
	one := make(map[addrPort]int)
	for i, p := range c.Ports {
		if err := c.validatePort(p); err != nil {
			return fmt.Errorf("%w: ports[%d] %s: %w", ErrInvalid, i, p, err)
		}
		proto, _ := protoNumber(p.Proto)
		if p.HostAddr.IsValid() {
			fp := famPort(p.HostAddr.Is6(), proto, p.HostPort)
			if j, ok := all[fp]; ok {
				return fmt.Errorf("%w: %w: ports[%d] %s overlaps ports[%d] %s on all addresses", ErrInvalid, ErrConflict, i, p, j, c.Ports[j])
			}
			k := addrPort{p.HostAddr, proto, p.HostPort}
			if j, dup := one[k]; dup {
				return fmt.Errorf("%w: %w: ports[%d] %s: same host port as ports[%d]", ErrInvalid, ErrConflict, i, p, j)
			}
			one[k] = i
			if _, ok := first[fp]; !ok {
				first[fp] = i
			}
			continue
		}
		for _, six := range [2]bool{false, true} {
			if !p.Target.IsValid() && !six || !p.Target6.IsValid() && six {
				continue
			}
			fp := famPort(six, proto, p.HostPort)
			if j, dup := all[fp]; dup {
				return fmt.Errorf("%w: %w: ports[%d] %s: same host port as ports[%d]", ErrInvalid, ErrConflict, i, p, j)
			}
			if len(first) > 0 {
				if j, ok := first[fp]; ok {
					return fmt.Errorf("%w: %w: ports[%d] %s on all addresses overlaps ports[%d] %s", ErrInvalid, ErrConflict, i, p, j, c.Ports[j])
				}
			}
			all[fp] = i
		}
	}
	return nil
}

// famPort packs a family (six: IPv6), a protocol number and a port.
func famPort(six bool, proto uint8, port uint16) uint32 {
	k := uint32(proto)<<16 | uint32(port)
	if six {
		k |= 1 << 24
	}
	return k
}

// addrPort is a host address, a protocol number and a port.
type addrPort struct {
	addr  netip.Addr
	proto uint8
	port  uint16
}

func (c Config) validateNet() error {
	if err := checkPrefix("cluster", c.Cluster, false); err != nil {
		return err
	}
	if len(c.Local) == 0 {
		return fmt.Errorf("no local prefix (the node's blocks)")
	}
	if err := checkLocal("local prefix", c.Local, c.Cluster, false); err != nil {
		return err
	}
	if err := checkOverlay("overlay address", c.Overlay, c.Cluster, false); err != nil {
		return err
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

// validateNet6 checks the IPv6 fields: all zero (IPv6 off), or Cluster6,
// Local6 and Overlay6 set and consistent.
func (c Config) validateNet6() error {
	if !c.Cluster6.IsValid() {
		switch {
		case len(c.Local6) > 0:
			return fmt.Errorf("local6 prefixes %v without cluster6 (IPv6 is off)", c.Local6)
		case c.Overlay6.IsValid():
			return fmt.Errorf("overlay6 address %s without cluster6 (IPv6 is off)", c.Overlay6)
		case c.Masquerade6:
			return fmt.Errorf("masquerade6 without cluster6 (IPv6 is off)")
		}
		return nil
	}
	if err := checkPrefix("cluster6", c.Cluster6, true); err != nil {
		return err
	}
	if len(c.Local6) == 0 {
		return fmt.Errorf("no local6 prefix (the node's IPv6 blocks) with cluster6 %s", c.Cluster6)
	}
	if err := checkLocal("local6 prefix", c.Local6, c.Cluster6, true); err != nil {
		return err
	}
	return checkOverlay("overlay6 address", c.Overlay6, c.Cluster6, true)
}

func checkLocal(what string, local []netip.Prefix, cluster netip.Prefix, six bool) error {
	if len(local) > MaxLocal {
		return fmt.Errorf("%d %ses: at most %d", len(local), what, MaxLocal)
	}
	for _, l := range local {
		if err := checkPrefix(what, l, six); err != nil {
			return err
		}
		if l.Bits() < cluster.Bits() || !cluster.Contains(l.Addr()) {
			return fmt.Errorf("%s %s is not inside cluster %s", what, l, cluster)
		}
	}
	return nil
}

func checkOverlay(what string, a netip.Addr, cluster netip.Prefix, six bool) error {
	if !a.IsValid() {
		return fmt.Errorf("%s missing", what)
	}
	if err := checkFamily(what, a, a, six); err != nil {
		return err
	}
	if !cluster.Contains(a) {
		return fmt.Errorf("%s %s is not inside cluster %s", what, a, cluster)
	}
	return nil
}

// checkFamily accepts an address of the wanted family, without a zone;
// IPv4-mapped IPv6 addresses are neither. shown is the value as the error
// names it (the address, prefix or address and port it came from); it is
// formatted only on failure (Validate runs over thousands of ports).
func checkFamily[T fmt.Stringer](what string, shown T, a netip.Addr, six bool) error {
	switch {
	case a.Zone() != "":
		return fmt.Errorf("%s %s: no zone allowed", what, shown.String())
	case six && (!a.Is6() || a.Is4In6()):
		return fmt.Errorf("%s %s: want an IPv6 address", what, shown.String())
	case !six && !a.Is4():
		return fmt.Errorf("%s %s: want an IPv4 address", what, shown.String())
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
		case a.Zone() != "":
			return fmt.Errorf("host address %s: no zone allowed", a)
		case a.Is4In6():
			return fmt.Errorf("host address %s: write it as IPv4", a)
		case a.Is6() && !c.Cluster6.IsValid():
			return fmt.Errorf("host address %s is IPv6 but IPv6 is off (no cluster6)", a)
		case a.IsUnspecified():
			return fmt.Errorf("host address %s: leave it unset to publish on all addresses", a)
		case a.IsLoopback():
			return fmt.Errorf("host address %s: loopback addresses are not published", a)
		case a.IsMulticast() || a == netip.AddrFrom4([4]byte{255, 255, 255, 255}):
			return fmt.Errorf("host address %s is not a unicast address", a)
		case a.Is6() && a.IsLinkLocalUnicast():
			return fmt.Errorf("host address %s: link-local addresses are not published (the kernel does not forward from them)", a)
		}
	}
	if p.Target.IsValid() {
		if err := checkTarget("target", p.Target, c.Cluster, false); err != nil {
			return err
		}
	}
	if p.Target6.IsValid() {
		if !c.Cluster6.IsValid() {
			return fmt.Errorf("target6 %s but IPv6 is off (no cluster6)", p.Target6)
		}
		if err := checkTarget("target6", p.Target6, c.Cluster6, true); err != nil {
			return err
		}
	}
	switch h := p.HostAddr; {
	case h.Is4() && !p.Target.IsValid():
		return fmt.Errorf("target missing (host address %s is IPv4)", h)
	case h.Is6() && !p.Target6.IsValid():
		return fmt.Errorf("target6 missing (host address %s is IPv6)", h)
	case !p.Target.IsValid() && !p.Target6.IsValid():
		return fmt.Errorf("target missing")
	}
	return nil
}

func checkTarget(what string, t netip.AddrPort, cluster netip.Prefix, six bool) error {
	if err := checkFamily(what, t, t.Addr(), six); err != nil {
		return err
	}
	if t.Port() == 0 {
		return fmt.Errorf("%s %s: port 0", what, t)
	}
	if !cluster.Contains(t.Addr()) {
		return fmt.Errorf("%s %s is outside the cluster %s", what, t, cluster)
	}
	return nil
}

// checkPrefix accepts a masked prefix of the wanted family (six: IPv6) that
// does not cover every address.
func checkPrefix(what string, p netip.Prefix, six bool) error {
	if !p.IsValid() {
		return fmt.Errorf("%s missing", what)
	}
	if err := checkFamily(what, p, p.Addr(), six); err != nil {
		return err
	}
	switch {
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
// all addresses; both targets, IPv4 first, when both are set:
// "tcp *:8080 → 10.200.3.34:80 [fd00::3:0:0:22]:80").
func (p Port) String() string {
	host := fmt.Sprintf("*:%d", p.HostPort)
	if p.HostAddr.IsValid() {
		host = netip.AddrPortFrom(p.HostAddr, p.HostPort).String()
	}
	var to []string
	if p.Target.IsValid() {
		to = append(to, p.Target.String())
	}
	if p.Target6.IsValid() {
		to = append(to, p.Target6.String())
	}
	if len(to) == 0 {
		to = append(to, "nowhere")
	}
	return fmt.Sprintf("%s %s → %s", p.Proto, host, strings.Join(to, " "))
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
