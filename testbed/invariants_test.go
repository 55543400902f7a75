package testbed

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/zlmesh/zlmesh/api"
)

// healthyView is a whole, quiet mesh of three hosts, one container each:
// h<i> holds 10.200.<i>.0/24, overlay .1, container c<i> at .34 on zlb-web.
func healthyView() MeshView {
	const n = 3
	pfx := netip.MustParsePrefix
	v := MeshView{Netns: map[string]bool{}}
	var eps []api.ServiceEndpoint
	for i := 1; i <= n; i++ {
		eps = append(eps, api.ServiceEndpoint{Service: "web", Container: fmt.Sprintf("c%d", i), Address: fmt.Sprintf("10.200.%d.34", i), Node: hostName(i)})
	}
	for i := 1; i <= n; i++ {
		name, id := hostName(i), fmt.Sprintf("c%d", i)
		netns := "/run/netns/x-" + name + "-c"
		h := HostView{
			Host: name, Running: true, Leases: 1,
			Status: api.Status{Name: name, PublicKey: "key" + name, OverlayIP: fmt.Sprintf("10.200.%d.1", i),
				FirstBlock: fmt.Sprintf("10.200.%d.0/24", i), Blocks: []string{fmt.Sprintf("10.200.%d.0/24", i)}, ClusterCIDR: "10.200.0.0/16", Interface: "zl0", Members: n},
			Attachments: []api.Attachment{{Service: "web", Container: id, Netns: netns, Address: fmt.Sprintf("10.200.%d.34", i),
				Prefix: 27, Gateway: fmt.Sprintf("10.200.%d.33", i), Bridge: "zlb-web", HostVeth: "zlv" + id, Node: name}},
			Services: slices.Clone(eps),
			Links: []KernelLink{
				{Name: "zl0", Kind: "tun", Addrs: []netip.Prefix{pfx(fmt.Sprintf("10.200.%d.1/16", i))}},
				{Name: "zlb-web", Kind: "bridge", Addrs: []netip.Prefix{pfx(fmt.Sprintf("10.200.%d.33/27", i))}},
				{Name: "zlv" + id, Kind: "veth", Master: "zlb-web"},
			},
			Routes: []KernelRoute{
				{Dst: pfx("10.200.0.0/16"), Dev: "zl0", Protocol: "kernel"},
				{Dst: pfx(fmt.Sprintf("10.200.%d.32/27", i)), Dev: "zlb-web", Protocol: "kernel"},
			},
			WireGuard: map[string][]netip.Prefix{},
			OnDisk:    []string{id},
		}
		for j := 1; j <= n; j++ {
			if j == i {
				continue
			}
			o := hostName(j)
			h.Peers = append(h.Peers, api.Peer{Name: o, PublicKey: "key" + o, Blocks: []string{fmt.Sprintf("10.200.%d.0/24", j)},
				OverlayIP: fmt.Sprintf("10.200.%d.1", j), State: api.PeerAlive})
			h.WireGuard["key"+o] = []netip.Prefix{pfx(fmt.Sprintf("10.200.%d.0/24", j)), pfx(fmt.Sprintf("10.200.%d.1/32", j))}
			h.Routes = append(h.Routes, KernelRoute{Dst: pfx(fmt.Sprintf("10.200.%d.0/24", j)), Dev: "zl0", Protocol: "90"})
		}
		v.Hosts = append(v.Hosts, h)
		v.Netns[netns] = true
		v.Containers = append(v.Containers, ContainerView{ID: id, Host: name, Service: "web",
			Addrs: []netip.Addr{netip.MustParseAddr(fmt.Sprintf("10.200.%d.34", i))}})
	}
	return v
}

func TestProblemsHealthy(t *testing.T) {
	if p := healthyView().Problems(); len(p) > 0 {
		t.Fatalf("a healthy view has problems:\n%s", strings.Join(p, "\n"))
	}
}

