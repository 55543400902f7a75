package node

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"path/filepath"
	"strconv"
	"sync"

	"github.com/zlmesh/zlmesh/api"
	"github.com/zlmesh/zlmesh/internal/statefile"
	"github.com/zlmesh/zlmesh/netproxy"
	"github.com/zlmesh/zlmesh/tun"
	"github.com/zlmesh/zlmesh/userspace"
)

// forwardsFile keeps the node's forwards across restarts once the control
// API changed them: `zlmesh unforward` removes one for good unless a
// --forward flag adds it again at the next start.
const forwardsFile = "forwards.json"

// Userspace configures userspace mode: the node runs over a gVisor
// netstack (tun.UserStack) instead of a kernel TUN. It then needs no
// privilege and touches no kernel state: no TUN, netlink, nftables or
// sysctl. Container attach and published ports answer CodeUnsupported.
// Local programs reach the mesh through the proxies; mesh peers reach local
// services through forwards.
type Userspace struct {
	// SOCKS5Listen is the SOCKS5 server's ip:port; "" means none.
	SOCKS5Listen string
	// HTTPProxyListen is the HTTP proxy's ip:port; "" means none.
	HTTPProxyListen string
	// ProxyAllowRemote allows proxy listeners on non-loopback addresses
	// (they are refused otherwise, and logged as a warning when allowed).
	ProxyAllowRemote bool
	// Forwards are installed at start (see netproxy.ParseForward).
	Forwards []netproxy.Forward
}

// userspaceNode is the state of a node in userspace mode.
type userspaceNode struct {
	dev      *tun.UserStack
	net      *userspace.Net
	forwards *netproxy.Forwards
	socksLn  net.Listener // nil when off
	httpLn   net.Listener // nil when off
	fileMu   sync.Mutex   // serializes writes of forwardsFile
}

// userspacePlumbing is the Plumbing of userspace mode: the address goes
// into the netstack, and routes are implicit (the stack sends everything
// to WireGuard, which routes by AllowedIPs).
type userspacePlumbing struct{ dev *tun.UserStack }

func (p userspacePlumbing) SetAddress(_ string, addr netip.Prefix) error {
	return p.dev.SetAddress(addr)
}
func (userspacePlumbing) SetRoutes(string, []netip.Prefix) error { return nil }

// initUserspace runs first in Start when cfg.Userspace is set: it checks and
// binds the proxy listeners (so that a port in use fails the start before
// anything else is made) and makes the netstack that the node uses as its
// TUN and Plumbing.
func (n *Node) initUserspace() error {
	u := n.cfg.Userspace
	for _, l := range []struct{ flag, addr string }{{"--socks5-listen", u.SOCKS5Listen}, {"--http-proxy-listen", u.HTTPProxyListen}} {
		if l.addr == "" {
			continue
		}
		remote, err := netproxy.CheckListen(l.flag, l.addr, u.ProxyAllowRemote)
		if err != nil {
			return err
		}
		if remote {
			n.log.Warn("proxy listens on a non-loopback address: whoever reaches it enters the mesh", "flag", l.flag, "listen", l.addr)
		}
	}
	us := &userspaceNode{forwards: &netproxy.Forwards{Log: n.log.With("component", "forward")}}
	var err error
	if u.SOCKS5Listen != "" {
		if us.socksLn, err = net.Listen("tcp", u.SOCKS5Listen); err != nil {
			return fmt.Errorf("--socks5-listen %s: %w", u.SOCKS5Listen, errors.Unwrap(err))
		}
		n.undo = append(n.undo, func() { us.socksLn.Close() })
	}
	if u.HTTPProxyListen != "" {
		if us.httpLn, err = net.Listen("tcp", u.HTTPProxyListen); err != nil {
			return fmt.Errorf("--http-proxy-listen %s: %w", u.HTTPProxyListen, errors.Unwrap(err))
		}
		n.undo = append(n.undo, func() { us.httpLn.Close() })
	}
	if us.dev, err = tun.NewUserStack(n.cfg.MTU); err != nil {
		return err
	}
	// The device is closed with the WireGuard device (or here when Start
	// fails before that); closing it twice is fine.
	n.undo = append(n.undo, func() { us.dev.Close() })
	us.net = &userspace.Net{Stack: us.dev.Stack(), NIC: tun.UserStackNIC}
	n.cfg.NewTUN = func(string, int) (tun.Device, error) { return us.dev, nil }
	n.cfg.Plumbing = userspacePlumbing{us.dev}
	n.us = us
	return nil
}

