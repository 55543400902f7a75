package testbed

import (
	"fmt"
	"net/netip"
)

// Names of the links inside the switch namespace.
const (
	bridgeName = "br0"
	uplinkName = "out"
	hostIfname = "eth0"
)

// LinkAddr is one address on an underlay link.
type LinkAddr struct {
	Prefix netip.Prefix
	// Tentative: an IPv6 address still in (or failed) duplicate address
	// detection, not usable yet.
	Tentative bool
}

// UnderlayAddrs returns the addresses on the underlay's links as the
// kernel has them, keyed by where they are: each host's eth0 under the
// host's name ("h1"), and the switch's bridge under "switch". IPv6
// link-local addresses are included. Tests use it to check what family
// the underlay really carries.
func (tb *Testbed) UnderlayAddrs() (map[string][]LinkAddr, error) {
	tb.mu.Lock()
	closed := tb.closed
	tb.mu.Unlock()
	if closed {
		return nil, ErrClosed
	}
	out := map[string][]LinkAddr{}
	sw, err := linkAddrs(tb.switchNetns(), bridgeName)
	if err != nil {
		return nil, fmt.Errorf("testbed %s: %w", tb.Prefix, err)
	}
	out["switch"] = sw
	for _, h := range tb.Hosts() {
		a, err := linkAddrs(h.NetnsName, hostIfname)
		if err != nil {
			return nil, fmt.Errorf("testbed %s: %w", tb.Prefix, err)
		}
		out[h.Name] = a
	}
	return out, nil
}

// Underlay returns the testbed's underlay family.
func (tb *Testbed) Underlay() UnderlayFamily {
	tb.mu.Lock()
	defer tb.mu.Unlock()
	return tb.opts.Underlay
}