// Each way of breaking the healthy view is found, and named.
func TestProblems(t *testing.T) {
	pfx := netip.MustParsePrefix
	for _, tc := range []struct {
		name   string
		break_ func(v *MeshView)
		want   string // a line of Problems contains it
	}{
		{"not running", func(v *MeshView) { v.Hosts[1].Running = false }, "h2: zlmesh does not run"},
		{"collection error", func(v *MeshView) { v.Hosts[1].Err = fmt.Errorf("boom") }, "h2: boom"},
		{"member count", func(v *MeshView) { v.Hosts[0].Status.Members = 2 }, "h1: 2 members"},
		{"alone", func(v *MeshView) { v.Hosts[0].Status.Alone = true }, "alone true"},
		{"peer dead", func(v *MeshView) { v.Hosts[0].Peers[0].State = api.PeerDead }, "h1 sees h2 dead"},
		{"peer unknown", func(v *MeshView) { v.Hosts[0].Peers = v.Hosts[0].Peers[1:] }, "h1 does not know h2"},
		{"ghost peer", func(v *MeshView) {
			v.Hosts[0].Peers = append(v.Hosts[0].Peers, api.Peer{Name: "h9", State: api.PeerDead})
		}, "peer h9 (dead) that is no host"},
		{"stale blocks of a peer", func(v *MeshView) { v.Hosts[0].Peers[0].Blocks = []string{"10.200.9.0/24"} }, "h1 believes h2 holds [10.200.9.0/24]"},
		{"stale overlay of a peer", func(v *MeshView) { v.Hosts[0].Peers[0].OverlayIP = "10.200.9.1" }, "h1 sees h2 as keyh2 10.200.9.1"},
		{"missing WireGuard peer", func(v *MeshView) { delete(v.Hosts[0].WireGuard, "keyh2") }, "h1: no WireGuard peer for h2"},
		{"foreign WireGuard peer", func(v *MeshView) { v.Hosts[0].WireGuard["keyx"] = nil }, "WireGuard peer keyx is no host"},
		{"WireGuard allows too little", func(v *MeshView) {
			v.Hosts[0].WireGuard["keyh2"] = []netip.Prefix{pfx("10.200.2.1/32")}
		}, "h1: WireGuard peer h2 allows"},
		{"WireGuard allows too much", func(v *MeshView) {
			v.Hosts[0].WireGuard["keyh2"] = append(v.Hosts[0].WireGuard["keyh2"], pfx("10.200.7.0/24"))
		}, "h1: WireGuard peer h2 allows"},
		{"route missing", func(v *MeshView) { v.Hosts[0].Routes = v.Hosts[0].Routes[:2] }, "do not cover the other nodes' blocks"},
		{"stale route", func(v *MeshView) {
			v.Hosts[0].Routes = append(v.Hosts[0].Routes, KernelRoute{Dst: pfx("10.200.9.0/24"), Dev: "zl0", Protocol: "90"})
		}, "reach beyond"},
		{"blocks overlap", func(v *MeshView) {
			v.Hosts[1].Status.Blocks = []string{"10.200.1.0/24"}
			for i := range v.Hosts {
				for j := range v.Hosts[i].Peers {
					if v.Hosts[i].Peers[j].Name == "h2" {
						v.Hosts[i].Peers[j].Blocks = []string{"10.200.1.0/24"}
					}
				}
			}
		}, "blocks overlap: h1 holds 10.200.1.0/24, h2 holds 10.200.1.0/24"},
		{"overlay outside the blocks", func(v *MeshView) { v.Hosts[0].Status.OverlayIP = "10.200.50.1" }, "overlay address 10.200.50.1 is not in its blocks"},
		{"address twice", func(v *MeshView) {
			v.Hosts[1].Attachments[0].Address = "10.200.1.34"
		}, "address 10.200.1.34 given twice: h1/c1 and h2/c2"},
		{"address is a gateway", func(v *MeshView) {
			v.Hosts[0].Attachments[0].Address = "10.200.1.33"
		}, "address 10.200.1.33 given twice"},
		{"address outside the blocks", func(v *MeshView) {
			v.Hosts[0].Attachments[0].Address = "10.200.2.99"
		}, "h1: c1 has 10.200.2.99, outside its node's blocks"},
		{"leaked veth", func(v *MeshView) {
			v.Hosts[0].Links = append(v.Hosts[0].Links, KernelLink{Name: "zlvold", Kind: "veth", Master: "zlb-web"})
		}, "h1: leaked link zlvold"},
		{"leaked bridge", func(v *MeshView) {
			v.Hosts[0].Links = append(v.Hosts[0].Links, KernelLink{Name: "zlb-db", Kind: "bridge"})
		}, "h1: leaked bridge zlb-db"},
		{"leaked route", func(v *MeshView) {
			v.Hosts[0].Routes = append(v.Hosts[0].Routes, KernelRoute{Dst: pfx("10.200.1.64/27"), Dev: "zlb-db", Protocol: "kernel"})
		}, "h1: leaked route 10.200.1.64/27 dev zlb-db"},
		{"leaked host route", func(v *MeshView) {
			v.Hosts[0].Routes = append(v.Hosts[0].Routes, KernelRoute{Dst: pfx("10.200.1.40/32"), Dev: "zlb-web", Protocol: "90"})
		}, "h1: leaked host route 10.200.1.40/32 dev zlb-web"},
		{"veth missing", func(v *MeshView) { v.Hosts[0].Links = v.Hosts[0].Links[:2] }, "h1: c1's host veth zlvc1 is missing"},
		{"veth on another bridge", func(v *MeshView) { v.Hosts[0].Links[2].Master = "" }, `on "", want zlb-web`},
		{"netns gone", func(v *MeshView) { v.Netns["/run/netns/x-h1-c"] = false }, "h1: c1's netns /run/netns/x-h1-c is gone"},
		{"state dir differs", func(v *MeshView) { v.Hosts[0].OnDisk = nil }, "h1: the state dir holds attachments [], the node lists [c1]"},
		{"lease leaked", func(v *MeshView) { v.Hosts[0].Leases = 2 }, "h1: 2 leases for 1 attachments"},
		{"endpoint missing", func(v *MeshView) { v.Hosts[2].Services = v.Hosts[2].Services[1:] }, "h3 lists endpoints: missing [web c1 10.200.1.34 h1]"},
		{"endpoint stale", func(v *MeshView) { v.Hosts[2].Services[0].Address = "10.200.1.35" }, "extra [web c1 10.200.1.35 h1]"},
		{"container lost", func(v *MeshView) { v.Hosts[0].Attachments = nil; v.Hosts[0].Leases = 0; v.Hosts[0].OnDisk = nil }, "container c1 is attached 0 times"},
		{"container on another service", func(v *MeshView) { v.Containers[0].Service = "db" }, `want h1 and "db"`},
		{"container holds another address", func(v *MeshView) {
			v.Containers[0].Addrs = []netip.Addr{netip.MustParseAddr("10.200.1.99")}
		}, "container c1 holds [10.200.1.99], its attachment says [10.200.1.34]"},
		{"unexpected attachment", func(v *MeshView) { v.Containers = v.Containers[1:] }, "unexpected attachment c1 on h1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := healthyView()
			tc.break_(&v)
			p := v.Problems()
			if !slices.ContainsFunc(p, func(s string) bool { return strings.Contains(s, tc.want) }) {
				t.Fatalf("problems do not say %q:\n%s", tc.want, strings.Join(p, "\n"))
			}
		})
	}
}

