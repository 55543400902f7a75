package testbed

// Convergence: what every host's node answers and its kernel holds, taken at
// one moment (View), the invariants a healthy mesh keeps (MeshView.Problems:
// pure, so it is unit-tested on made-up views), and waiting for a mesh to
// reach them (WaitConverged), pings included.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/zlmesh/zlmesh/api"
	"github.com/zlmesh/zlmesh/internal/journal"
)

// HostView is one host at one moment: its node's answers, its kernel's zl*
// objects and its state dir. Collection errors go to Err; the fields
// collected before stay set.
type HostView struct {
	Host    string
	Running bool
	Status  api.Status
	Peers   []api.Peer
	// Attachments (GET /v1/attachments) and Services (GET /v1/services).
	Attachments []api.Attachment
	Services    []api.ServiceEndpoint
	// Leases is zlmesh_leases from /metrics (-1 when the node does not
	// export it).
	Leases int
	// Links are the host's zl* links (the TUN, bridges, host veths) with
	// their addresses.
	Links []KernelLink
	// Routes are the main table's routes through zl* links.
	Routes []KernelRoute
	// WireGuard maps each peer of the node's interface (`wg show <if>
	// allowed-ips`) to its allowed IPs.
	WireGuard map[string][]netip.Prefix
	// OnDisk are the container ids the state dir's attachments hold.
	OnDisk []string
	Err    error
}

// KernelLink is one link as `ip -j -d addr show` describes it.
type KernelLink struct {
	Name, Kind, Master string
	// Addrs are its addresses of global scope.
	Addrs []netip.Prefix
}

// KernelRoute is one route of the main table.
type KernelRoute struct {
	Dst netip.Prefix
	Dev string
	// Protocol as ip prints it: "kernel" for a connected route, "90"
	// (0x5a) for zlmesh's own.
	Protocol string
}

// ContainerView is one container the mesh is expected to hold.
type ContainerView struct {
	ID, Host, Service string
	// Addrs are the global addresses inside the container (all links but
	// lo); Err is why they could not be read.
	Addrs []netip.Addr
	Err   error
}

// MeshView is every host and every expected container at one moment.
type MeshView struct {
	Hosts      []HostView
	Containers []ContainerView
	// Netns tells, for every attachment's netns path, whether it exists on
	// the machine.
	Netns map[string]bool
	// Released makes a block other than a node's first one that holds no
	// container a problem (a leaked block): set it when the nodes release
	// empty blocks within the wait (ChaosBlockArgs makes them).
	Released bool
}

// nodeBlocks returns the address blocks a node holds, as its status reports
// them: the one place that knows how (with peerBlocks).
func nodeBlocks(st api.Status) ([]netip.Prefix, error) {
	return parsePrefixes(st.Blocks...)
}

// peerBlocks returns the blocks a node believes a peer holds.
func peerBlocks(p api.Peer) ([]netip.Prefix, error) {
	return parsePrefixes(p.Blocks...)
}

func parsePrefixes(ss ...string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, s := range ss {
		if s == "" {
			continue
		}
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return nil, err
		}
		out = append(out, p.Masked())
	}
	return out, nil
}

// View collects what every host's node answers and holds, in parallel, and
// the addresses inside the given containers (container → the service it is
// expected on, nil for none).
func (tb *Testbed) View(ctx context.Context, want map[*Container]string) MeshView {
	hosts := tb.Hosts()
	v := MeshView{Hosts: make([]HostView, len(hosts)), Netns: map[string]bool{}}
	var wg sync.WaitGroup
	for i, h := range hosts {
		wg.Go(func() { v.Hosts[i] = viewHost(ctx, h) })
	}
	cs := make([]*Container, 0, len(want))
	for c := range want {
		cs = append(cs, c)
	}
	slices.SortFunc(cs, func(a, b *Container) int { return strings.Compare(a.ID(), b.ID()) })
	v.Containers = make([]ContainerView, len(cs))
	sem := make(chan struct{}, 8)
	for i, c := range cs {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			cv := ContainerView{ID: c.ID(), Host: c.Host.Name, Service: want[c]}
			cv.Addrs, cv.Err = globalAddrs(ctx, c)
			v.Containers[i] = cv
		})
	}
	wg.Wait()
	for _, hv := range v.Hosts {
		for _, a := range hv.Attachments {
			if a.Netns != "" {
				_, err := os.Stat(a.Netns)
				v.Netns[a.Netns] = err == nil
			}
		}
	}
	return v
}

