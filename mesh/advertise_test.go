package mesh

import (
	"errors"
	"net"
	"net/netip"
	"path/filepath"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/zlmesh/zlmesh/internal/statefile"
)

func TestUnspecifiedBind(t *testing.T) {
	for _, tt := range []struct {
		bind string
		want bool
	}{
		{"", true},
		{"0.0.0.0", true},
		{"::", true},
		{"[::]", false}, // not an address: memberlist would fail on it
		{"127.0.0.1", false},
		{"::1", false},
		{"2001:db8:0:2::11", false},
	} {
		if got := unspecifiedBind(tt.bind); got != tt.want {
			t.Errorf("unspecifiedBind(%q) = %v, want %v", tt.bind, got, tt.want)
		}
	}
}

func TestPickAdvertiseAddr(t *testing.T) {
	addrs := func(s ...string) []netip.Addr {
		var out []netip.Addr
		for _, a := range s {
			out = append(out, netip.MustParseAddr(a))
		}
		return out
	}
	tests := []struct {
		name    string
		private string
		addrs   []netip.Addr
		want    string // "" means ErrNoAdvertiseAddr
	}{
		{"private IPv4 wins", "192.0.2.11", addrs("2001:db8::11", "192.0.2.11"), "192.0.2.11"},
		{"private IPv6 (ULA) from memberlist", "fd00::11", addrs("fd00::11"), "fd00::11"},
		{"private IPv4-mapped is unmapped", "::ffff:10.0.0.1", nil, "10.0.0.1"},
		{"IPv6-only host with a global address", "", addrs("fe80::1", "2a01:4f8::11"), "2a01:4f8::11"},
		{"first global IPv6 in interface order", "", addrs("2a01:4f8::11", "2a01:4f8::12"), "2a01:4f8::11"},
		{"link-local only", "", addrs("fe80::1%eth0"), ""},
		{"public IPv4 only is not picked", "", addrs("203.0.113.5"), ""},
		{"mapped IPv4 is not IPv6", "", addrs("::ffff:203.0.113.5"), ""},
		{"nothing", "", nil, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := pickAdvertiseAddr(tt.private, tt.addrs)
			if tt.want == "" {
				if !errors.Is(err, ErrNoAdvertiseAddr) {
					t.Errorf("got %v, %v; want ErrNoAdvertiseAddr", got, err)
				}
				return
			}
			if err != nil || got != netip.MustParseAddr(tt.want) {
				t.Errorf("got %v, %v; want %s", got, err, tt.want)
			}
		})
	}
	if _, err := pickAdvertiseAddr("not-an-ip", nil); err == nil {
		t.Error("a private address that does not parse was accepted")
	}
}

// TestCheckAddrIPv6 covers the host:port forms of IPv6 seeds and remembered
// peers (Config.Join, the known peers file).
func TestCheckAddrIPv6(t *testing.T) {
	for _, tt := range []struct {
		addr string
		ok   bool
	}{
		{"[2001:db8:0:2::11]:7946", true},
		{"[::1]:7946", true},
		{"[fe80::1%eth0]:7946", true},
		{"[::ffff:192.0.2.11]:7946", true},
		{"2001:db8:0:2::11:7946", false}, // no brackets: ambiguous
		{"[2001:db8:0:2::11]", false},    // no port
		{"[2001:db8:0:2::11]:0", false},
		{"[2001:db8:0:2::11]:65536", false},
		{"[2001:db8::zz]:7946", false},
	} {
		err := checkAddr(tt.addr)
		if (err == nil) != tt.ok {
			t.Errorf("checkAddr(%q) = %v, want ok=%v", tt.addr, err, tt.ok)
		}
		if err != nil && !errors.Is(err, ErrBadAddress) {
			t.Errorf("checkAddr(%q) = %v, not ErrBadAddress", tt.addr, err)
		}
	}
}

