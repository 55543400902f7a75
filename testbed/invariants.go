package testbed

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/zlmesh/zlmesh/api"
	"github.com/zlmesh/zlmesh/ipam"
)

// Problems checks a view against what a whole, quiet mesh holds, and returns
// every violation, one line each ("" for none); pings are not part of it
// (see WaitConverged). The invariants:
//
//   - membership: every host's node runs and answers, counts every host
//     as a member, and sees every other one alive, with the public key,
//     overlay address and blocks that node reports for itself;
//   - WireGuard and routes: each node's peers are exactly the other nodes,
//     each allowing exactly that node's blocks and overlay address (compared
//     as address sets, so coalescing does not matter); its own routes
//     through the TUN cover every other node's blocks and nothing beyond
//     them and their overlay addresses (not checked for a node in
//     userspace mode: its routes live in its netstack, not the kernel);
//   - no duplicates: no two nodes' blocks overlap, each node's overlay
//     address lies in its blocks, every container address lies in its
//     node's blocks and is given once in the whole mesh, and is no node's
//     overlay address and no address on any host's zl* link;
//   - no leaks: every zlv*/zlb-* link, and every route through one, belongs
//     to an attachment (its host veth or bridge, a host route to its
//     address), every attachment has its host veth on its bridge and its
//     netns, the state dir holds exactly the attachments the node lists,
//     and the node counts one lease per attachment; with Released, every
//     block but a node's first holds one of its containers;
//   - endpoints: every node lists the same service endpoints, exactly the
//     attachments of all nodes;
//   - containers: each expected container is attached once, on its host,
//     to its service, and holds its attachment's address and no other.
func (v MeshView) Problems() []string {
	var p problems
	byName := map[string]*HostView{}
	for i := range v.Hosts {
		byName[v.Hosts[i].Host] = &v.Hosts[i]
	}
	for _, h := range v.Hosts {
		if !h.Running {
			p.add("%s: zlmesh does not run", h.Host)
		} else if h.Err != nil {
			p.add("%s: %v", h.Host, h.Err)
		}
	}
	if len(p) > 0 {
		return p // the rest would only repeat it
	}
	blocks := map[string][]netip.Prefix{}
	for _, h := range v.Hosts {
		b, err := nodeBlocks(h.Status)
		if err != nil || len(b) == 0 {
			p.add("%s: blocks %v (%v)", h.Host, b, err)
		}
		blocks[h.Host] = b
	}
	v.checkMembership(&p, blocks)
	v.checkWireGuard(&p, blocks)
	v.checkDuplicates(&p, blocks)
	if v.Released {
		v.checkReleased(&p, blocks)
	}
	for _, h := range v.Hosts {
		h.checkLeaks(&p, v.Netns)
	}
	v.checkEndpoints(&p)
	v.checkContainers(&p)
	return p
}

type problems []string

func (p *problems) add(format string, args ...any) { *p = append(*p, fmt.Sprintf(format, args...)) }

func (v MeshView) checkMembership(p *problems, blocks map[string][]netip.Prefix) {
	for _, h := range v.Hosts {
		if h.Status.Members != len(v.Hosts) || h.Status.Alone {
			p.add("%s: %d members (alone %v), want %d", h.Host, h.Status.Members, h.Status.Alone, len(v.Hosts))
		}
		peers := map[string]api.Peer{}
		for _, pe := range h.Peers {
			peers[pe.Name] = pe
		}
		for _, o := range v.Hosts {
			if o.Host == h.Host {
				continue
			}
			pe, ok := peers[o.Host]
			delete(peers, o.Host)
			if !ok {
				p.add("%s does not know %s", h.Host, o.Host)
				continue
			}
			if pe.State != api.PeerAlive {
				p.add("%s sees %s %s", h.Host, o.Host, pe.State)
			}
			if pe.PublicKey != o.Status.PublicKey || pe.OverlayIP != o.Status.OverlayIP {
				p.add("%s sees %s as %s %s, it is %s %s", h.Host, o.Host, pe.PublicKey, pe.OverlayIP, o.Status.PublicKey, o.Status.OverlayIP)
			}
			if pb, err := peerBlocks(pe); err != nil || !sameAddrs(pb, blocks[o.Host]) {
				p.add("%s believes %s holds %v, it holds %v", h.Host, o.Host, pb, blocks[o.Host])
			}
		}
		for name, pe := range peers {
			p.add("%s lists a peer %s (%s) that is no host", h.Host, name, pe.State)
		}
	}
}

