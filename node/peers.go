package node

import (
	"bufio"
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
	Name       string
	Key        wgtypes.Key
	Endpoint   netip.AddrPort
	Subnet     netip.Prefix
	Overlay    netip.Addr
	AllowedIPs []netip.Prefix // the node subnet and the overlay address, sorted
}

func (p wgPeer) equal(o wgPeer) bool {
	return p.Key == o.Key && p.Endpoint == o.Endpoint && slices.Equal(p.AllowedIPs, o.AllowedIPs)
}

// desiredPeers turns the mesh view into WireGuard peers: every alive or
// suspect member other than this node whose meta carries a key, an endpoint
// and a subnet. A suspect member stays (suspicion is often a lost probe; the
// failure detector decides). A subnet goes only to the node that holds it by
// the claim rule, so during a conflict two peers never fight over one
// AllowedIPs entry; a peer that holds no subnet still gets its overlay
// address. When two members carry one public key (a node that came back
// under a new name), the alive one wins, then the lexically first name.
func desiredPeers(self wgtypes.Key, members []mesh.Member, holders map[netip.Prefix]ipam.Claim) []wgPeer {
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
	var out []wgPeer
	for k, m := range byKey {
		ep, err := netip.ParseAddrPort(m.Meta.Endpoint)
		if err != nil {
			continue
		}
		subnet, serr := netip.ParsePrefix(m.Meta.NodeSubnet)
		overlay, oerr := netip.ParseAddr(m.Meta.OverlayIP)
		if serr != nil || oerr != nil {
			continue
		}
		p := wgPeer{Name: m.Name, Key: k, Endpoint: ep, Subnet: subnet, Overlay: overlay}
		if h, ok := holders[subnet]; !ok || h.Node == m.Meta.PublicKey {
			p.AllowedIPs = append(p.AllowedIPs, subnet)
		}
		p.AllowedIPs = append(p.AllowedIPs, netip.PrefixFrom(overlay, overlay.BitLen()))
		slices.SortFunc(p.AllowedIPs, func(a, b netip.Prefix) int { return a.Addr().Compare(b.Addr()) })
		out = append(out, p)
	}
	slices.SortFunc(out, func(a, b wgPeer) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// uapiPeerDiff renders the WireGuard UAPI "set" text that takes the device
// from applied to want: removed peers, new peers and changed peers only, so
// an unchanged view sends nothing (an empty string) and an established
// session is never disturbed.
func uapiPeerDiff(applied map[wgtypes.Key]wgPeer, want []wgPeer, keepalive time.Duration) string {
	var b strings.Builder
	wanted := map[wgtypes.Key]bool{}
	for _, p := range want {
		wanted[p.Key] = true
	}
	keys := make([]wgtypes.Key, 0, len(applied))
	for k := range applied {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b wgtypes.Key) int { return strings.Compare(a.String(), b.String()) })
	for _, k := range keys {
		if !wanted[k] {
			fmt.Fprintf(&b, "public_key=%s\nremove=true\n", hex.EncodeToString(k[:]))
		}
	}
	for _, p := range want {
		if old, ok := applied[p.Key]; ok && old.equal(p) {
			continue
		}
		fmt.Fprintf(&b, "public_key=%s\n", hex.EncodeToString(p.Key[:]))
		if old, ok := applied[p.Key]; !ok || old.Endpoint != p.Endpoint {
			fmt.Fprintf(&b, "endpoint=%s\n", p.Endpoint)
		}
		fmt.Fprintf(&b, "persistent_keepalive_interval=%d\n", int(keepalive/time.Second))
		b.WriteString("replace_allowed_ips=true\n")
		for _, a := range p.AllowedIPs {
			fmt.Fprintf(&b, "allowed_ip=%s\n", a)
		}
	}
	return b.String()
}

// devPeer is a peer as the WireGuard device reports it (UAPI "get").
type devPeer struct {
	Endpoint      string
	LastHandshake time.Time
	RxBytes       int64
	TxBytes       int64
	AllowedIPs    []string
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
		case "allowed_ip":
			if cur != nil {
				cur.AllowedIPs = append(cur.AllowedIPs, v)
			}
		}
	}
	flush()
	return out
}