// Coalesced allowed IPs and routes (the blocks model's) are as good as the
// blocks one by one.
func TestProblemsCoalesced(t *testing.T) {
	v := healthyView()
	v.Hosts[0].WireGuard["keyh2"] = []netip.Prefix{netip.MustParsePrefix("10.200.2.0/25"), netip.MustParsePrefix("10.200.2.128/25")}
	if p := v.Problems(); len(p) > 0 {
		t.Fatalf("split allowed IPs flagged:\n%s", strings.Join(p, "\n"))
	}
}

func TestRanges(t *testing.T) {
	p := func(ss ...string) []netip.Prefix {
		var out []netip.Prefix
		for _, s := range ss {
			out = append(out, netip.MustParsePrefix(s))
		}
		return out
	}
	for _, tc := range []struct {
		a, b        []netip.Prefix
		same, aHasB bool
	}{
		{p("10.0.0.0/24"), p("10.0.0.0/25", "10.0.0.128/25"), true, true},
		{p("10.0.0.0/24"), p("10.0.0.0/24", "10.0.0.1/32"), true, true},
		{p("10.0.0.0/24"), p("10.0.1.0/24"), false, false},
		{p("10.0.0.0/23"), p("10.0.1.0/24"), false, true},
		{p("10.0.0.0/24", "10.0.2.0/24"), p("10.0.0.0/22"), false, false},
		{p("10.0.0.0/24", "10.0.1.0/24"), p("10.0.0.0/23"), true, true},
		{p("255.255.255.0/24"), p("255.255.255.255/32"), false, true},
		{p("fd00::/64"), p("fd00::1/128"), false, true},
		{p("0.0.0.0/0"), p("::/0"), false, false},
		{nil, nil, true, true},
	} {
		if got := sameAddrs(tc.a, tc.b); got != tc.same {
			t.Errorf("sameAddrs(%v, %v) = %v", tc.a, tc.b, got)
		}
		if got := covers(tc.a, tc.b); got != tc.aHasB {
			t.Errorf("covers(%v, %v) = %v", tc.a, tc.b, got)
		}
	}
	if got := lastAddr(netip.MustParsePrefix("10.200.1.32/27")); got.String() != "10.200.1.63" {
		t.Errorf("lastAddr = %s", got)
	}
}