func viewHost(ctx context.Context, h *Host) HostView {
	hv := HostView{Host: h.Name, Running: h.Running(), Leases: -1}
	if !hv.Running {
		hv.Err = ErrNotRunning
		return hv
	}
	step := func(what string, err error) bool {
		if err != nil && hv.Err == nil {
			hv.Err = fmt.Errorf("%s: %s: %w", h.Name, what, err)
		}
		return err == nil
	}
	c := h.Client()
	var err error
	hv.Status, err = c.Status(ctx)
	if !step("status", err) {
		return hv
	}
	hv.Peers, err = c.Peers(ctx)
	step("peers", err)
	hv.Attachments, err = c.Attachments(ctx)
	step("attachments", err)
	hv.Services, err = c.Services(ctx)
	step("services", err)
	hv.Leases, err = metricValue(ctx, h, "zlmesh_leases")
	step("metrics", err)
	hv.Links, err = hostLinks(ctx, h)
	step("ip addr", err)
	hv.Routes, err = hostRoutes(ctx, h)
	step("ip route", err)
	hv.WireGuard, err = wgAllowedIPs(ctx, h, hv.Status.Interface)
	step("wg show", err)
	hv.OnDisk, err = attachedOnDisk(h.StateDir)
	step("state dir", err)
	return hv
}

// metricValue reads one unlabelled series from the node's /metrics (-1 when
// it is not there).
func metricValue(ctx context.Context, h *Host, name string) (int, error) {
	hc := &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", h.Socket)
		},
	}}
	defer hc.CloseIdleConnections()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://zlmesh/metrics", nil)
	if err != nil {
		return -1, err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return -1, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return -1, fmt.Errorf("GET /metrics: HTTP %d", resp.StatusCode)
	}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 2 && f[0] == name {
			v, err := strconv.ParseFloat(f[1], 64)
			if err != nil {
				return -1, fmt.Errorf("/metrics: %s %q: %w", name, f[1], err)
			}
			return int(v), nil
		}
	}
	return -1, sc.Err()
}

// ipAddrJSON is the part of `ip -j -d addr show` read here.
type ipAddrJSON struct {
	Ifname   string `json:"ifname"`
	Master   string `json:"master"`
	LinkInfo struct {
		Kind string `json:"info_kind"`
	} `json:"linkinfo"`
	AddrInfo []struct {
		Local  string `json:"local"`
		Prefix int    `json:"prefixlen"`
		Scope  string `json:"scope"`
	} `json:"addr_info"`
}

func parseIPAddr(out []byte) ([]KernelLink, error) {
	var raw []ipAddrJSON
	if err := json.Unmarshal(out, &raw); err != nil {
		return nil, fmt.Errorf("ip -j addr: %w", err)
	}
	var links []KernelLink
	for _, l := range raw {
		kl := KernelLink{Name: l.Ifname, Kind: l.LinkInfo.Kind, Master: l.Master}
		for _, a := range l.AddrInfo {
			if a.Scope == "link" || a.Scope == "host" {
				continue
			}
			addr, err := netip.ParseAddr(a.Local)
			if err != nil {
				return nil, fmt.Errorf("ip -j addr: %s: %w", l.Ifname, err)
			}
			kl.Addrs = append(kl.Addrs, netip.PrefixFrom(addr, a.Prefix))
		}
		links = append(links, kl)
	}
	return links, nil
}

