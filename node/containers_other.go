//go:build !linux && !windows

package node

import "log/slog"

// defaultContainers: no container plumbing on this platform (Windows has
// its own, containers_windows.go).
func defaultContainers(*slog.Logger, Config) (Containers, error) { return nil, nil }

// defaultNAT: no kernel NAT on this platform.
func defaultNAT(*slog.Logger, Config) (NAT, error) { return nil, nil }
