package node

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"

	"github.com/zlmesh/zlmesh/bridge"
	"github.com/zlmesh/zlmesh/natd"
)

// defaultContainers is the Linux container plumbing in the node's own
// network namespace, switching IP forwarding on with the first attach. It
// refuses to attach a namespace that holds the node's TUN or its underlay
// address (the node's own, reached another way).
func defaultContainers(log *slog.Logger, cfg Config) (Containers, error) {
	guard := bridge.Guard{Links: []string{cfg.Interface}}
	if cfg.AdvertiseAddr.IsValid() {
		guard.Addrs = append(guard.Addrs, cfg.AdvertiseAddr)
	}
	m, err := bridge.New(bridge.Config{Logger: log.With("component", "bridge"), Forwarding: true, Guard: guard})
	if err != nil {
		return nil, err
	}
	return bridgeContainers{m}, nil
}

// bridgeContainers is Containers over package bridge's Manager: it
// converts the node's types to bridge's and back, nothing more (each
// method's contract is the Manager's). It keeps bridges for Docker's
// networks too (bridgeKeeper).
type bridgeContainers struct{ m *bridge.Manager }

var (
	_ Containers   = bridgeContainers{}
	_ bridgeKeeper = bridgeContainers{}
)

// bridgeSpec is s as package bridge takes it.
func bridgeSpec(s ContainerSpec) bridge.Spec {
	return bridge.Spec{
		Service:   s.Service,
		Container: s.Container,
		Netns:     s.Netns,
		PID:       s.PID,
		Ifname:    s.Ifname,
		Address:   s.Address,
		Gateway:   s.Gateway,
		Address6:  s.Address6,
		MTU:       s.MTU,
		HostPeer:  s.HostPeer,
	}
}

// plumbed is what bridge made, as the node records it.
func plumbed(a bridge.Attached) Plumbed {
	return Plumbed{Bridge: a.Bridge, HostVeth: a.HostVeth, NetnsID: NamespaceID(a.NetnsID), Repairs: a.Repairs}
}

func (b bridgeContainers) Attach(ctx context.Context, s ContainerSpec) (Plumbed, error) {
	a, err := b.m.Attach(ctx, bridgeSpec(s))
	return plumbed(a), err
}

func (b bridgeContainers) Detach(ctx context.Context, s ContainerSpec) error {
	return b.m.Detach(ctx, bridgeSpec(s))
}

func (b bridgeContainers) Readdress(ctx context.Context, s ContainerSpec, newAddr, newAddr6 netip.Prefix) error {
	return b.m.Readdress(ctx, bridgeSpec(s), newAddr, newAddr6)
}

func (b bridgeContainers) Alive(s ContainerSpec, id NamespaceID) (bool, error) {
	return b.m.Alive(bridgeSpec(s), bridge.NetnsID(id))
}

func (b bridgeContainers) Adopt(ctx context.Context, s ContainerSpec) (Plumbed, error) {
	a, err := b.m.Adopt(ctx, bridgeSpec(s))
	return plumbed(a), err
}

func (b bridgeContainers) Inventory() (ContainerInventory, error) {
	inv, err := b.m.Inventory()
	if err != nil {
		return ContainerInventory{}, err
	}
	return containerInventory(inv), nil
}

// containerInventory is bridge's inventory as the node reads it.
func containerInventory(inv bridge.Inventory) ContainerInventory {
	var out ContainerInventory
	for _, v := range inv.Veths {
		out.Links = append(out.Links, PlumbingLink{Name: v.Name, Container: v.Container, Stray: v.Stray})
	}
	for _, r := range inv.Routes {
		out.Routes = append(out.Routes, PlumbingRoute{Dst: r.Dst, Bridge: r.Bridge})
	}
	for _, br := range inv.Bridges {
		out.Bridges = append(out.Bridges, br.Name)
	}
	return out
}

func (b bridgeContainers) RemoveLink(name string) error       { return b.m.RemoveLink(name) }
func (b bridgeContainers) RemoveRoute(dst netip.Prefix) error { return b.m.RemoveRoute(dst) }
func (b bridgeContainers) RemoveBridgeIfEmpty(name string) (bool, error) {
	return b.m.RemoveBridgeIfEmpty(name)
}
func (b bridgeContainers) KeepBridges(services []string) []string { return b.m.KeepBridges(services) }
func (b bridgeContainers) Close() error                           { return b.m.Close() }

// defaultNAT is natd's nftables table in the node's network namespace, with
// the sysctls the data path needs: IPv4 forwarding, and with IPv6 on IPv6
// forwarding (at start, so that guests and published ports work before the
// first container attaches).
func defaultNAT(log *slog.Logger, cfg Config) (NAT, error) {
	if err := natd.ApplySysctls(); err != nil {
		return nil, fmt.Errorf("NAT sysctls: %w", err)
	}
	if !cfg.NoIPv6 {
		set, err := natd.ApplySysctls6()
		if err != nil {
			return nil, fmt.Errorf("NAT sysctls (IPv6): %w", err)
		}
		for _, sc := range set {
			log.Info("host switch set", "sysctl", sc.Name, "value", sc.Value, "why", sc.Why)
		}
	}
	return natd.New(natd.Options{Logger: log.With("component", "natd")})
}