func hostLinks(ctx context.Context, h *Host) ([]KernelLink, error) {
	out, err := h.Exec(ctx, "ip", "-j", "-d", "addr", "show")
	if err != nil {
		return nil, err
	}
	links, err := parseIPAddr(out)
	return slices.DeleteFunc(links, func(l KernelLink) bool { return !strings.HasPrefix(l.Name, "zl") }), err
}

// globalAddrs lists the global addresses inside a container (lo excluded).
func globalAddrs(ctx context.Context, c *Container) ([]netip.Addr, error) {
	out, err := c.Exec(ctx, "ip", "-j", "-d", "addr", "show")
	if err != nil {
		return nil, err
	}
	links, err := parseIPAddr(out)
	if err != nil {
		return nil, err
	}
	var addrs []netip.Addr
	for _, l := range links {
		if l.Name == "lo" {
			continue
		}
		for _, p := range l.Addrs {
			addrs = append(addrs, p.Addr())
		}
	}
	return addrs, nil
}

func parseIPRoute(out []byte) ([]KernelRoute, error) {
	var raw []struct {
		Dst      string `json:"dst"`
		Dev      string `json:"dev"`
		Protocol string `json:"protocol"`
	}
	if err := json.Unmarshal(out, &raw); err != nil {
		return nil, fmt.Errorf("ip -j route: %w", err)
	}
	var routes []KernelRoute
	for _, r := range raw {
		if !strings.HasPrefix(r.Dev, "zl") {
			continue
		}
		p, err := netip.ParsePrefix(r.Dst)
		if err != nil {
			a, aerr := netip.ParseAddr(r.Dst)
			if aerr != nil {
				return nil, fmt.Errorf("ip -j route: dst %q of %s: %w", r.Dst, r.Dev, err)
			}
			p = netip.PrefixFrom(a, a.BitLen())
		}
		routes = append(routes, KernelRoute{Dst: p, Dev: r.Dev, Protocol: r.Protocol})
	}
	return routes, nil
}

func hostRoutes(ctx context.Context, h *Host) ([]KernelRoute, error) {
	out, err := h.Exec(ctx, "ip", "-j", "route", "show", "table", "main")
	if err != nil {
		return nil, err
	}
	return parseIPRoute(out)
}

// parseWGAllowedIPs reads `wg show <if> allowed-ips`: a public key, a tab,
// space-separated prefixes (or "(none)"), one peer a line.
func parseWGAllowedIPs(out []byte) (map[string][]netip.Prefix, error) {
	peers := map[string][]netip.Prefix{}
	for line := range strings.SplitSeq(strings.TrimSpace(string(out)), "\n") {
		if line == "" {
			continue
		}
		key, rest, _ := strings.Cut(line, "\t")
		peers[key] = nil
		for _, s := range strings.Fields(rest) {
			if s == "(none)" {
				continue
			}
			p, err := netip.ParsePrefix(s)
			if err != nil {
				return nil, fmt.Errorf("wg allowed-ips of %s: %w", key, err)
			}
			peers[key] = append(peers[key], p)
		}
	}
	return peers, nil
}

func wgAllowedIPs(ctx context.Context, h *Host, iface string) (map[string][]netip.Prefix, error) {
	if iface == "" {
		return nil, errors.New("the status names no interface")
	}
	out, err := h.Exec(ctx, "wg", "show", iface, "allowed-ips")
	if err != nil {
		return nil, err
	}
	return parseWGAllowedIPs(out)
}

