// Package mesh is cluster membership over hashicorp/memberlist: each node's
// meta, a replicated record store, membership events, the cluster key, and
// re-joining remembered peers.
package mesh

// Meta is what every node gossips about itself.
type Meta struct {
	PublicKey  string `json:"k"`
	Endpoint   string `json:"e"` // underlay ip:port of WireGuard
	NodeSubnet string `json:"s"`
	OverlayIP  string `json:"o"`
	Version    string `json:"v"`
}
