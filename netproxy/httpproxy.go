package netproxy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"sync"
	"time"
)

// HTTPProxy is an HTTP proxy into the mesh: CONNECT tunnels (https and
// anything else over TCP) and plain HTTP requests with an absolute URL.
// Names resolve through the Dialer's Resolver. A target that cannot be
// reached is answered 502 Bad Gateway with the reason in the body; a name
// that does not resolve, 502 too ("no such host").
type HTTPProxy struct {
	Dialer *Dialer
	// DialTimeout bounds a connect; zero: 10s.
	DialTimeout time.Duration
	Log         *slog.Logger

	once sync.Once
	rp   *httputil.ReverseProxy
}

func (p *HTTPProxy) log() *slog.Logger {
	if p.Log == nil {
		return slog.Default()
	}
	return p.Log
}

func (p *HTTPProxy) timeout() time.Duration {
	if p.DialTimeout == 0 {
		return 10 * time.Second
	}
	return p.DialTimeout
}

// Serve serves HTTP proxy requests on ln until ln is closed.
func (p *HTTPProxy) Serve(ln net.Listener) error {
	srv := &http.Server{Handler: p, ReadHeaderTimeout: handshakeTimeout}
	err := srv.Serve(ln)
	if errors.Is(err, net.ErrClosed) {
		return nil
	}
	return err
}

// ServeHTTP implements http.Handler.
func (p *HTTPProxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method == http.MethodConnect {
		p.connect(w, r)
		return
	}
	if !r.URL.IsAbs() || (r.URL.Scheme != "http") {
		http.Error(w, "this is a proxy: send absolute http:// URLs, or CONNECT", http.StatusBadRequest)
		return
	}
	p.once.Do(func() {
		p.rp = &httputil.ReverseProxy{
			Rewrite: func(pr *httputil.ProxyRequest) {
				pr.Out.URL = pr.In.URL
				pr.Out.Host = pr.In.Host
			},
			Transport: &http.Transport{
				DialContext:           p.Dialer.DialContext,
				ResponseHeaderTimeout: 60 * time.Second,
				MaxIdleConnsPerHost:   4,
				IdleConnTimeout:       30 * time.Second,
			},
			ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
				p.log().Info("http proxy: request failed", "url", r.URL.String(), "err", err)
				http.Error(w, fmt.Sprintf("zlmesh proxy: %v", err), http.StatusBadGateway)
			},
		}
	})
	p.rp.ServeHTTP(w, r)
}

func (p *HTTPProxy) connect(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), p.timeout())
	out, err := p.Dialer.DialContext(ctx, "tcp", r.Host)
	cancel()
	if err != nil {
		p.log().Info("http proxy: connect failed", "target", r.Host, "err", err)
		http.Error(w, fmt.Sprintf("zlmesh proxy: %v", err), http.StatusBadGateway)
		return
	}
	hj, ok := w.(http.Hijacker)
	if !ok {
		out.Close()
		http.Error(w, "connection cannot be hijacked", http.StatusInternalServerError)
		return
	}
	c, brw, err := hj.Hijack()
	if err != nil {
		out.Close()
		return
	}
	c.SetDeadline(time.Time{})
	if _, err := c.Write([]byte("HTTP/1.1 200 Connection established\r\n\r\n")); err != nil {
		c.Close()
		out.Close()
		return
	}
	splice(&bufferedConn{Conn: c, r: brw.Reader}, out)
}