// attachedOnDisk returns the container ids of the state dir's
// attachments.json (a journaled snapshot {"attachments": {id: …}} plus
// records {"put": {"spec": {"Container": id}}} or {"del": id}), read from a
// copy so the running node's journal is never touched.
func attachedOnDisk(stateDir string) ([]string, error) {
	tmp, err := os.MkdirTemp("", "zltb-state-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp)
	for _, name := range []string{"attachments.json", "attachments.json.log"} {
		b, err := os.ReadFile(filepath.Join(stateDir, name))
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, err
		}
		if err := os.WriteFile(filepath.Join(tmp, name), b, 0o600); err != nil {
			return nil, err
		}
	}
	log, snap, recs, err := journal.Open(filepath.Join(tmp, "attachments.json"))
	if err != nil {
		return nil, err
	}
	log.Close()
	return foldAttachments(snap, recs)
}

func foldAttachments(snap []byte, recs [][]byte) ([]string, error) {
	ids := map[string]bool{}
	if len(bytes.TrimSpace(snap)) > 0 {
		var s struct {
			Attachments map[string]json.RawMessage `json:"attachments"`
		}
		if err := json.Unmarshal(snap, &s); err != nil {
			return nil, fmt.Errorf("attachments.json: %w", err)
		}
		for id := range s.Attachments {
			ids[id] = true
		}
	}
	for _, raw := range recs {
		var r struct {
			Put *struct {
				Spec struct {
					Container string `json:"Container"`
				} `json:"spec"`
			} `json:"put"`
			Del string `json:"del"`
		}
		if err := json.Unmarshal(raw, &r); err != nil {
			return nil, fmt.Errorf("attachments.json.log: %w", err)
		}
		if r.Put != nil {
			ids[r.Put.Spec.Container] = true
		} else {
			delete(ids, r.Del)
		}
	}
	out := make([]string, 0, len(ids))
	for id := range ids {
		out = append(out, id)
	}
	slices.Sort(out)
	return out, nil
}

// PingMesh pings every host's overlay address from every other kernel-mode
// host (a userspace host has no kernel route into the overlay: it is only
// pinged), and every given container's address from every other given
// container, with the addresses of v, at most 32 pings at a time. A pair that gets no
// answer is tried twice more. It returns the pairs that never answered
// ("h1→h3 (10.200.3.1): …"), sorted.
func (tb *Testbed) PingMesh(ctx context.Context, v MeshView, cs []*Container) []string {
	type pair struct {
		from, to, addr string
		ping           func(context.Context, string) error
	}
	var pairs []pair
	hosts := tb.Hosts()
	overlay := map[string]string{}
	addr := map[string]string{}
	for _, h := range v.Hosts {
		overlay[h.Host] = h.Status.OverlayIP
		for _, a := range h.Attachments {
			addr[a.Container] = a.Address
		}
	}
	for _, from := range hosts {
		if from.Userspace {
			continue // no kernel route into the overlay: only pinged
		}
		for _, to := range hosts {
			if from != to {
				pairs = append(pairs, pair{from.Name, to.Name, overlay[to.Name], from.Ping})
			}
		}
	}
	for _, from := range cs {
		for _, to := range cs {
			if from != to {
				pairs = append(pairs, pair{from.String(), to.String(), addr[to.ID()], from.Ping})
			}
		}
	}
	for try := 0; try < 3 && len(pairs) > 0; try++ {
		var mu sync.Mutex
		var failed []pair
		var why []string
		sem := make(chan struct{}, 32)
		var wg sync.WaitGroup
		for _, pr := range pairs {
			wg.Go(func() {
				sem <- struct{}{}
				defer func() { <-sem }()
				err := errors.New("no address")
				if pr.addr != "" {
					err = pr.ping(ctx, pr.addr)
				}
				if err != nil {
					mu.Lock()
					failed = append(failed, pr)
					why = append(why, fmt.Sprintf("%s→%s (%s): %v", pr.from, pr.to, pr.addr, err))
					mu.Unlock()
				}
			})
		}
		wg.Wait()
		pairs = failed
		if try == 2 || ctx.Err() != nil {
			slices.Sort(why)
			return why
		}
	}
	return nil
}

