package node

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/zlmesh/zlmesh/ipam"
	"github.com/zlmesh/zlmesh/mesh"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// wgPeer is one WireGuard peer as the mesh view wants it.
type wgPeer struct {
	Name     string
	Key      wgtypes.Key
	Endpoint netip.AddrPort
	Overlay  netip.Addr
	Overlay6 netip.Addr // the IPv6 twin of Overlay; zero when either side runs IPv4 only
	// Blocks are the blocks the peer holds by the claim rule, coalesced
	// (adjacent blocks merged), then their IPv6 twins: the routes through
	// the overlay to it.
	Blocks     []netip.Prefix
	AllowedIPs []netip.Prefix // Blocks and, unless they cover it, the overlay address; sorted
	// Keepalive is the persistent keepalive to set, in seconds; see
	// keepaliveRoles.
	Keepalive int
}

// desiredPeers turns the mesh view into WireGuard peers: every alive or
// suspect member other than this node whose meta carries a key, an endpoint
// and an overlay address. A suspect member stays (suspicion is often a lost
// probe; the failure detector decides). When two members carry one public
// key (a node that came back under a new name), the alive one wins, then
// the lexically first name.
//
// A prefix goes to at most one peer, since WireGuard routes each prefix to
// one peer and assigning it to a second one silently takes it from the first:
// a block goes only to the node that holds it by the claim rule (holders;
// during a conflict the loser gets nothing for it until it has renumbered),
// and an overlay address only when no other peer's block or address covers
// it.
//
// With twins (IPv6 on), a peer that gossips the same cluster IPv6 prefix
// also gets the IPv6 twins of its blocks and of its overlay address; a peer
// with IPv6 off stays IPv4 only.
func desiredPeers(self wgtypes.Key, members []mesh.Member, holders map[netip.Prefix]ipam.Claim, twins *ipam.Twins) []wgPeer {
	byKey := map[wgtypes.Key]mesh.Member{}
	for _, m := range members {
		if m.Self || (m.State != mesh.StateAlive && m.State != mesh.StateSuspect) {
			continue
		}
		k, err := wgtypes.ParseKey(m.Meta.PublicKey)
		if err != nil || k == self {
			continue
		}
		if prev, ok := byKey[k]; ok {
			if prev.State == mesh.StateAlive && m.State != mesh.StateAlive {
				continue
			}
			if prev.State == m.State && prev.Name < m.Name {
				continue
			}
		}
		byKey[k] = m
	}
	blocks := map[string][]netip.Prefix{}
	for b, c := range holders {
		blocks[c.Node] = append(blocks[c.Node], b)
	}
	var out []wgPeer
	var granted []netip.Prefix
	for k, m := range byKey {
		ep, err := netip.ParseAddrPort(m.Meta.Endpoint)
		if err != nil {
			continue
		}
		overlay, err := netip.ParseAddr(m.Meta.OverlayIP)
		if err != nil {
			continue
		}
		own := ipam.Coalesce(blocks[k.String()])
		p := wgPeer{Name: m.Name, Key: k, Endpoint: ep, Overlay: overlay}
		if twins != nil && m.Meta.Cluster6 == twins.Cluster6().String() {
			p.Overlay6, _ = twins.Addr(overlay)
			own = append(own, twins.Prefixes(own)...)
		}
		p.Blocks, p.AllowedIPs = own, slices.Clone(own)
		granted = append(granted, own...)
		out = append(out, p)
	}
	slices.SortFunc(out, func(a, b wgPeer) int { return strings.Compare(a.Name, b.Name) })
	covered := func(p netip.Prefix) bool {
		for _, g := range granted {
			if g.Overlaps(p) {
				return true
			}
		}
		return false
	}
	for i := range out {
		p := &out[i]
		for _, a := range []netip.Addr{p.Overlay, p.Overlay6} {
			own := netip.PrefixFrom(a, a.BitLen())
			if a.IsValid() && !covered(own) {
				p.AllowedIPs = append(p.AllowedIPs, own)
				granted = append(granted, own)
			}
		}
		slices.SortFunc(p.AllowedIPs, comparePrefix)
	}
	return out
}

func comparePrefix(a, b netip.Prefix) int {
	if c := a.Addr().Compare(b.Addr()); c != 0 {
		return c
	}
	return a.Bits() - b.Bits()
}

// handshakeSettle is how long the node with the higher public key waits,
// after adding a peer, before turning its persistent keepalive on: far
// longer than a handshake round trip, so it never collides with the other
// side's initiation, and short, since that initiation is lost when it
// arrives before this node added the peer (WireGuard retries it only 5 s
// later).
const handshakeSettle = 300 * time.Millisecond

