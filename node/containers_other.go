//go:build !linux

package node

import "log/slog"

// defaultContainers: no container plumbing on this platform yet (Windows
// containers will come through package winhcn).
func defaultContainers(*slog.Logger, Config) (Containers, error) { return nil, nil }

// defaultNAT: no kernel NAT on this platform.
func defaultNAT(*slog.Logger) (NAT, error) { return nil, nil }
