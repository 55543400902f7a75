package node

import (
	"log/slog"

	"github.com/zlmesh/zlmesh/bridge"
)

// defaultContainers is the Linux container plumbing in the node's own
// network namespace, switching IP forwarding on with the first attach.
func defaultContainers(log *slog.Logger) (Containers, error) {
	return bridge.New(bridge.Config{Logger: log.With("component", "bridge"), Forwarding: true})
}