func (v MeshView) checkWireGuard(p *problems, blocks map[string][]netip.Prefix) {
	want := map[string][]netip.Prefix{} // public key → blocks and overlay address
	hostOf := map[string]string{}
	for _, h := range v.Hosts {
		w := slices.Clone(blocks[h.Host])
		if a, err := netip.ParseAddr(h.Status.OverlayIP); err == nil {
			w = append(w, netip.PrefixFrom(a, a.BitLen()))
		}
		if tw := Twins(h.Status); tw != nil {
			// Dual-stack: the IPv6 twins of all of it.
			w = append(w, tw.Prefixes(w)...)
		}
		want[h.Status.PublicKey] = w
		hostOf[h.Status.PublicKey] = h.Host
	}
	for _, h := range v.Hosts {
		var others, othersAll []netip.Prefix
		for key, allowed := range h.WireGuard {
			o, ok := hostOf[key]
			switch {
			case !ok:
				p.add("%s: WireGuard peer %s is no host", h.Host, key)
			case o == h.Host:
				p.add("%s: WireGuard has itself as a peer", h.Host)
			case !sameAddrs(allowed, want[key]):
				p.add("%s: WireGuard peer %s allows %v, want %v", h.Host, o, allowed, want[key])
			}
		}
		for _, o := range v.Hosts {
			if o.Host == h.Host {
				continue
			}
			if _, ok := h.WireGuard[o.Status.PublicKey]; !ok {
				p.add("%s: no WireGuard peer for %s", h.Host, o.Host)
			}
			others = append(others, blocks[o.Host]...)
			othersAll = append(othersAll, want[o.Status.PublicKey]...)
		}
		if h.Status.Userspace != nil {
			continue // no kernel routes: the netstack routes by WireGuard's AllowedIPs
		}
		var mine []netip.Prefix
		for _, r := range h.Routes {
			if r.Dev == h.Status.Interface && r.Protocol != "kernel" {
				mine = append(mine, r.Dst)
			}
		}
		if !covers(mine, others) {
			p.add("%s: routes through %s %v do not cover the other nodes' blocks %v", h.Host, h.Status.Interface, mine, others)
		}
		if !covers(othersAll, mine) {
			p.add("%s: routes through %s %v reach beyond the other nodes' blocks and overlay addresses %v", h.Host, h.Status.Interface, mine, othersAll)
		}
	}
}

// Twins is the IPv6 mapping of the node whose status is st (ipam.Twins), nil
// when it runs IPv4 only or its status does not describe one.
func Twins(st api.Status) *ipam.Twins {
	cluster, err1 := netip.ParsePrefix(st.ClusterCIDR)
	first, err2 := netip.ParsePrefix(st.FirstBlock)
	cluster6, err3 := netip.ParsePrefix(st.ClusterCIDR6)
	if err1 != nil || err2 != nil || err3 != nil {
		return nil
	}
	pool, err := ipam.NewPool(cluster, first.Bits())
	if err != nil {
		return nil
	}
	tw, err := ipam.NewTwins(pool, cluster6)
	if err != nil {
		return nil
	}
	return tw
}

func (v MeshView) checkDuplicates(p *problems, blocks map[string][]netip.Prefix) {
	for i, a := range v.Hosts {
		for _, b := range v.Hosts[i+1:] {
			for _, x := range blocks[a.Host] {
				for _, y := range blocks[b.Host] {
					if x.Overlaps(y) {
						p.add("blocks overlap: %s holds %s, %s holds %s", a.Host, x, b.Host, y)
					}
				}
			}
		}
	}
	owner := map[netip.Addr]string{} // every address given out → who has it
	give := func(a netip.Addr, who string) {
		if prev, dup := owner[a]; dup {
			p.add("address %s given twice: %s and %s", a, prev, who)
			return
		}
		owner[a] = who
	}
	for _, h := range v.Hosts {
		ov, err := netip.ParseAddr(h.Status.OverlayIP)
		if err != nil {
			p.add("%s: overlay address %q: %v", h.Host, h.Status.OverlayIP, err)
			continue
		}
		if !containsAddr(blocks[h.Host], ov) {
			p.add("%s: overlay address %s is not in its blocks %v", h.Host, ov, blocks[h.Host])
		}
		give(ov, h.Host+" (overlay)")
	}
	for _, h := range v.Hosts {
		cluster, _ := netip.ParsePrefix(h.Status.ClusterCIDR)
		for _, a := range h.Attachments {
			addr, err := netip.ParseAddr(a.Address)
			if err != nil {
				p.add("%s: attachment %s address %q: %v", h.Host, a.Container, a.Address, err)
				continue
			}
			if !containsAddr(blocks[h.Host], addr) {
				p.add("%s: %s has %s, outside its node's blocks %v", h.Host, a.Container, addr, blocks[h.Host])
			}
			give(addr, h.Host+"/"+a.Container)
		}
		// Addresses on the host's zl* links inside the cluster CIDR (a
		// bridge's gateway, when it is one): the TUN holds the overlay
		// address, already counted.
		for _, l := range h.Links {
			if l.Name == h.Status.Interface {
				continue
			}
			for _, pr := range l.Addrs {
				if cluster.IsValid() && cluster.Contains(pr.Addr()) {
					give(pr.Addr(), h.Host+" "+l.Name)
				}
			}
		}
	}
}

