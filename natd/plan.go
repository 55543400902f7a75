package natd

import (
	"cmp"
	"fmt"
	"iter"
	"net/netip"
	"slices"
)

// Kind says what a Rule does.
type Kind uint8

// Rule kinds. A new connection is matched once, by its first packet; its
// replies are translated back by connection tracking.
const (
	// KindPublish: a new Proto connection to a local address of the host
	// (HostAddr, or any when HostAddr is the zero Addr) on HostPort is
	// destination-NATed to Target. Applies to packets from the network and
	// to packets the host sends itself; never to loopback destinations.
	KindPublish Kind = iota + 1
	// KindHairpin: a destination-NATed connection from an address inside
	// Source that is not one of the host's own, leaving through an
	// interface whose name starts with Iface (a bridge), is source-NATed to
	// the address of that interface (masquerade).
	KindHairpin
	// KindOverlayKeep: a destination-NATed connection that leaves through
	// the interface named Iface from a source inside Source (a local
	// container: the overlay routes its replies back here) keeps its
	// source address: the chain ends for it before KindOverlaySNAT.
	KindOverlayKeep
	// KindOverlaySNAT: a destination-NATed connection that leaves through
	// the interface named Iface (and was not kept by a KindOverlayKeep
	// rule) is source-NATed to To.
	KindOverlaySNAT
	// KindMasquerade: a connection from inside Source to a destination
	// outside Except, leaving through any interface but the one named Iface,
	// is source-NATed to the address of the interface it leaves by.
	KindMasquerade
)

// String names k as logs and Rule.String do.
func (k Kind) String() string {
	switch k {
	case KindPublish:
		return "publish"
	case KindHairpin:
		return "hairpin"
	case KindOverlayKeep:
		return "overlay-keep"
	case KindOverlaySNAT:
		return "overlay-snat"
	case KindMasquerade:
		return "masquerade"
	}
	return fmt.Sprintf("kind(%d)", uint8(k))
}

// Rule is one abstract NAT rule, independent of how it is implemented:
// natd_linux.go renders the list into nftables; the userspace mode of
// DESIGN.md (NAT on the tun.Wrapper packet path) can implement the same
// list with a connection table of its own. Only the fields its Kind
// documents are set. Rule is comparable.
type Rule struct {
	Kind Kind

	// KindPublish.
	Proto    string         // "tcp" or "udp"
	HostAddr netip.Addr     // zero: every local address
	HostPort uint16         //
	Target   netip.AddrPort //

	// KindHairpin: Iface (an interface name prefix) and Source.
	// KindOverlayKeep: Iface and Source.
	// KindOverlaySNAT: Iface and To.
	// KindMasquerade: Iface, Source and Except.
	Iface  string
	Source netip.Prefix
	Except netip.Prefix
	To     netip.Addr
}

// String renders r in one line, close to nftables syntax.
func (r Rule) String() string {
	switch r.Kind {
	case KindPublish:
		host := "local"
		if r.HostAddr.IsValid() {
			host = r.HostAddr.String()
		}
		return fmt.Sprintf("publish %s %s:%d dnat %s", r.Proto, host, r.HostPort, r.Target)
	case KindHairpin:
		return fmt.Sprintf("hairpin dnat saddr %s !local oif %s* masquerade", r.Source, r.Iface)
	case KindOverlayKeep:
		return fmt.Sprintf("overlay dnat oif %s saddr %s keep", r.Iface, r.Source)
	case KindOverlaySNAT:
		return fmt.Sprintf("overlay dnat oif %s snat %s", r.Iface, r.To)
	case KindMasquerade:
		return fmt.Sprintf("egress saddr %s daddr != %s oif != %s masquerade", r.Source, r.Except, r.Iface)
	}
	return r.Kind.String()
}

// Plan validates cfg and returns the rules that implement it: first the
// KindPublish rules (sorted by protocol, host port, host address; their keys
// never overlap, so their order does not matter), then the source-NAT rules
// in the order they must be tried (the first that matches a connection
// applies): KindHairpin and KindOverlayKeep for each prefix of cfg.Local,
// KindOverlaySNAT, and KindMasquerade for each prefix of cfg.Local when
// cfg.Masquerade is set. The hairpin and overlay rules are always present so
// that publishing a port only ever adds a KindPublish rule.
//
// Plan is pure and safe for concurrent use; the returned slice is the
// caller's.
func Plan(cfg Config) ([]Rule, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	rules := slices.AppendSeq(make([]Rule, 0, len(cfg.Ports)+1+3*len(cfg.Local)), rulesOf(cfg))
	slices.SortFunc(rules[:len(cfg.Ports)], func(a, b Rule) int {
		return cmp.Or(cmp.Compare(a.Proto, b.Proto), cmp.Compare(a.HostPort, b.HostPort), a.HostAddr.Compare(b.HostAddr))
	})
	return rules, nil
}

// rulesOf yields the rules of a valid cfg in Plan's order, except that the
// KindPublish rules come in the order of cfg.Ports (backends that key them
// need no order). It allocates nothing: a Set over thousands of ports
// stays cheap.
func rulesOf(cfg Config) iter.Seq[Rule] {
	return func(yield func(Rule) bool) {
		for _, p := range cfg.Ports {
			if !yield(Rule{Kind: KindPublish, Proto: p.Proto, HostAddr: p.HostAddr, HostPort: p.HostPort, Target: p.Target}) {
				return
			}
		}
		for _, l := range cfg.Local {
			if !yield(Rule{Kind: KindHairpin, Iface: cfg.bridgePrefix(), Source: l}) {
				return
			}
		}
		for _, l := range cfg.Local {
			if !yield(Rule{Kind: KindOverlayKeep, Iface: cfg.overlayIf(), Source: l}) {
				return
			}
		}
		if !yield(Rule{Kind: KindOverlaySNAT, Iface: cfg.overlayIf(), To: cfg.Overlay}) {
			return
		}
		if cfg.Masquerade {
			for _, l := range cfg.Local {
				if !yield(Rule{Kind: KindMasquerade, Iface: cfg.overlayIf(), Source: l, Except: cfg.Cluster}) {
					return
				}
			}
		}
	}
}
