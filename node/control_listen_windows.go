//go:build windows

package node

import (
	"errors"
	"fmt"
	"net"

	"github.com/zlmesh/zlmesh/internal/pipe"
)

// listenControl opens the control API: a named pipe for a \\.\pipe\ name
// (the default), open to SYSTEM, the Administrators and group (a name or
// SID; empty: nobody else), else a Unix socket. A second zlmesh on the
// same pipe is an error.
func listenControl(path, group string) (net.Listener, error) {
	if !pipe.IsPipeName(path) {
		return listenUnixSocket(path)
	}
	var c pipe.Config
	if group != "" {
		sid, err := pipe.ResolveGroup(group)
		if err != nil {
			return nil, fmt.Errorf("control pipe %s: --control-group: %w", path, err)
		}
		c.GroupSID = sid
	}
	ln, err := pipe.Listen(path, c)
	if errors.Is(err, pipe.ErrInUse) {
		return nil, fmt.Errorf("control pipe %s: another zlmesh is listening there: %w", path, err)
	}
	if err != nil {
		return nil, fmt.Errorf("control pipe %s: %w", path, err)
	}
	return ln, nil
}
