//go:build windows

package api

import (
	"context"
	"net"

	"github.com/zlmesh/zlmesh/internal/pipe"
)

// DefaultSocket is where `zlmesh up` listens and the CLI connects by
// default: a named pipe (see internal/pipe).
const DefaultSocket = `\\.\pipe\zlmesh`

// dialControl connects to a named pipe for a \\.\pipe\ name, else to the
// Unix socket at path (Windows has AF_UNIX too).
func dialControl(ctx context.Context, path string) (net.Conn, error) {
	if pipe.IsPipeName(path) {
		return pipe.Dial(ctx, path)
	}
	var d net.Dialer
	return d.DialContext(ctx, "unix", path)
}
