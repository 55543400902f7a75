package main

import (
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/zlmesh/zlmesh/internal/sdnotify"
	"github.com/zlmesh/zlmesh/node"
)

// listenMetrics opens the TCP listener of `zlmesh up --metrics-listen`
// before the node starts, so a malformed or busy address is an error of
// `up` that names the flag and the address.
func listenMetrics(addr string) (net.Listener, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("--metrics-listen %s: %w", addr, err)
	}
	return ln, nil
}

// serveMetrics serves the node's /metrics (the same as on the control
// socket) on ln until the listener is closed. Any other path is 404.
func serveMetrics(ln net.Listener, n *node.Node, log *slog.Logger) *http.Server {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", n.MetricsHandler())
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln)
	log.Info("metrics listening", "addr", ln.Addr().String())
	return srv
}

// notifySystemd tells systemd (Type=notify) about state; outside systemd it
// does nothing. A failure is logged, not fatal: the node runs either way.
func notifySystemd(state string, log *slog.Logger) {
	if sent, err := sdnotify.Notify(state); err != nil {
		log.Warn("systemd notification", "state", state, "err", err)
	} else if sent {
		log.Debug("systemd notified", "state", state)
	}
}
