package bridge

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"testing"
)

func TestBridgeName(t *testing.T) {
	tests := []struct {
		service, want string
	}{
		{"web", "zlb-web"},
		{"a", "zlb-a"},
		{"abcdefghijk", "zlb-abcdefghijk"}, // 11 bytes: fits
		{"abcdefghijkl", ""},               // 12 bytes: hashed
		{"frontend-api-v2", ""},
		{strings.Repeat("x", 63), ""},
		{"Not/Valid Name", ""}, // invalid input still gives a valid ifname
		{"", ""},
	}
	for _, tt := range tests {
		t.Run(tt.service, func(t *testing.T) {
			got := BridgeName(tt.service)
			if tt.want != "" && got != tt.want {
				t.Errorf("BridgeName(%q) = %q, want %q", tt.service, got, tt.want)
			}
			checkIfname(t, got, BridgePrefix)
			if got != BridgeName(tt.service) {
				t.Errorf("BridgeName(%q) not deterministic", tt.service)
			}
			if tt.want == "" && !strings.Contains(got, "_") {
				t.Errorf("BridgeName(%q) = %q: hashed form must contain '_'", tt.service, got)
			}
		})
	}
}

func TestBridgeNameDistinct(t *testing.T) {
	seen := map[string]string{}
	add := func(s string) {
		n := BridgeName(s)
		if o, ok := seen[n]; ok && o != s {
			t.Fatalf("BridgeName(%q) = BridgeName(%q) = %q", s, o, n)
		}
		seen[n] = s
	}
	// Short names, long names sharing a prefix, names that differ only at
	// the end: the cases a truncating scheme would get wrong.
	for i := range 20000 {
		add(fmt.Sprintf("s%d", i))
		add(fmt.Sprintf("service-with-a-long-name-%d", i))
		add(fmt.Sprintf("%d-svc", i))
	}
	add("abcdefghijk")
	add("abcdefghijkl")
	add("abcdefghijkm")
}

func TestVethName(t *testing.T) {
	ids := []string{"c1", "c2", strings.Repeat("f", 128), "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"}
	seen := map[string]bool{}
	for _, id := range ids {
		n := VethName(id)
		checkIfname(t, n, VethPrefix)
		if len(n) != 15 {
			t.Errorf("VethName(%q) = %q: want 15 bytes", id, n)
		}
		if n != VethName(id) {
			t.Errorf("VethName(%q) not deterministic", id)
		}
		if seen[n] {
			t.Errorf("VethName(%q) = %q collides", id, n)
		}
		seen[n] = true
	}
}

func checkIfname(t *testing.T, name, prefix string) {
	t.Helper()
	if !strings.HasPrefix(name, prefix) {
		t.Errorf("%q lacks prefix %q", name, prefix)
	}
	if err := validateIfname(name); err != nil {
		t.Errorf("%q: %v", name, err)
	}
	if ownedName(name) != true {
		t.Errorf("%q is not recognised as ours", name)
	}
}

func TestValidateService(t *testing.T) {
	tests := []struct {
		name string
		ok   bool
	}{
		{"web", true},
		{"a", true},
		{"a-b-c", true},
		{"0abc9", true},
		{strings.Repeat("a", 63), true},
		{"", false},
		{strings.Repeat("a", 64), false},
		{"-web", false},
		{"web-", false},
		{"Web", false},
		{"we_b", false},
		{"we.b", false},
		{"wé", false},
		{"we b", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := ValidateService(tt.name)
			if (err == nil) != tt.ok {
				t.Fatalf("ValidateService(%q) = %v, want ok=%v", tt.name, err, tt.ok)
			}
			if err != nil && !errors.Is(err, ErrInvalid) {
				t.Errorf("error %v does not wrap ErrInvalid", err)
			}
		})
	}
}

func TestValidateContainer(t *testing.T) {
	tests := []struct {
		id string
		ok bool
	}{
		{"c1", true},
		{"My_Container.v1-2", true},
		{strings.Repeat("a", 128), true},
		{"", false},
		{strings.Repeat("a", 129), false},
		{"a/b", false},
		{"a b", false},
		{"a:b", false},
	}
	for _, tt := range tests {
		t.Run(tt.id, func(t *testing.T) {
			err := ValidateContainer(tt.id)
			if (err == nil) != tt.ok {
				t.Fatalf("ValidateContainer(%q) = %v, want ok=%v", tt.id, err, tt.ok)
			}
			if err != nil && !errors.Is(err, ErrInvalid) {
				t.Errorf("error %v does not wrap ErrInvalid", err)
			}
		})
	}
}

func TestGatewayFor(t *testing.T) {
	tests := []struct {
		addr string
		want string
	}{
		{"10.200.3.34", "169.254.1.1/32"},
		{"::ffff:10.200.3.34", "169.254.1.1/32"},
		{"fd5a::2", "fe80::1/128"},
		{"", "invalid Prefix"},
	}
	for _, tt := range tests {
		t.Run(tt.addr, func(t *testing.T) {
			var a netip.Addr
			if tt.addr != "" {
				a = netip.MustParseAddr(tt.addr)
			}
			if got := GatewayFor(a); got.String() != tt.want {
				t.Errorf("GatewayFor(%s) = %s, want %s", tt.addr, got, tt.want)
			}
		})
	}
}