// startUserspace runs in Start once the mesh DNS is up: it installs the
// forwards (flags, then those saved from the control API) and starts
// serving them and the proxies.
func (n *Node) startUserspace() error {
	us := n.us
	var saved []api.Forward
	if err := statefile.ReadJSON(filepath.Join(n.cfg.StateDir, forwardsFile), &saved); err != nil && !errors.Is(err, statefile.ErrNotExist) {
		return err
	}
	for _, f := range n.cfg.Userspace.Forwards {
		if err := us.forwards.Add(f); err != nil {
			return fmt.Errorf("--forward %s: %w", f, err)
		}
	}
	for _, a := range saved {
		f, err := forwardFromAPI(a)
		if err == nil {
			err = us.forwards.Add(f)
		}
		if err != nil {
			n.log.Warn("saved forward skipped", "forward", a, "err", err)
		}
	}
	userspace.Serve(us.dev.Stack(), us.forwards)

	d := &netproxy.Dialer{Net: us.net, Resolver: userspace.Resolver(us.net, n.pool.MeshDNS())}
	if us.socksLn != nil {
		s := &netproxy.SOCKS5{Dialer: d, Log: n.log.With("component", "socks5")}
		go s.Serve(us.socksLn)
	}
	if us.httpLn != nil {
		p := &netproxy.HTTPProxy{Dialer: d, Log: n.log.With("component", "httpproxy")}
		go p.Serve(us.httpLn)
	}
	n.undo = append(n.undo, func() {
		if us.socksLn != nil {
			us.socksLn.Close()
		}
		if us.httpLn != nil {
			us.httpLn.Close()
		}
	})
	var fw []string
	for _, f := range us.forwards.List() {
		fw = append(fw, f.String())
	}
	n.log.Info("userspace mode", "socks5", n.cfg.Userspace.SOCKS5Listen, "http_proxy", n.cfg.Userspace.HTTPProxyListen, "forwards", fw)
	return nil
}

// userspaceStatus is Status.Userspace: nil in kernel mode.
func (n *Node) userspaceStatus() *api.UserspaceStatus {
	if n.us == nil {
		return nil
	}
	st := &api.UserspaceStatus{
		SOCKS5:    n.cfg.Userspace.SOCKS5Listen,
		HTTPProxy: n.cfg.Userspace.HTTPProxyListen,
		Forwards:  []string{},
	}
	for _, f := range n.us.forwards.List() {
		st.Forwards = append(st.Forwards, f.String())
	}
	return st
}

func forwardFromAPI(a api.Forward) (netproxy.Forward, error) {
	spec := strconv.Itoa(a.Port)
	if a.Protocol != "" {
		spec += "/" + a.Protocol
	}
	if a.Target != "" {
		spec += ":" + a.Target
	}
	return netproxy.ParseForward(spec)
}

func forwardToAPI(f netproxy.Forward) api.Forward {
	return api.Forward{Protocol: f.Proto, Port: int(f.Port), Target: f.Target.String()}
}

// Forwards lists the inbound forwards; in kernel mode, CodeUnsupported.
func (n *Node) Forwards() ([]api.Forward, error) {
	if n.us == nil {
		return nil, errNoUserspace()
	}
	out := []api.Forward{}
	for _, f := range n.us.forwards.List() {
		out = append(out, forwardToAPI(f))
	}
	return out, nil
}

// AddForward installs a forward and saves it in the state dir.
func (n *Node) AddForward(a api.Forward) (api.Forward, error) {
	if n.us == nil {
		return api.Forward{}, errNoUserspace()
	}
	f, err := forwardFromAPI(a)
	if err != nil {
		return api.Forward{}, api.Errorf(api.CodeBadRequest, "%v", err)
	}
	if err := n.us.forwards.Add(f); err != nil {
		if errors.Is(err, netproxy.ErrForwardExists) {
			return api.Forward{}, api.Errorf(api.CodeAlreadyExists, "%v", err)
		}
		return api.Forward{}, err
	}
	if err := n.saveForwards(); err != nil {
		n.us.forwards.Remove(f.Proto, f.Port)
		return api.Forward{}, err
	}
	n.log.Info("forward added", "forward", f.String())
	return forwardToAPI(f), nil
}

// RemoveForward removes a forward; its open connections go on.
func (n *Node) RemoveForward(req api.UnforwardRequest) error {
	if n.us == nil {
		return errNoUserspace()
	}
	proto := req.Protocol
	if proto == "" {
		proto = "tcp"
	}
	if req.Port < 1 || req.Port > 65535 {
		return api.Errorf(api.CodeBadRequest, "port %d: must be between 1 and 65535", req.Port)
	}
	f, err := n.us.forwards.Remove(proto, uint16(req.Port))
	if err != nil {
		return api.Errorf(api.CodeNotFound, "%v", err)
	}
	if err := n.saveForwards(); err != nil {
		return err
	}
	n.log.Info("forward removed", "forward", f.String())
	return nil
}

// saveForwards writes the current forwards to the state dir.
func (n *Node) saveForwards() error {
	n.us.fileMu.Lock()
	defer n.us.fileMu.Unlock()
	list, _ := n.Forwards()
	return statefile.WriteJSON(filepath.Join(n.cfg.StateDir, forwardsFile), list)
}

func errNoUserspace() error {
	return api.Errorf(api.CodeUnsupported, "forwards exist in userspace mode only (zlmesh up --userspace)")
}

// userspaceRoutes adds the control endpoints of userspace mode.
func (n *Node) userspaceRoutes(routes map[string]endpoint) {
	routes["GET /v1/forwards"] = func(*http.Request) (any, error) { return n.Forwards() }
	routes["POST /v1/forwards"] = func(r *http.Request) (any, error) {
		var req api.Forward
		if err := decodeBody(r, &req); err != nil {
			return nil, err
		}
		return n.AddForward(req)
	}
	routes["DELETE /v1/forwards"] = func(r *http.Request) (any, error) {
		var req api.UnforwardRequest
		if err := decodeBody(r, &req); err != nil {
			return nil, err
		}
		return nil, n.RemoveForward(req)
	}
}