func (v MeshView) checkReleased(p *problems, blocks map[string][]netip.Prefix) {
	for _, h := range v.Hosts {
		first, _ := netip.ParsePrefix(h.Status.FirstBlock)
		for _, b := range blocks[h.Host] {
			if b == first.Masked() {
				continue
			}
			if !slices.ContainsFunc(h.Attachments, func(a api.Attachment) bool {
				addr, err := netip.ParseAddr(a.Address)
				return err == nil && b.Contains(addr)
			}) {
				p.add("%s: leaked block %s: none of its containers is in it", h.Host, b)
			}
		}
	}
}

func (h HostView) checkLeaks(p *problems, netns map[string]bool) {
	links := map[string]KernelLink{}
	for _, l := range h.Links {
		links[l.Name] = l
	}
	veths, bridges := map[string]api.Attachment{}, map[string]bool{}
	var ids []string
	for _, a := range h.Attachments {
		ids = append(ids, a.Container)
		veths[a.HostVeth] = a
		bridges[a.Bridge] = true
		if a.Node != h.Host {
			p.add("%s: attachment %s says node %q", h.Host, a.Container, a.Node)
		}
		l, ok := links[a.HostVeth]
		switch {
		case !ok:
			p.add("%s: %s's host veth %s is missing", h.Host, a.Container, a.HostVeth)
		case l.Master != a.Bridge:
			p.add("%s: %s's host veth %s is on %q, want %s", h.Host, a.Container, a.HostVeth, l.Master, a.Bridge)
		}
		if _, ok := links[a.Bridge]; !ok {
			p.add("%s: %s's bridge %s is missing", h.Host, a.Container, a.Bridge)
		}
		if a.Netns != "" && !netns[a.Netns] {
			p.add("%s: %s's netns %s is gone", h.Host, a.Container, a.Netns)
		}
	}
	for _, l := range h.Links {
		switch {
		case strings.HasPrefix(l.Name, "zlv"):
			if _, ok := veths[l.Name]; !ok {
				p.add("%s: leaked link %s (%s on %q): no attachment has it", h.Host, l.Name, l.Kind, l.Master)
			}
		case strings.HasPrefix(l.Name, "zlb-"):
			if !bridges[l.Name] {
				p.add("%s: leaked bridge %s: no attachment is on it", h.Host, l.Name)
			}
		}
	}
	for _, r := range h.Routes {
		if r.Dev == h.Status.Interface {
			continue
		}
		a, veth := veths[r.Dev]
		switch {
		case !veth && !bridges[r.Dev]:
			p.add("%s: leaked route %s dev %s", h.Host, r.Dst, r.Dev)
		case r.Dst.IsSingleIP() && !slices.ContainsFunc(h.Attachments, func(x api.Attachment) bool {
			return x.Address == r.Dst.Addr().String() && (x.Bridge == r.Dev || x.HostVeth == r.Dev)
		}):
			p.add("%s: leaked host route %s dev %s: no attachment there has the address", h.Host, r.Dst, r.Dev)
		case veth && !r.Dst.IsSingleIP():
			p.add("%s: route %s through %s's veth %s", h.Host, r.Dst, a.Container, r.Dev)
		}
	}
	slices.Sort(ids)
	if !slices.Equal(ids, h.OnDisk) {
		p.add("%s: the state dir holds attachments %v, the node lists %v", h.Host, h.OnDisk, ids)
	}
	if h.Leases >= 0 && h.Leases != len(h.Attachments) {
		p.add("%s: %d leases for %d attachments", h.Host, h.Leases, len(h.Attachments))
	}
}

func endpointKey(service, container, address, node string) string {
	return service + " " + container + " " + address + " " + node
}