func TestSpecValidate(t *testing.T) {
	good := Spec{
		Service: "web", Container: "c1", Netns: "/run/netns/x",
		Address: netip.MustParsePrefix("10.200.1.34/32"), Gateway: netip.MustParsePrefix("169.254.1.1/32"),
	}
	tests := []struct {
		name string
		edit func(*Spec)
		ok   bool
	}{
		{"good", func(*Spec) {}, true},
		{"pid instead of path", func(s *Spec) { s.Netns, s.PID = "", 42 }, true},
		{"ipv6", func(s *Spec) {
			s.Address, s.Gateway = netip.MustParsePrefix("fd00::2/128"), netip.MustParsePrefix("fe80::1/128")
		}, true},
		{"other link-local gateway", func(s *Spec) { s.Gateway = netip.MustParsePrefix("169.254.0.7/32") }, true},
		{"mtu", func(s *Spec) { s.MTU = 1420 }, true},
		{"both netns and pid", func(s *Spec) { s.PID = 42 }, false},
		{"neither netns nor pid", func(s *Spec) { s.Netns = "" }, false},
		{"negative pid", func(s *Spec) { s.Netns, s.PID = "", -1 }, false},
		{"bad service", func(s *Spec) { s.Service = "Web" }, false},
		{"bad container", func(s *Spec) { s.Container = "" }, false},
		{"bad ifname", func(s *Spec) { s.Ifname = "eth0/1" }, false},
		{"long ifname", func(s *Spec) { s.Ifname = "abcdefghijklmnop" }, false},
		{"no address", func(s *Spec) { s.Address = netip.Prefix{} }, false},
		{"no gateway", func(s *Spec) { s.Gateway = netip.Prefix{} }, false},
		{"address is gateway", func(s *Spec) { s.Address = s.Gateway }, false},
		{"address not full-length", func(s *Spec) { s.Address = netip.MustParsePrefix("10.200.1.34/27") }, false},
		{"gateway not full-length", func(s *Spec) { s.Gateway = netip.MustParsePrefix("169.254.1.1/16") }, false},
		{"the previous release's slice gateway", func(s *Spec) {
			s.Address, s.Gateway = netip.MustParsePrefix("10.200.1.34/27"), netip.MustParsePrefix("10.200.1.33/27")
		}, false},
		{"gateway not link-local", func(s *Spec) { s.Gateway = netip.MustParsePrefix("10.200.1.33/32") }, false},
		{"ipv6 gateway not link-local", func(s *Spec) {
			s.Address, s.Gateway = netip.MustParsePrefix("fd00::2/128"), netip.MustParsePrefix("fd00::1/128")
		}, false},
		{"mixed families", func(s *Spec) { s.Address = netip.MustParsePrefix("fd00::2/128") }, false},
		{"mapped address", func(s *Spec) { s.Address = netip.MustParsePrefix("::ffff:10.200.1.34/128") }, false},
		{"multicast address", func(s *Spec) { s.Address = netip.MustParsePrefix("224.0.0.1/32") }, false},
		{"loopback address", func(s *Spec) { s.Address = netip.MustParsePrefix("127.0.0.1/32") }, false},
		{"unspecified address", func(s *Spec) { s.Address = netip.MustParsePrefix("0.0.0.0/32") }, false},
		{"broadcast address", func(s *Spec) { s.Address = netip.MustParsePrefix("255.255.255.255/32") }, false},
		{"ipv6 link-local address", func(s *Spec) {
			s.Address, s.Gateway = netip.MustParsePrefix("fe80::2/128"), netip.MustParsePrefix("fe80::1/128")
		}, false},
		{"mtu too small", func(s *Spec) { s.MTU = 67 }, false},
		{"mtu negative", func(s *Spec) { s.MTU = -1 }, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := good
			tt.edit(&s)
			err := s.validate()
			if (err == nil) != tt.ok {
				t.Fatalf("validate = %v, want ok=%v", err, tt.ok)
			}
			if err != nil && !errors.Is(err, ErrInvalid) {
				t.Errorf("error %v does not wrap ErrInvalid", err)
			}
		})
	}
}

func FuzzBridgeName(f *testing.F) {
	for _, s := range []string{"web", "abcdefghijkl", "", "a/b c", strings.Repeat("z", 70)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, service string) {
		n := BridgeName(service)
		if err := validateIfname(n); err != nil {
			t.Fatalf("BridgeName(%q) = %q: %v", service, n, err)
		}
		if !strings.HasPrefix(n, BridgePrefix) || n != BridgeName(service) {
			t.Fatalf("BridgeName(%q) = %q", service, n)
		}
		// A valid service that fits keeps its own name; every other form
		// has a '_' that no valid service has.
		if ValidateService(service) == nil && len(service) <= 11 {
			if n != BridgePrefix+service {
				t.Fatalf("BridgeName(%q) = %q", service, n)
			}
		} else if !strings.Contains(n, "_") {
			t.Fatalf("BridgeName(%q) = %q lacks '_'", service, n)
		}
	})
}

func FuzzValidate(f *testing.F) {
	for _, s := range []string{"web", "-a", "A", "c.1_x", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if err := ValidateService(s); err == nil {
			if len(s) == 0 || len(s) > 63 || strings.Trim(s, "abcdefghijklmnopqrstuvwxyz0123456789-") != "" {
				t.Fatalf("ValidateService accepted %q", s)
			}
		} else if !errors.Is(err, ErrInvalid) {
			t.Fatalf("ValidateService(%q) = %v", s, err)
		}
		if err := ValidateContainer(s); err == nil {
			if len(s) == 0 || len(s) > 128 || strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-") != "" {
				t.Fatalf("ValidateContainer accepted %q", s)
			}
			if err := validateIfname(VethName(s)); err != nil {
				t.Fatal(err)
			}
		} else if !errors.Is(err, ErrInvalid) {
			t.Fatalf("ValidateContainer(%q) = %v", s, err)
		}
	})
}
