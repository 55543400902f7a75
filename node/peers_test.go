package node

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/zlmesh/zlmesh/ipam"
	"github.com/zlmesh/zlmesh/mesh"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

func mustKey(t *testing.T) wgtypes.Key {
	t.Helper()
	k, err := wgtypes.GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	return k.PublicKey()
}

func member(name string, k wgtypes.Key, state mesh.MemberState, first string) mesh.Member {
	p := netip.MustParsePrefix(first)
	return mesh.Member{
		Name:  name,
		State: state,
		Meta: mesh.Meta{
			PublicKey:  k.String(),
			Endpoint:   "192.0.2.1:51820",
			FirstBlock: first,
			OverlayIP:  p.Addr().Next().String(),
		},
	}
}

// held returns holders: block → a claim of node k, for each block.
func held(h map[netip.Prefix]ipam.Claim, k wgtypes.Key, blocks ...string) map[netip.Prefix]ipam.Claim {
	if h == nil {
		h = map[netip.Prefix]ipam.Claim{}
	}
	for _, b := range blocks {
		h[netip.MustParsePrefix(b)] = ipam.Claim{Node: k.String(), Block: netip.MustParsePrefix(b)}
	}
	return h
}

func TestDesiredPeers(t *testing.T) {
	self, a, b, c := mustKey(t), mustKey(t), mustKey(t), mustKey(t)
	tests := []struct {
		name    string
		members []mesh.Member
		holders map[netip.Prefix]ipam.Claim
		want    map[string][]string // peer name → allowed IPs
	}{
		{
			name: "alive and suspect peers, not self, not dead or left",
			members: []mesh.Member{
				{Name: "self", Self: true, State: mesh.StateAlive, Meta: mesh.Meta{PublicKey: self.String()}},
				member("a", a, mesh.StateAlive, "10.200.1.0/26"),
				member("b", b, mesh.StateSuspect, "10.200.2.0/26"),
				member("c", c, mesh.StateDead, "10.200.3.0/26"),
				member("d", mustKey(t), mesh.StateLeft, "10.200.4.0/26"),
			},
			holders: held(held(held(nil, a, "10.200.1.0/26"), b, "10.200.2.0/26"), c, "10.200.3.0/26"),
			want: map[string][]string{
				"a": {"10.200.1.0/26"},
				"b": {"10.200.2.0/26"},
			},
		},
		{
			name: "a peer's blocks, adjacent ones coalesced, and its overlay address while its claim is not known",
			members: []mesh.Member{
				member("a", a, mesh.StateAlive, "10.200.1.0/26"),
				member("b", b, mesh.StateAlive, "10.200.2.0/26"),
			},
			holders: held(nil, a, "10.200.1.0/26", "10.200.1.64/26", "10.200.1.128/26", "10.200.9.0/26"),
			want: map[string][]string{
				"a": {"10.200.1.0/25", "10.200.1.128/26", "10.200.9.0/26"},
				"b": {"10.200.2.1/32"},
			},
		},
		{
			name: "a conflicting block goes to its holder only; the loser keeps its other blocks",
			members: []mesh.Member{
				member("a", a, mesh.StateAlive, "10.200.1.0/26"),
				member("b", b, mesh.StateAlive, "10.200.5.0/26"),
			},
			holders: held(held(nil, b, "10.200.1.64/26", "10.200.5.0/26"), a, "10.200.1.0/26"),
			want: map[string][]string{
				"a": {"10.200.1.0/26"},
				"b": {"10.200.1.64/26", "10.200.5.0/26"},
			},
		},
		{
			name: "the loser of its first block, sharing its overlay address with the holder, gets nothing for it",
			members: []mesh.Member{
				member("a", a, mesh.StateAlive, "10.200.1.0/26"),
				member("b", b, mesh.StateAlive, "10.200.1.0/26"),
			},
			holders: held(nil, b, "10.200.1.0/26"),
			want: map[string][]string{
				"a": nil,
				"b": {"10.200.1.0/26"},
			},
		},
		{
			name: "two announce one overlay address before any claim is known: one prefix, one peer",
			members: []mesh.Member{
				member("a", a, mesh.StateAlive, "10.200.1.0/26"),
				member("b", b, mesh.StateAlive, "10.200.1.0/26"),
			},
			want: map[string][]string{
				"a": {"10.200.1.1/32"},
				"b": nil,
			},
		},
		{
			name: "one key under two names: the alive one",
			members: []mesh.Member{
				member("old", a, mesh.StateSuspect, "10.200.1.0/26"),
				member("new", a, mesh.StateAlive, "10.200.1.0/26"),
			},
			holders: held(nil, a, "10.200.1.0/26"),
			want:    map[string][]string{"new": {"10.200.1.0/26"}},
		},
		{
			name: "meta without overlay address or with a bad key is skipped",
			members: []mesh.Member{
				{Name: "nooverlay", State: mesh.StateAlive, Meta: mesh.Meta{PublicKey: a.String(), Endpoint: "192.0.2.1:51820"}},
				{Name: "badkey", State: mesh.StateAlive, Meta: mesh.Meta{PublicKey: "xx", Endpoint: "192.0.2.1:51820", FirstBlock: "10.200.9.0/26", OverlayIP: "10.200.9.1"}},
			},
			want: map[string][]string{},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := desiredPeers(self, tt.members, tt.holders, nil)
			if len(got) != len(tt.want) {
				t.Fatalf("got %d peers %+v, want %d", len(got), got, len(tt.want))
			}
			for _, p := range got {
				var ips []string
				for _, a := range p.AllowedIPs {
					ips = append(ips, a.String())
				}
				if strings.Join(ips, ",") != strings.Join(tt.want[p.Name], ",") {
					t.Errorf("peer %s: allowed %v, want %v", p.Name, ips, tt.want[p.Name])
				}
			}
		})
	}
}

