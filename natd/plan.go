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
// documents are set. A rule is of one family, that of its addresses (IPv4
// or IPv6; they never mix), and matches only packets of that family.
// Rule is comparable.
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
		host := fmt.Sprintf("local:%d", r.HostPort)
		if r.HostAddr.IsValid() {
			host = netip.AddrPortFrom(r.HostAddr, r.HostPort).String()
		}
		return fmt.Sprintf("publish %s %s dnat %s", r.Proto, host, r.Target)
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

// Is6 reports whether r is an IPv6 rule.
func (r Rule) Is6() bool {
	switch r.Kind {
	case KindPublish:
		return r.Target.Addr().Is6()
	case KindOverlaySNAT:
		return r.To.Is6()
	}
	return r.Source.Addr().Is6()
}

// Plan validates cfg and returns the rules that implement it: first the
// KindPublish rules, one for each family a port is published in (sorted by
// protocol, host port, IPv4 before IPv6, host address; their keys never
// overlap, so their order does not matter), then the source-NAT rules in
// the order they must be tried (the first that matches a connection
// applies): KindHairpin and KindOverlayKeep for each prefix of cfg.Local,
// KindOverlaySNAT, and KindMasquerade for each prefix of cfg.Local when
// cfg.Masquerade is set; then, when cfg.Cluster6 is set, the same for IPv6
// (cfg.Local6, cfg.Overlay6, cfg.Masquerade6). The hairpin and overlay
// rules are always present so that publishing a port only ever adds a
// KindPublish rule.
//
// Plan is pure and safe for concurrent use; the returned slice is the
// caller's.
func Plan(cfg Config) ([]Rule, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	rules := slices.AppendSeq(make([]Rule, 0, len(cfg.Ports)+1+3*len(cfg.Local)), rulesOf(cfg))
	n := slices.IndexFunc(rules, func(r Rule) bool { return r.Kind != KindPublish })
	slices.SortFunc(rules[:n], func(a, b Rule) int {
		return cmp.Or(cmp.Compare(a.Proto, b.Proto), cmp.Compare(a.HostPort, b.HostPort),
			compareBool(a.Is6(), b.Is6()), a.HostAddr.Compare(b.HostAddr))
	})
	return rules, nil
}

func compareBool(a, b bool) int {
	switch {
	case a == b:
		return 0
	case a:
		return 1
	}
	return -1
}

// portRules yields the KindPublish rules of p: one for each family it is
// published in (see Port).
func portRules(p Port, yield func(Rule) bool) bool {
	if p.Target.IsValid() && !p.HostAddr.Is6() {
		if !yield(Rule{Kind: KindPublish, Proto: p.Proto, HostAddr: p.HostAddr, HostPort: p.HostPort, Target: p.Target}) {
			return false
		}
	}
	if p.Target6.IsValid() && !p.HostAddr.Is4() {
		if !yield(Rule{Kind: KindPublish, Proto: p.Proto, HostAddr: p.HostAddr, HostPort: p.HostPort, Target: p.Target6}) {
			return false
		}
	}
	return true
}

// rulesOf yields the rules of a valid cfg in Plan's order, except that the
// KindPublish rules come in the order of cfg.Ports (backends that key them
// need no order). It allocates nothing: a Set over thousands of ports
// stays cheap.
func rulesOf(cfg Config) iter.Seq[Rule] {
	return func(yield func(Rule) bool) {
		for _, p := range cfg.Ports {
			if !portRules(p, yield) {
				return
			}
		}
		if !sourceRules(cfg, cfg.Local, cfg.Overlay, cfg.Cluster, cfg.Masquerade, yield) {
			return
		}
		if cfg.Cluster6.IsValid() {
			sourceRules(cfg, cfg.Local6, cfg.Overlay6, cfg.Cluster6, cfg.Masquerade6, yield)
		}
	}
}

// sourceRules yields the source-NAT rules of one family.
func sourceRules(cfg Config, local []netip.Prefix, overlay netip.Addr, cluster netip.Prefix, masq bool, yield func(Rule) bool) bool {
	for _, l := range local {
		if !yield(Rule{Kind: KindHairpin, Iface: cfg.bridgePrefix(), Source: l}) {
			return false
		}
	}
	for _, l := range local {
		if !yield(Rule{Kind: KindOverlayKeep, Iface: cfg.overlayIf(), Source: l}) {
			return false
		}
	}
	if !yield(Rule{Kind: KindOverlaySNAT, Iface: cfg.overlayIf(), To: overlay}) {
		return false
	}
	if masq {
		for _, l := range local {
			if !yield(Rule{Kind: KindMasquerade, Iface: cfg.overlayIf(), Source: l, Except: cluster}) {
				return false
			}
		}
	}
	return true
}
