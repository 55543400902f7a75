package node

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/zlmesh/zlmesh/api"
)

// TestUserspaceBadStarts: a proxy listener that cannot be used fails Start
// with one line naming the flag, before anything is made.
func TestUserspaceBadStarts(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	inUse := "address already in use"
	if runtime.GOOS == "windows" {
		inUse = "bind: " // Windows words EADDRINUSE otherwise (Wine: winapi error #10048)
	}
	free, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	freeAddr := free.Addr().String()
	free.Close()
	tests := []struct {
		name string
		us   Userspace
		want string
	}{
		{"socks not loopback", Userspace{SOCKS5Listen: "0.0.0.0:1080"}, "--socks5-listen 0.0.0.0:1080: not a loopback address"},
		{"http proxy not loopback", Userspace{HTTPProxyListen: "192.0.2.1:3128"}, "--proxy-allow-remote"},
		{"socks port in use", Userspace{SOCKS5Listen: busy.Addr().String()}, inUse},
		{"http port in use", Userspace{SOCKS5Listen: freeAddr, HTTPProxyListen: busy.Addr().String()}, "--http-proxy-listen"},
		{"bad address", Userspace{SOCKS5Listen: "nowhere"}, "want ip:port"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "state")
			us := tt.us
			_, err := Start(context.Background(), Config{
				Name:       "u1",
				StateDir:   dir,
				Socket:     filepath.Join(t.TempDir(), "s.sock"),
				ClusterKey: make([]byte, 32),
				Userspace:  &us,
				Logger:     slog.New(slog.NewTextHandler(io.Discard, nil)),
			})
			if err == nil || !strings.Contains(err.Error(), tt.want) || strings.Contains(err.Error(), "\n") {
				t.Fatalf("Start: %v, want one line containing %q", err, tt.want)
			}
			if _, serr := os.Stat(dir); !errors.Is(serr, os.ErrNotExist) {
				t.Errorf("the failed start made %s", dir)
			}
			if l, err := net.Listen("tcp", freeAddr); err != nil {
				t.Errorf("the failed start left a listener on %s: %v", freeAddr, err)
			} else {
				l.Close()
			}
		})
	}
}

func TestForwardsNeedUserspace(t *testing.T) {
	var n Node
	if _, err := n.Forwards(); !isCode(err, api.CodeUnsupported) {
		t.Errorf("Forwards in kernel mode: %v", err)
	}
	if _, err := n.AddForward(api.Forward{Port: 80}); !isCode(err, api.CodeUnsupported) {
		t.Errorf("AddForward in kernel mode: %v", err)
	}
	if err := n.RemoveForward(api.UnforwardRequest{Port: 80}); !isCode(err, api.CodeUnsupported) {
		t.Errorf("RemoveForward in kernel mode: %v", err)
	}
	if n.userspaceStatus() != nil {
		t.Error("kernel-mode status carries a userspace section")
	}
}

func isCode(err error, code string) bool {
	var ae *api.Error
	return errors.As(err, &ae) && ae.Code == code
}
