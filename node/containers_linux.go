package node

import (
	"fmt"
	"log/slog"

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
	return bridge.New(bridge.Config{Logger: log.With("component", "bridge"), Forwarding: true, Guard: guard})
}

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