func TestUAPIPeerDiff(t *testing.T) {
	a, b := mustKey(t), mustKey(t)
	pa := wgPeer{Name: "a", Key: a, Endpoint: netip.MustParseAddrPort("192.0.2.11:51820"),
		AllowedIPs: []netip.Prefix{netip.MustParsePrefix("10.200.1.0/24")}, Keepalive: 25}
	pb := wgPeer{Name: "b", Key: b, Endpoint: netip.MustParseAddrPort("192.0.2.12:51820"),
		AllowedIPs: []netip.Prefix{netip.MustParsePrefix("10.200.2.0/24")}, Keepalive: 25}
	quiet := pa
	quiet.Keepalive = 0
	moved := pa
	moved.AllowedIPs = []netip.Prefix{netip.MustParsePrefix("10.200.7.0/24")}
	roamed := pa
	roamed.Endpoint = netip.MustParseAddrPort("192.0.2.99:51820")
	onDevice := func(ps ...wgPeer) map[string]*devPeer {
		m := map[string]*devPeer{}
		for _, p := range ps {
			d := &devPeer{Endpoint: "198.51.100.7:4444", Keepalive: p.Keepalive} // roamed: never reset unless announced
			for _, a := range p.AllowedIPs {
				d.AllowedIPs = append(d.AllowedIPs, a.String())
			}
			m[p.Key.String()] = d
		}
		return m
	}
	set := map[wgtypes.Key]netip.AddrPort{a: pa.Endpoint, b: pb.Endpoint}
	tests := []struct {
		name     string
		dev      map[string]*devPeer
		want     []wgPeer
		contains []string
		absent   []string
		empty    bool
	}{
		{name: "device matches, nothing is sent", dev: onDevice(pa, pb), want: []wgPeer{pa, pb}, empty: true},
		{name: "new peer", dev: onDevice(), want: []wgPeer{pa}, contains: []string{"endpoint=192.0.2.11:51820", "replace_allowed_ips=true", "allowed_ip=10.200.1.0/24", "persistent_keepalive_interval=25"}},
		{name: "peer gone", dev: onDevice(pa, pb), want: []wgPeer{pa}, contains: []string{hexKey(b) + "\nremove=true"}},
		{name: "renumbered peer keeps its endpoint", dev: onDevice(pa), want: []wgPeer{moved}, contains: []string{"allowed_ip=10.200.7.0/24"}, absent: []string{"endpoint="}},
		{name: "announced endpoint changed", dev: onDevice(pa), want: []wgPeer{roamed}, contains: []string{"endpoint=192.0.2.99:51820"}, absent: []string{"allowed_ip"}},
		{name: "device lost an allowed IP (drift) is repaired", dev: onDevice(wgPeer{Key: a, Keepalive: 25}), want: []wgPeer{pa}, contains: []string{"allowed_ip=10.200.1.0/24"}},
		{name: "new peer with keepalive off (the other side starts the handshake)", dev: onDevice(), want: []wgPeer{quiet}, contains: []string{"persistent_keepalive_interval=0", "allowed_ip=10.200.1.0/24"}},
		{name: "keepalive turned on later", dev: onDevice(quiet), want: []wgPeer{pa}, contains: []string{"persistent_keepalive_interval=25"}, absent: []string{"allowed_ip", "endpoint="}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := uapiPeerDiff(tt.dev, tt.want, set)
			if tt.empty != (got == "") {
				t.Fatalf("got %q, want empty=%v", got, tt.empty)
			}
			for _, c := range tt.contains {
				if !strings.Contains(got, c) {
					t.Errorf("missing %q in\n%s", c, got)
				}
			}
			for _, c := range tt.absent {
				if strings.Contains(got, c) {
					t.Errorf("unexpected %q in\n%s", c, got)
				}
			}
		})
	}
}