// ErrNotConverged is returned by WaitConverged when the mesh did not reach
// its invariants in time.
var ErrNotConverged = errors.New("the mesh did not converge")

// WaitConverged waits until the mesh keeps every invariant of
// MeshView.Problems and every host and given container reaches every
// other (PingMesh), checking about once a second, with want the containers
// expected attached (container → service). It returns the last view. After
// timeout it fails with ErrNotConverged and the problems of the last check
// (at most 40 lines).
func (tb *Testbed) WaitConverged(ctx context.Context, want map[*Container]string, timeout time.Duration) (MeshView, error) {
	c, err := tb.waitConverged(ctx, want, timeout, false)
	return c.view, err
}

// convergence is how a WaitConverged went.
type convergence struct {
	view MeshView
	// lagging are the problems of the last check that found any.
	lagging []string
	// consistent is when the invariants (Problems, not the pings) first
	// held, from the start of the wait (-1: never).
	consistent time.Duration
	diagnosed  bool
}

func (tb *Testbed) logf(format string, args ...any) {
	tb.mu.Lock()
	l := tb.opts.Logf
	tb.mu.Unlock()
	l(format, args...)
}

// dataPath renders every running host's WireGuard peers (`wg show zl0
// dump`: key, endpoint, allowed IPs, latest handshake, bytes), routes and
// ICMP conntrack entries, for a diagnosis.
func (tb *Testbed) dataPath(ctx context.Context) string {
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	var b strings.Builder
	for _, h := range tb.Hosts() {
		if !h.Running() {
			fmt.Fprintf(&b, "--- %s: not running\n", h.Name)
			continue
		}
		for _, argv := range [][]string{{"wg", "show", "zl0", "dump"}, {"ip", "route"}, {"sh", "-c", "grep icmp /proc/net/nf_conntrack"}} {
			out, err := h.Exec(ctx, argv...)
			fmt.Fprintf(&b, "--- %s: %s (%v)\n%s", h.Name, strings.Join(argv, " "), err, out)
		}
	}
	return b.String()
}

// waitConverged is WaitConverged; released sets MeshView.Released.
func (tb *Testbed) waitConverged(ctx context.Context, want map[*Container]string, timeout time.Duration, released bool) (convergence, error) {
	begin := time.Now()
	deadline := begin.Add(timeout)
	c := convergence{consistent: -1}
	cs := make([]*Container, 0, len(want))
	for x := range want {
		cs = append(cs, x)
	}
	slices.SortFunc(cs, func(a, b *Container) int { return strings.Compare(a.ID(), b.ID()) })
	for {
		cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		c.view = tb.View(cctx, want)
		c.view.Released = released
		probs := c.view.Problems()
		if len(probs) == 0 {
			if c.consistent < 0 {
				c.consistent = time.Since(begin)
			}
			probs = tb.PingMesh(cctx, c.view, cs)
		}
		cancel()
		if len(probs) == 0 {
			return c, nil
		}
		c.lagging = probs
		// Consistent for 5 s and still pings fail: what the data path needs
		// for a diagnosis, once.
		if c.consistent >= 0 && !c.diagnosed && time.Since(begin)-c.consistent >= 5*time.Second {
			c.diagnosed = true
			tb.logf("mesh consistent for %v but %d pings fail (first: %s); the hosts' WireGuard and routes:\n%s",
				(time.Since(begin) - c.consistent).Round(100*time.Millisecond), len(probs), probs[0], tb.dataPath(ctx))
		}
		if ctx.Err() != nil || time.Now().After(deadline) {
			n := len(probs)
			if n > 40 {
				probs = append(probs[:40], fmt.Sprintf("… and %d more", n-40))
			}
			return c, fmt.Errorf("%w after %v: %d problems:\n  %s", ErrNotConverged, timeout, n, strings.Join(probs, "\n  "))
		}
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
}