// keepaliveRoles sets each peer's Keepalive so that two nodes adding each
// other at the same moment do not both start a handshake. Turning a peer's
// persistent keepalive on sends a keepalive at once, which starts a
// handshake; when both sides do that simultaneously, each answers the
// other's initiation, which throws away its own, and both are left with a
// half-made session until WireGuard retries 5 s later. So only the node
// with the lower public key turns keepalive on when it adds a peer; the
// other adds the peer with keepalive off (it answers the handshake, and its
// own traffic still starts one on demand) and turns it on handshakeSettle
// later. added holds when each peer was added; peers no longer wanted are
// dropped from it. It reports whether a peer is still waiting, so the caller
// comes back after handshakeSettle.
func keepaliveRoles(self wgtypes.Key, want []wgPeer, dev map[string]*devPeer, added map[wgtypes.Key]time.Time, now time.Time, keepalive time.Duration) (waiting bool) {
	pub := self.PublicKey()
	wanted := map[wgtypes.Key]bool{}
	for i := range want {
		p := &want[i]
		wanted[p.Key] = true
		if _, ok := dev[p.Key.String()]; !ok {
			added[p.Key] = now
		}
		if bytes.Compare(pub[:], p.Key[:]) < 0 || now.Sub(added[p.Key]) >= handshakeSettle {
			p.Keepalive = int(keepalive / time.Second)
		} else {
			waiting = true
		}
	}
	for k := range added {
		if !wanted[k] {
			delete(added, k)
		}
	}
	return waiting
}

// uapiPeerDiff renders the WireGuard UAPI "set" text that takes the device,
// as it reports itself (dev, from parseUAPIPeers), to want: removed peers,
// new peers, peers whose AllowedIPs differ, and peers whose announced
// endpoint changed since it was last set (endpoints holds those; a peer's
// current endpoint may differ because WireGuard roams, and that is left
// alone), and peers whose persistent keepalive differs from Keepalive.
// Diffing against the device rather than a cache of what was sent
// keeps the device right even when something else changed it. An unchanged
// view sends nothing (an empty string), so an established session is never
// disturbed.
func uapiPeerDiff(dev map[string]*devPeer, want []wgPeer, endpoints map[wgtypes.Key]netip.AddrPort) string {
	var b strings.Builder
	wanted := map[string]bool{}
	for _, p := range want {
		wanted[p.Key.String()] = true
	}
	var gone []string
	for k := range dev {
		if !wanted[k] {
			gone = append(gone, k)
		}
	}
	slices.Sort(gone)
	for _, k := range gone {
		raw, _ := base64.StdEncoding.DecodeString(k)
		fmt.Fprintf(&b, "public_key=%s\nremove=true\n", hex.EncodeToString(raw))
	}
	for _, p := range want {
		d, exists := dev[p.Key.String()]
		last, known := endpoints[p.Key]
		newEP := !exists || !known || last != p.Endpoint
		sameIPs := exists && sameAllowedIPs(d.AllowedIPs, p.AllowedIPs)
		sameKA := exists && d.Keepalive == p.Keepalive
		if exists && sameIPs && !newEP && sameKA {
			continue
		}
		fmt.Fprintf(&b, "public_key=%s\n", hex.EncodeToString(p.Key[:]))
		if newEP {
			fmt.Fprintf(&b, "endpoint=%s\n", p.Endpoint)
		}
		if !sameKA {
			fmt.Fprintf(&b, "persistent_keepalive_interval=%d\n", p.Keepalive)
		}
		if !sameIPs {
			b.WriteString("replace_allowed_ips=true\n")
			for _, a := range p.AllowedIPs {
				fmt.Fprintf(&b, "allowed_ip=%s\n", a)
			}
		}
	}
	return b.String()
}

// sameAllowedIPs compares the device's AllowedIPs (strings, any order) with
// the wanted ones.
func sameAllowedIPs(have []string, want []netip.Prefix) bool {
	if len(have) != len(want) {
		return false
	}
	for _, h := range have {
		p, err := netip.ParsePrefix(h)
		if err != nil || !slices.Contains(want, p) {
			return false
		}
	}
	return true
}

// devPeer is a peer as the WireGuard device reports it (UAPI "get").
type devPeer struct {
	Endpoint      string
	LastHandshake time.Time
	RxBytes       int64
	TxBytes       int64
	AllowedIPs    []string
	Keepalive     int // persistent keepalive, seconds
}

// parseUAPIPeers reads the peers out of a UAPI "get" answer, keyed by the
// base64 public key.
func parseUAPIPeers(text string) map[string]*devPeer {
	out := map[string]*devPeer{}
	var cur *devPeer
	var sec, nsec int64
	flush := func() {
		if cur != nil && (sec != 0 || nsec != 0) {
			cur.LastHandshake = time.Unix(sec, nsec).UTC()
		}
		sec, nsec = 0, 0
	}
	sc := bufio.NewScanner(strings.NewReader(text))
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), "=")
		if !ok {
			continue
		}
		switch k {
		case "public_key":
			flush()
			raw, err := hex.DecodeString(v)
			if err != nil || len(raw) != 32 {
				cur = nil
				continue
			}
			cur = &devPeer{}
			out[base64.StdEncoding.EncodeToString(raw)] = cur
		case "endpoint":
			if cur != nil {
				cur.Endpoint = v
			}
		case "last_handshake_time_sec":
			sec, _ = strconv.ParseInt(v, 10, 64)
		case "last_handshake_time_nsec":
			nsec, _ = strconv.ParseInt(v, 10, 64)
		case "rx_bytes":
			if cur != nil {
				cur.RxBytes, _ = strconv.ParseInt(v, 10, 64)
			}
		case "tx_bytes":
			if cur != nil {
				cur.TxBytes, _ = strconv.ParseInt(v, 10, 64)
			}
		case "persistent_keepalive_interval":
			if cur != nil {
				cur.Keepalive, _ = strconv.Atoi(v)
			}
		case "allowed_ip":
			if cur != nil {
				cur.AllowedIPs = append(cur.AllowedIPs, v)
			}
		}
	}
	flush()
	return out
}