func (v MeshView) checkEndpoints(p *problems) {
	var want []string
	for _, h := range v.Hosts {
		for _, a := range h.Attachments {
			want = append(want, endpointKey(a.Service, a.Container, a.Address, a.Node))
		}
	}
	slices.Sort(want)
	for _, h := range v.Hosts {
		var got []string
		for _, s := range h.Services {
			got = append(got, endpointKey(s.Service, s.Container, s.Address, s.Node))
		}
		slices.Sort(got)
		if !slices.Equal(got, want) {
			p.add("%s lists endpoints: missing %v, extra %v", h.Host, minus(want, got), minus(got, want))
		}
	}
}

// minus returns the elements of a (sorted) that b (sorted) lacks, counting
// repeats.
func minus(a, b []string) []string {
	var out []string
	for _, x := range a {
		if i, ok := slices.BinarySearch(b, x); ok {
			b = slices.Delete(slices.Clone(b), i, i+1)
			continue
		}
		out = append(out, x)
	}
	return out
}

func (v MeshView) checkContainers(p *problems) {
	if v.Containers == nil {
		return
	}
	type where struct {
		host string
		a    api.Attachment
	}
	at := map[string][]where{}
	for _, h := range v.Hosts {
		for _, a := range h.Attachments {
			at[a.Container] = append(at[a.Container], where{h.Host, a})
		}
	}
	expected := map[string]bool{}
	for _, c := range v.Containers {
		expected[c.ID] = true
		ws := at[c.ID]
		if len(ws) != 1 {
			p.add("container %s is attached %d times", c.ID, len(ws))
			continue
		}
		w := ws[0]
		if w.host != c.Host || w.a.Service != c.Service {
			p.add("container %s is attached on %s to %q, want %s and %q", c.ID, w.host, w.a.Service, c.Host, c.Service)
		}
		if c.Err != nil {
			p.add("container %s: %v", c.ID, c.Err)
			continue
		}
		want := []string{w.a.Address}
		if w.a.Address6 != "" {
			want = append(want, w.a.Address6)
		}
		var got []string
		for _, a := range c.Addrs {
			got = append(got, a.String())
		}
		if !slices.Equal(got, want) {
			p.add("container %s holds %v, its attachment says %v", c.ID, c.Addrs, want)
		}
	}
	for id, ws := range at {
		if !expected[id] {
			p.add("unexpected attachment %s on %s", id, ws[0].host)
		}
	}
}

func containsAddr(ps []netip.Prefix, a netip.Addr) bool {
	return slices.ContainsFunc(ps, func(p netip.Prefix) bool { return p.Contains(a) })
}

// addrRange is an inclusive range of addresses of one family.
type addrRange struct{ from, to netip.Addr }

// lastAddr is the last address of p.
func lastAddr(p netip.Prefix) netip.Addr {
	p = p.Masked()
	b := p.Addr().AsSlice()
	for i := range b {
		bits := max(0, min(8, p.Bits()-8*i)) // prefix bits in this byte
		b[i] |= byte(0xff >> bits)
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}

// ranges turns prefixes into sorted, merged ranges: two sets of prefixes
// cover the same addresses exactly when their ranges are equal.
func ranges(ps []netip.Prefix) []addrRange {
	rs := make([]addrRange, 0, len(ps))
	for _, p := range ps {
		if p.IsValid() {
			rs = append(rs, addrRange{p.Masked().Addr(), lastAddr(p)})
		}
	}
	slices.SortFunc(rs, func(a, b addrRange) int { return a.from.Compare(b.from) })
	var out []addrRange
	for _, r := range rs {
		if n := len(out); n > 0 {
			last := &out[n-1]
			if last.to.Is4() == r.from.Is4() && (r.from.Compare(last.to) <= 0 || r.from == last.to.Next()) {
				if r.to.Compare(last.to) > 0 {
					last.to = r.to
				}
				continue
			}
		}
		out = append(out, r)
	}
	return out
}

// covers reports whether every address of b is in a.
func covers(a, b []netip.Prefix) bool {
	ra := ranges(a)
	for _, r := range ranges(b) {
		if !slices.ContainsFunc(ra, func(x addrRange) bool {
			return x.from.Is4() == r.from.Is4() && x.from.Compare(r.from) <= 0 && r.to.Compare(x.to) <= 0
		}) {
			return false
		}
	}
	return true
}

// sameAddrs reports whether a and b cover the same addresses.
func sameAddrs(a, b []netip.Prefix) bool { return slices.Equal(ranges(a), ranges(b)) }
