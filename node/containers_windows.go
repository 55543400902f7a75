package node

import (
	"log/slog"
	"net/netip"
	"strings"

	"github.com/zlmesh/zlmesh/dnsd"
	"github.com/zlmesh/zlmesh/ipam"
	"github.com/zlmesh/zlmesh/winhcn"
)

// defaultContainers is the Windows container plumbing: HCN endpoints on
// the node's HCN network (containers_hcn.go over winhcn.System()), the
// cluster routed to the node, excepted from outbound NAT and let in, and
// the mesh DNS as the containers' resolver.
func defaultContainers(log *slog.Logger, cfg Config) (Containers, error) {
	pool, err := ipam.NewPool(cfg.ClusterCIDR, cfg.BlockPrefix)
	if err != nil {
		return nil, err
	}
	m := winhcn.New(winhcn.System(), winhcn.Config{
		Cluster:    []netip.Prefix{cfg.ClusterCIDR},
		DNSServers: []netip.Addr{pool.MeshDNS()},
		DNSSearch:  []string{searchDomainOf(cfg.DNSZone)},
		Logger:     log.With("component", "winhcn"),
	})
	return newHCNContainers(m, log.With("component", "winhcn")), nil
}

// defaultNAT: no kernel NAT on Windows (HCN's outbound NAT policy per
// endpoint does the containers' egress).
func defaultNAT(*slog.Logger, Config) (NAT, error) { return nil, nil }

// searchDomainOf is Node.searchDomain before there is a Node.
func searchDomainOf(zone string) string {
	if zone == "" {
		zone = dnsd.DefaultZone
	}
	return strings.TrimSuffix(strings.ToLower(zone), ".")
}
