package node

// An IPv6 underlay: peers' endpoints are [v6]:port, in the gossiped meta,
// in what the node sets on the WireGuard device and in what it reads back.

import (
	"encoding/hex"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/zlmesh/zlmesh/mesh"
	"golang.zx2c4.com/wireguard/conn"
	"golang.zx2c4.com/wireguard/device"
	"golang.zx2c4.com/wireguard/tun/tuntest"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

func TestDesiredPeersIPv6Endpoints(t *testing.T) {
	self := mustKey(t)
	tests := []struct {
		name     string
		endpoint string // the member's gossiped Meta.Endpoint
		want     string // the peer's endpoint; "" means the member is skipped
	}{
		{"IPv4", "192.0.2.12:51820", "192.0.2.12:51820"},
		{"IPv6", "[2001:db8:0:2::12]:51820", "[2001:db8:0:2::12]:51820"},
		{"IPv6 zero-compressed", "[2001:db8::c]:1", "[2001:db8::c]:1"},
		{"IPv6 written long is normalized", "[2001:0db8:0000:0002:0000:0000:0000:0012]:51820", "[2001:db8:0:2::12]:51820"},
		{"IPv6 without brackets", "2001:db8:0:2::12:51820", ""},
		{"IPv6 without port", "[2001:db8:0:2::12]", ""},
		{"empty", "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			k := mustKey(t)
			m := member("a", k, mesh.StateAlive, "10.200.1.0/26")
			m.Meta.Endpoint = tt.endpoint
			got := desiredPeers(self, []mesh.Member{m}, held(nil, k, "10.200.1.0/26"), nil)
			if tt.want == "" {
				if len(got) != 0 {
					t.Errorf("endpoint %q: peer %+v, want none", tt.endpoint, got)
				}
				return
			}
			if len(got) != 1 || got[0].Endpoint.String() != tt.want {
				t.Fatalf("endpoint %q: peers %+v, want one at %s", tt.endpoint, got, tt.want)
			}
			set := uapiPeerDiff(nil, got, nil)
			if !strings.Contains(set, "endpoint="+tt.want+"\n") {
				t.Errorf("UAPI set does not carry endpoint=%s:\n%s", tt.want, set)
			}
		})
	}
}

func TestParseUAPIPeersIPv6(t *testing.T) {
	k := mustKey(t)
	got := parseUAPIPeers("public_key=" + hexKey(k) + "\nendpoint=[2001:db8:0:2::12]:51820\nallowed_ip=10.200.2.0/26\n")
	if p := got[k.String()]; p == nil || p.Endpoint != "[2001:db8:0:2::12]:51820" {
		t.Errorf("parsed %+v", p)
	}
}