func TestParseUAPIPeers(t *testing.T) {
	k := mustKey(t)
	text := "private_key=00\nlisten_port=51820\npublic_key=" + hexKey(k) + "\nendpoint=192.0.2.12:51820\n" +
		"last_handshake_time_sec=1700000000\nlast_handshake_time_nsec=5\ntx_bytes=10\nrx_bytes=20\n" +
		"persistent_keepalive_interval=25\nallowed_ip=10.200.2.0/24\nallowed_ip=10.200.2.1/32\n"
	got := parseUAPIPeers(text)
	p, ok := got[k.String()]
	if !ok {
		t.Fatalf("peer missing: %+v", got)
	}
	if p.Endpoint != "192.0.2.12:51820" || p.TxBytes != 10 || p.RxBytes != 20 || len(p.AllowedIPs) != 2 ||
		!p.LastHandshake.Equal(time.Unix(1700000000, 5)) {
		t.Errorf("parsed %+v", p)
	}
}

func hexKey(k wgtypes.Key) string {
	const digits = "0123456789abcdef"
	var b strings.Builder
	for _, c := range k {
		b.WriteByte(digits[c>>4])
		b.WriteByte(digits[c&15])
	}
	return b.String()
}

// Whatever the mesh says, no prefix goes to two peers (WireGuard would
// silently move it from one to the other).
func TestDesiredPeersNeverShareAPrefix(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	keys := make([]wgtypes.Key, 8)
	for i := range keys {
		keys[i] = mustKey(t)
	}
	for round := 0; round < 2000; round++ {
		var members []mesh.Member
		holders := map[netip.Prefix]ipam.Claim{}
		for i, k := range keys {
			subnet := fmt.Sprintf("10.200.%d.0/24", rng.IntN(4))
			m := member(fmt.Sprintf("n%d", i), k, []mesh.MemberState{mesh.StateAlive, mesh.StateSuspect, mesh.StateDead}[rng.IntN(3)], subnet)
			members = append(members, m)
			if rng.IntN(2) == 0 {
				holders[netip.MustParsePrefix(subnet)] = ipam.Claim{Node: k.String()}
			}
		}
		var granted []netip.Prefix
		for _, p := range desiredPeers(mustKey(t), members, holders, nil) {
			for _, a := range p.AllowedIPs {
				for _, g := range granted {
					if g.Overlaps(a) {
						t.Fatalf("round %d: %s of %s overlaps %s given to another peer", round, a, p.Name, g)
					}
				}
			}
			granted = append(granted, p.AllowedIPs...)
		}
	}
}

