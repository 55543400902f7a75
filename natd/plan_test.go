package natd

import (
	"net/netip"
	"slices"
	"strings"
	"testing"
)

func TestPlan(t *testing.T) {
	cfg := validConfig()
	// Out of order on purpose: Plan sorts.
	cfg.Ports[0], cfg.Ports[3] = cfg.Ports[3], cfg.Ports[0]
	rules, err := Plan(cfg)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, r := range rules {
		got = append(got, r.String())
	}
	want := []string{
		"publish tcp local:8080 dnat 10.200.3.34:80",
		"publish tcp 192.0.2.10:9090 dnat 10.200.5.7:80",
		"publish tcp 192.0.2.11:9090 dnat 10.200.5.8:80",
		"publish udp local:8080 dnat 10.200.3.34:80",
		"hairpin dnat saddr 10.200.3.0/24 !local oif zlb-* masquerade",
		"overlay dnat oif zl0 saddr 10.200.3.0/24 keep",
		"overlay dnat oif zl0 snat 10.200.3.1",
		"egress saddr 10.200.3.0/24 daddr != 10.200.0.0/16 oif != zl0 masquerade",
	}
	if !slices.Equal(got, want) {
		t.Errorf("Plan:\n got %q\nwant %q", got, want)
	}

	t.Run("masquerade off", func(t *testing.T) {
		cfg := validConfig()
		cfg.Masquerade = false
		cfg.Ports = nil
		rules, err := Plan(cfg)
		if err != nil {
			t.Fatal(err)
		}
		kinds := []Kind{}
		for _, r := range rules {
			kinds = append(kinds, r.Kind)
		}
		if !slices.Equal(kinds, []Kind{KindHairpin, KindOverlayKeep, KindOverlaySNAT}) {
			t.Errorf("kinds %v, want hairpin, overlay-keep and overlay-snat only", kinds)
		}
	})
	t.Run("several local prefixes", func(t *testing.T) {
		cfg := validConfig()
		cfg.Ports = nil
		cfg.Local = []netip.Prefix{netip.MustParsePrefix("10.200.3.0/26"), netip.MustParsePrefix("10.200.9.0/25")}
		rules, err := Plan(cfg)
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, r := range rules {
			got = append(got, r.String())
		}
		want := []string{
			"hairpin dnat saddr 10.200.3.0/26 !local oif zlb-* masquerade",
			"hairpin dnat saddr 10.200.9.0/25 !local oif zlb-* masquerade",
			"overlay dnat oif zl0 saddr 10.200.3.0/26 keep",
			"overlay dnat oif zl0 saddr 10.200.9.0/25 keep",
			"overlay dnat oif zl0 snat 10.200.3.1",
			"egress saddr 10.200.3.0/26 daddr != 10.200.0.0/16 oif != zl0 masquerade",
			"egress saddr 10.200.9.0/25 daddr != 10.200.0.0/16 oif != zl0 masquerade",
		}
		if !slices.Equal(got, want) {
			t.Errorf("Plan:\n got %q\nwant %q", got, want)
		}
	})
	t.Run("invalid", func(t *testing.T) {
		cfg := validConfig()
		cfg.Ports[0].Target = netip.MustParseAddrPort("8.8.8.8:53")
		if rules, err := Plan(cfg); err == nil || rules != nil {
			t.Errorf("Plan of an invalid config = %v, %v", rules, err)
		}
	})
	t.Run("one port more is one rule more", func(t *testing.T) {
		a, _ := Plan(validConfig())
		cfg := validConfig()
		cfg.Ports = append(cfg.Ports, Port{Proto: "udp", HostPort: 53, Target: netip.MustParseAddrPort("10.200.3.40:53")})
		b, _ := Plan(cfg)
		var extra []Rule
		for _, r := range b {
			if !slices.Contains(a, r) {
				extra = append(extra, r)
			}
		}
		if len(b) != len(a)+1 || len(extra) != 1 || extra[0].Kind != KindPublish {
			t.Errorf("adding one port changed the plan by %v", extra)
		}
	})
	t.Run("ipv6", func(t *testing.T) {
		rules, err := Plan(validConfig6())
		if err != nil {
			t.Fatal(err)
		}
		want := []string{
			"publish tcp local:8080 dnat 10.200.3.34:80",
			"publish tcp local:8080 dnat [fd00:200:0:3::22]:80",
			"publish tcp 192.0.2.10:9090 dnat 10.200.5.7:80",
			"publish tcp 192.0.2.11:9090 dnat 10.200.5.8:80",
			"publish tcp [2001:db8::10]:9090 dnat [fd00:200:0:5::7]:80",
			"publish udp local:8080 dnat 10.200.3.34:80",
			"hairpin dnat saddr 10.200.3.0/24 !local oif zlb-* masquerade",
			"overlay dnat oif zl0 saddr 10.200.3.0/24 keep",
			"overlay dnat oif zl0 snat 10.200.3.1",
			"egress saddr 10.200.3.0/24 daddr != 10.200.0.0/16 oif != zl0 masquerade",
			"hairpin dnat saddr fd00:200:0:3::/64 !local oif zlb-* masquerade",
			"overlay dnat oif zl0 saddr fd00:200:0:3::/64 keep",
			"overlay dnat oif zl0 snat fd00:200:0:3::1",
			"egress saddr fd00:200:0:3::/64 daddr != fd00:200::/48 oif != zl0 masquerade",
		}
		var got []string
		for _, r := range rules {
			got = append(got, r.String())
			if six := strings.Contains(r.String(), "fd00:"); r.Is6() != six {
				t.Errorf("%s: Is6() = %v", r, r.Is6())
			}
		}
		if !slices.Equal(got, want) {
			t.Errorf("Plan:\n got %q\nwant %q", got, want)
		}
	})
	t.Run("ipv6 egress off, ipv4 on", func(t *testing.T) {
		cfg := validConfig6()
		cfg.Masquerade6 = false
		cfg.Ports = nil
		rules, err := Plan(cfg)
		if err != nil {
			t.Fatal(err)
		}
		var masq []string
		for _, r := range rules {
			if r.Kind == KindMasquerade {
				masq = append(masq, r.Source.String())
			}
		}
		if len(rules) != 7 || !slices.Equal(masq, []string{"10.200.3.0/24"}) {
			t.Errorf("%d rules, masquerade for %v; want 7, 10.200.3.0/24 only", len(rules), masq)
		}
	})
	t.Run("ipv6 port is one rule more", func(t *testing.T) {
		a, _ := Plan(validConfig6())
		cfg := validConfig6()
		cfg.Ports = append(cfg.Ports, Port{Proto: "udp", HostPort: 53, Target6: netip.MustParseAddrPort("[fd00:200:0:3::40]:53")})
		b, _ := Plan(cfg)
		if len(b) != len(a)+1 || !slices.Contains(b, Rule{Kind: KindPublish, Proto: "udp", HostPort: 53, Target: cfg.Ports[5].Target6}) {
			t.Errorf("adding one IPv6-only port: %d rules → %d", len(a), len(b))
		}
	})
}
