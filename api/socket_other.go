//go:build !windows

package api

import (
	"context"
	"net"
)

// DefaultSocket is where `zlmesh up` listens and the CLI connects by default.
const DefaultSocket = "/run/zlmesh/zlmesh.sock"

// dialControl connects to the Unix socket at path.
func dialControl(ctx context.Context, path string) (net.Conn, error) {
	var d net.Dialer
	return d.DialContext(ctx, "unix", path)
}