// With IPv6 on, a peer of the same cluster IPv6 prefix gets the twins of
// its blocks and overlay address beside them; one with IPv6 off or (never
// reached: samePlan drops it first) another prefix stays IPv4 only.
func TestDesiredPeersDualStack(t *testing.T) {
	self, a, b, c := mustKey(t), mustKey(t), mustKey(t), mustKey(t)
	cluster6 := netip.MustParsePrefix("fd12:3456:789a::/48")
	twins, err := ipam.NewTwins(ipam.DefaultPool(), cluster6)
	if err != nil {
		t.Fatal(err)
	}
	dual := member("dual", a, mesh.StateAlive, "10.200.1.0/26")
	dual.Meta.Cluster6 = cluster6.String()
	v4only := member("v4only", b, mesh.StateAlive, "10.200.2.0/26")
	fresh := member("fresh", c, mesh.StateAlive, "10.200.3.0/26") // no claim known yet
	fresh.Meta.Cluster6 = cluster6.String()
	holders := held(held(nil, a, "10.200.1.0/26", "10.200.1.64/26"), b, "10.200.2.0/26")
	want := map[string]string{
		"dual":   "10.200.1.0/25,fd12:3456:789a:4::/63",
		"v4only": "10.200.2.0/26",
		"fresh":  "10.200.3.1/32,fd12:3456:789a:c::1/128",
	}
	got := desiredPeers(self, []mesh.Member{dual, v4only, fresh}, holders, twins)
	if len(got) != len(want) {
		t.Fatalf("got %d peers %+v, want %d", len(got), got, len(want))
	}
	for _, p := range got {
		var ips []string
		for _, a := range p.AllowedIPs {
			ips = append(ips, a.String())
		}
		if strings.Join(ips, ",") != want[p.Name] {
			t.Errorf("peer %s: allowed %v, want %s", p.Name, ips, want[p.Name])
		}
	}
}

// Two nodes adding each other at once must not both start a handshake: the
// one with the lower public key turns keepalive on at once, the other only
// after handshakeSettle.
func TestKeepaliveRoles(t *testing.T) {
	k1, _ := wgtypes.GeneratePrivateKey()
	k2, _ := wgtypes.GeneratePrivateKey()
	lo, hi := k1, k2
	if p1, p2 := k1.PublicKey(), k2.PublicKey(); bytes.Compare(p1[:], p2[:]) > 0 {
		lo, hi = k2, k1
	}
	now := time.Now()
	added := map[wgtypes.Key]time.Time{}
	// lo adds hi: keepalive at once.
	w := []wgPeer{{Key: hi.PublicKey()}}
	keepaliveRoles(lo, w, map[string]*devPeer{}, added, now, 25*time.Second)
	if w[0].Keepalive != 25 {
		t.Errorf("lower key adding a peer: keepalive %d, want 25", w[0].Keepalive)
	}
	// hi adds lo: keepalive off, then on after the settle time.
	added = map[wgtypes.Key]time.Time{}
	w = []wgPeer{{Key: lo.PublicKey()}}
	keepaliveRoles(hi, w, map[string]*devPeer{}, added, now, 25*time.Second)
	if w[0].Keepalive != 0 {
		t.Errorf("higher key adding a peer: keepalive %d, want 0", w[0].Keepalive)
	}
	dev := map[string]*devPeer{lo.PublicKey().String(): {}}
	w = []wgPeer{{Key: lo.PublicKey()}}
	keepaliveRoles(hi, w, dev, added, now.Add(handshakeSettle/2), 25*time.Second)
	if w[0].Keepalive != 0 {
		t.Errorf("before the settle time: keepalive %d, want 0", w[0].Keepalive)
	}
	w = []wgPeer{{Key: lo.PublicKey()}}
	keepaliveRoles(hi, w, dev, added, now.Add(handshakeSettle), 25*time.Second)
	if w[0].Keepalive != 25 {
		t.Errorf("after the settle time: keepalive %d, want 25", w[0].Keepalive)
	}
	// A peer no longer wanted is forgotten.
	keepaliveRoles(hi, nil, dev, added, now, 25*time.Second)
	if len(added) != 0 {
		t.Errorf("added still holds %v", added)
	}
}