// TestWireGuardOverIPv6Loopback runs two wireguard-go devices on the
// default bind (the node's), configured with the node's own UAPI text with
// [::1]:port endpoints: a packet crosses, and each device reports the other
// at its IPv6 endpoint with a handshake.
func TestWireGuardOverIPv6Loopback(t *testing.T) {
	if c, err := net.ListenPacket("udp6", "[::1]:0"); err != nil {
		t.Skipf("no IPv6 loopback here: %v", err)
	} else {
		c.Close()
	}
	type end struct {
		key  wgtypes.Key
		tun  *tuntest.ChannelTUN
		dev  *device.Device
		port int
	}
	newEnd := func(name string) *end {
		k, err := wgtypes.GeneratePrivateKey()
		if err != nil {
			t.Fatal(err)
		}
		e := &end{key: k, tun: tuntest.NewChannelTUN()}
		e.dev = device.NewDevice(e.tun.TUN(), conn.NewDefaultBind(), device.NewLogger(device.LogLevelSilent, name))
		t.Cleanup(e.dev.Close)
		if err := e.dev.IpcSet(fmt.Sprintf("private_key=%s\nlisten_port=0\n", hex.EncodeToString(k[:]))); err != nil {
			t.Fatal(err)
		}
		if err := e.dev.Up(); err != nil {
			t.Fatal(err)
		}
		get, err := e.dev.IpcGet()
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(get, "\n") {
			if v, ok := strings.CutPrefix(line, "listen_port="); ok {
				fmt.Sscan(v, &e.port)
			}
		}
		if e.port == 0 {
			t.Fatalf("%s: no listen port in %q", name, get)
		}
		return e
	}
	a, b := newEnd("a"), newEnd("b")
	addrA, addrB := netip.MustParseAddr("10.200.1.1"), netip.MustParseAddr("10.200.2.1")
	peer := func(to *end, overlay netip.Addr) wgPeer {
		return wgPeer{Key: to.key.PublicKey(), Endpoint: netip.AddrPortFrom(netip.IPv6Loopback(), uint16(to.port)),
			AllowedIPs: []netip.Prefix{netip.PrefixFrom(overlay, 32)}, Keepalive: 0}
	}
	for _, x := range []struct {
		dev *end
		p   wgPeer
	}{{a, peer(b, addrB)}, {b, peer(a, addrA)}} {
		if err := x.dev.dev.IpcSet(uapiPeerDiff(nil, []wgPeer{x.p}, nil)); err != nil {
			t.Fatalf("set peer %s: %v", x.p.Endpoint, err)
		}
	}
	ping := tuntest.Ping(addrB, addrA)
	select {
	case a.tun.Outbound <- ping:
	case <-time.After(5 * time.Second):
		t.Fatal("device a does not read")
	}
	select {
	case got := <-b.tun.Inbound:
		if string(got) != string(ping) {
			t.Errorf("b got %x, want %x", got, ping)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the packet did not cross over [::1]")
	}
	for _, x := range []struct {
		name     string
		dev, to  *end
		endpoint string
	}{{"a", a, b, fmt.Sprintf("[::1]:%d", b.port)}, {"b", b, a, fmt.Sprintf("[::1]:%d", a.port)}} {
		get, err := x.dev.dev.IpcGet()
		if err != nil {
			t.Fatal(err)
		}
		p := parseUAPIPeers(get)[x.to.key.PublicKey().String()]
		if p == nil || p.Endpoint != x.endpoint || p.LastHandshake.IsZero() {
			t.Errorf("%s reports its peer as %+v, want endpoint %s with a handshake", x.name, p, x.endpoint)
		}
	}
}

func TestNormalizeIPv6Underlay(t *testing.T) {
	key := make([]byte, 32)
	tests := []struct {
		name      string
		bind, adv string
		join      []string
		wantBind  string
		wantAdv   string
		wantErr   string
	}{
		{name: "IPv6 advertise, default bind", adv: "2001:db8:0:2::11", join: []string{"[2001:db8:0:2::12]:7946"}, wantBind: "0.0.0.0", wantAdv: "2001:db8:0:2::11"},
		{name: "IPv6 bind", bind: "::", adv: "2001:db8:0:2::11", wantBind: "::", wantAdv: "2001:db8:0:2::11"},
		{name: "mixed seeds", adv: "2001:db8:0:2::11", join: []string{"[2001:db8:0:2::12]:7946", "192.0.2.12:7946", "h2.example:7946"}, wantBind: "0.0.0.0", wantAdv: "2001:db8:0:2::11"},
		{name: "mapped addresses are unmapped", bind: "::ffff:192.0.2.11", adv: "::ffff:192.0.2.11", wantBind: "192.0.2.11", wantAdv: "192.0.2.11"},
		{name: "seed without brackets", join: []string{"2001:db8:0:2::12:7946"}, wantErr: "--join"},
		{name: "seed without port", join: []string{"[2001:db8:0:2::12]"}, wantErr: "--join"},
		{name: "unspecified advertise", adv: "::", wantErr: "--advertise-addr"},
		{name: "multicast advertise", adv: "ff02::1", wantErr: "--advertise-addr"},
		{name: "advertise with a zone", adv: "fe80::1%eth0", wantErr: "zone"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := Config{Name: "h1", ClusterKey: key, Join: tt.join}
			if tt.bind != "" {
				c.BindAddr = netip.MustParseAddr(tt.bind)
			}
			if tt.adv != "" {
				c.AdvertiseAddr = netip.MustParseAddr(tt.adv)
			}
			err := c.Normalize()
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("Normalize() = %v, want an error about %s", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if c.BindAddr.String() != tt.wantBind || c.AdvertiseAddr.String() != tt.wantAdv {
				t.Errorf("bind %s advertise %s; want %s %s", c.BindAddr, c.AdvertiseAddr, tt.wantBind, tt.wantAdv)
			}
			if got := netip.AddrPortFrom(c.AdvertiseAddr, uint16(c.ListenPort)).String(); c.AdvertiseAddr.Is6() && got != "["+tt.wantAdv+"]:51820" {
				t.Errorf("endpoint %s", got)
			}
		})
	}
}