func TestParseKernel(t *testing.T) {
	links, err := parseIPAddr([]byte(`[{"ifname":"lo","addr_info":[{"local":"127.0.0.1","prefixlen":8,"scope":"host"}]},
{"ifname":"zlb-web","linkinfo":{"info_kind":"bridge"},"addr_info":[{"local":"10.200.1.33","prefixlen":27,"scope":"global"},{"local":"fe80::1","prefixlen":64,"scope":"link"}]},
{"ifname":"zlvabc","master":"zlb-web","linkinfo":{"info_kind":"veth"},"addr_info":[]}]`))
	if err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprint(links); got != "[{lo   []} {zlb-web bridge  [10.200.1.33/27]} {zlvabc veth zlb-web []}]" {
		t.Errorf("links %s", got)
	}
	routes, err := parseIPRoute([]byte(`[{"dst":"default","gateway":"192.0.2.1","dev":"eth0"},
{"dst":"10.200.0.0/16","dev":"zl0","protocol":"kernel"},{"dst":"10.200.85.0/24","dev":"zl0","protocol":"90"},
{"dst":"10.200.1.7","dev":"zlb-web","protocol":"90"}]`))
	if err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprint(routes); got != "[{10.200.0.0/16 zl0 kernel} {10.200.85.0/24 zl0 90} {10.200.1.7/32 zlb-web 90}]" {
		t.Errorf("routes %s", got)
	}
	wg, err := parseWGAllowedIPs([]byte("k1=\t10.200.85.0/24 10.200.85.1/32\nk2=\t(none)\n"))
	if err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprint(wg); got != "map[k1=:[10.200.85.0/24 10.200.85.1/32] k2=:[]]" {
		t.Errorf("wg %s", got)
	}
	ids, err := foldAttachments([]byte(`{"attachments":{"a":{},"b":{}}}`),
		[][]byte{[]byte(`{"put":{"spec":{"Container":"c"}}}`), []byte(`{"del":"a"}`)})
	if err != nil || fmt.Sprint(ids) != "[b c]" {
		t.Errorf("attachments on disk %v %v", ids, err)
	}
}

