//go:build !windows

package pipe

import (
	"context"
	"fmt"
	"net"
)

// ResolveGroup: ErrUnsupported off Windows.
func ResolveGroup(name string) (string, error) {
	return "", fmt.Errorf("group %q: %w", name, ErrUnsupported)
}

// Listen: ErrUnsupported off Windows.
func Listen(name string, _ Config) (net.Listener, error) {
	return nil, fmt.Errorf("listen on %s: %w", name, ErrUnsupported)
}

// Dial: ErrUnsupported off Windows.
func Dial(_ context.Context, name string) (net.Conn, error) {
	return nil, fmt.Errorf("dial %s: %w", name, ErrUnsupported)
}
