//go:build !windows

package node

import "net"

// listenControl opens the control socket: a Unix socket (the group is
// Windows' business; here the socket's group is its directory's).
func listenControl(path, _ string) (net.Listener, error) {
	return listenUnixSocket(path)
}