// The routed /32 model: /26 blocks, every bridge holding the same
// link-local gateway, one host route per container; healthy as it is, and a
// host route left behind by a detached container is a leak.
func TestProblemsRoutedModel(t *testing.T) {
	pfx := netip.MustParsePrefix
	v := healthyView()
	for i := range v.Hosts {
		h := &v.Hosts[i]
		n := i + 1
		h.Status.FirstBlock = fmt.Sprintf("10.200.%d.0/26", n)
		h.Status.Blocks = []string{h.Status.FirstBlock}
		h.Links[0].Addrs = []netip.Prefix{pfx(fmt.Sprintf("10.200.%d.1/14", n))}
		h.Links[1].Addrs = []netip.Prefix{pfx("169.254.1.1/32")}
		h.Routes = []KernelRoute{
			{Dst: pfx("10.200.0.0/14"), Dev: "zl0", Protocol: "kernel"},
			{Dst: pfx(fmt.Sprintf("10.200.%d.34/32", n)), Dev: "zlb-web", Protocol: "122"},
		}
		for j := range h.Peers {
			o := h.Peers[j].Name
			blk := fmt.Sprintf("10.200.%s.0/26", o[1:])
			h.Peers[j].Blocks = []string{blk}
			h.WireGuard["key"+o] = []netip.Prefix{pfx(blk)}
			h.Routes = append(h.Routes, KernelRoute{Dst: pfx(blk), Dev: "zl0", Protocol: "90"})
		}
	}
	if p := v.Problems(); len(p) > 0 {
		t.Fatalf("a healthy routed view has problems:\n%s", strings.Join(p, "\n"))
	}
	// A second block with a container in it is fine, an empty one a leak
	// once the nodes are expected to release it.
	v.Released = true
	grow := func(h *HostView, block string) {
		h.Status.Blocks = append(h.Status.Blocks, block)
		for i := range v.Hosts {
			for j := range v.Hosts[i].Peers {
				if p := &v.Hosts[i].Peers[j]; p.Name == h.Host {
					p.Blocks = append(p.Blocks, block)
					v.Hosts[i].WireGuard["key"+h.Host] = append(v.Hosts[i].WireGuard["key"+h.Host], pfx(block))
					v.Hosts[i].Routes = append(v.Hosts[i].Routes, KernelRoute{Dst: pfx(block), Dev: "zl0", Protocol: "90"})
				}
			}
		}
	}
	grow(&v.Hosts[0], "10.200.1.64/26")
	v.Hosts[0].Attachments[0].Address = "10.200.1.70"
	v.Hosts[0].Routes[1].Dst = pfx("10.200.1.70/32")
	v.Containers[0].Addrs = []netip.Addr{netip.MustParseAddr("10.200.1.70")}
	for i := range v.Hosts {
		v.Hosts[i].Services[0].Address = "10.200.1.70"
	}
	grow(&v.Hosts[1], "10.200.2.64/26")
	p := v.Problems()
	if len(p) != 1 || !strings.Contains(p[0], "h2: leaked block 10.200.2.64/26") {
		t.Fatalf("want only h2's empty block, got:\n%s", strings.Join(p, "\n"))
	}
	v.Hosts[1].Status.Blocks = v.Hosts[1].Status.Blocks[:1]
	v.Hosts[0].Routes = append(v.Hosts[0].Routes, KernelRoute{Dst: pfx("10.200.1.40/32"), Dev: "zlb-web", Protocol: "122"})
	p = v.Problems()
	if !slices.ContainsFunc(p, func(s string) bool { return strings.Contains(s, "leaked host route 10.200.1.40/32 dev zlb-web") }) {
		t.Fatalf("a stale host route is not found:\n%s", strings.Join(p, "\n"))
	}
}
