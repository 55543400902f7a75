// Package sdnotify tells systemd about the service's state (sd_notify(3)):
// one datagram with newline-separated KEY=VALUE assignments to the Unix
// socket systemd names in $NOTIFY_SOCKET. It is written by hand: the
// protocol is one sendto, no dependency is worth it.
package sdnotify

import (
	"fmt"
	"net"
	"os"
)

// Socket is the environment variable systemd sets for a Type=notify unit.
const Socket = "NOTIFY_SOCKET"

// States a service sends.
const (
	Ready    = "READY=1"    // the service is up: for zlmesh, its control socket serves
	Stopping = "STOPPING=1" // the service is shutting down
)

// Notify sends state (e.g. Ready, or "STATUS=…") to the socket named by
// $NOTIFY_SOCKET: a path, or an abstract socket when it starts with '@'.
// Without the variable (not started by systemd, or not Type=notify) it does
// nothing and returns false, nil. It returns true when the datagram was
// sent. Safe for concurrent use.
func Notify(state string) (bool, error) {
	return NotifySocket(os.Getenv(Socket), state)
}

// NotifySocket is Notify with the socket given (empty: do nothing).
func NotifySocket(socket, state string) (bool, error) {
	if socket == "" {
		return false, nil
	}
	addr := &net.UnixAddr{Name: socket, Net: "unixgram"}
	if socket[0] == '@' {
		addr.Name = "\x00" + socket[1:]
	}
	c, err := net.DialUnix("unixgram", nil, addr)
	if err != nil {
		return false, fmt.Errorf("sd_notify to %s: %w", socket, err)
	}
	defer c.Close()
	if _, err := c.Write([]byte(state)); err != nil {
		return false, fmt.Errorf("sd_notify %q to %s: %w", state, socket, err)
	}
	return true, nil
}