func TestMemberlistConfigIPv6(t *testing.T) {
	tests := []struct {
		name                string
		cfg                 Config
		wantBind, wantAdv   string
		wantPort, wantAdvPt int
	}{
		{"IPv6 bind and advertise", Config{BindAddr: "::", AdvertiseAddr: "2001:db8:0:2::11"}, "::", "2001:db8:0:2::11", DefaultPort, DefaultPort},
		{"default bind, IPv6 advertise", Config{AdvertiseAddr: "2001:db8:0:2::11", BindPort: 7000}, "0.0.0.0", "2001:db8:0:2::11", 7000, 7000},
		{"specific IPv6 bind", Config{BindAddr: "2001:db8:0:2::11", AdvertisePort: 9000}, "2001:db8:0:2::11", "", DefaultPort, 9000},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := &Mesh{cfg: tt.cfg, tun: Tuning{}.withDefaults()}
			c := m.memberlistConfig(memberlist.DefaultLANConfig())
			if c.BindAddr != tt.wantBind || c.AdvertiseAddr != tt.wantAdv || c.BindPort != tt.wantPort || c.AdvertisePort != tt.wantAdvPt {
				t.Errorf("bind %s:%d advertise %q:%d; want %s:%d %q:%d", c.BindAddr, c.BindPort, c.AdvertiseAddr, c.AdvertisePort,
					tt.wantBind, tt.wantPort, tt.wantAdv, tt.wantAdvPt)
			}
		})
	}
}

// TestLoopbackIPv6 runs gossip over ::1: a node bound to ::1, one bound to
// 0.0.0.0 (Go's dual-stack socket) and one bound to ::, all advertising ::1
// and joining with [::1]:port; then the first restarts with no seeds and
// comes back through the IPv6 addresses of its known peers file.
func TestLoopbackIPv6(t *testing.T) {
	if c, err := net.ListenPacket("udp", "[::1]:0"); err != nil {
		t.Skipf("no IPv6 loopback here: %v", err)
	} else {
		c.Close()
	}
	logs := newLogSink(t)
	key, err := GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	start := func(name, bind, adv string, seeds ...string) *Mesh {
		t.Helper()
		tun := fastTuning()
		tun.GossipToTheDeadTime = time.Minute
		m, err := Start(Config{
			Name: name, BindAddr: bind, BindPort: -1, AdvertiseAddr: adv,
			ClusterKey: key, Join: seeds,
			KnownPeersFile: filepath.Join(dir, name+".peers.json"),
			Meta:           Meta{PublicKey: "pk-" + name, Endpoint: "[::1]:51820", Version: "test"},
			Tuning:         tun, Logger: logs.logger(),
		})
		if err != nil {
			t.Fatalf("start %s: %v", name, err)
		}
		t.Cleanup(func() { m.Shutdown() })
		return m
	}
	a := start("a", "::1", "")
	if !a.Addr().Addr().Is6() || a.Addr().String()[0] != '[' {
		t.Fatalf("a's address %s: want [::1]:port", a.Addr())
	}
	seed := a.Addr().String()
	b := start("b", "0.0.0.0", "::1", seed)
	c := start("c", "::", "::1", seed)
	nodes := []*Mesh{a, b, c}
	eventually(t, 10*time.Second, "3 nodes alive everywhere over ::1", func() bool {
		for _, m := range nodes {
			if aliveSet(m) != "a,b,c" {
				return false
			}
		}
		return true
	})
	for _, m := range nodes {
		for _, mem := range m.Members() {
			if mem.Addr.Addr() != netip.IPv6Loopback() || mem.Meta.Endpoint != "[::1]:51820" {
				t.Errorf("%s sees %s at %s, endpoint %q", m.LocalName(), mem.Name, mem.Addr, mem.Meta.Endpoint)
			}
		}
	}
	path := filepath.Join(dir, "a.peers.json")
	var f knownPeersFile
	eventually(t, 5*time.Second, "a's peers file lists b and c", func() bool {
		f = knownPeersFile{}
		return statefile.ReadJSON(path, &f) == nil && len(f.Peers) == 2
	})
	for i, want := range []*Mesh{b, c} {
		if f.Peers[i].Name != want.LocalName() || f.Peers[i].Addr != want.Addr().String() {
			t.Errorf("peers file entry %d: %+v, want %s at %s", i, f.Peers[i], want.LocalName(), want.Addr())
		}
	}

	// a restarts on a new port with no seeds: only the file knows the way.
	a.Shutdown()
	eventually(t, 10*time.Second, "b and c see a gone", func() bool {
		return aliveSet(b) == "b,c" && aliveSet(c) == "b,c"
	})
	a2 := start("a", "::1", "")
	eventually(t, 10*time.Second, "a back from its peers file", func() bool {
		return aliveSet(a2) == "a,b,c" && aliveSet(b) == "a,b,c" && aliveSet(c) == "a,b,c"
	})
}
