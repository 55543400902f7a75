package winip_test

import (
	"errors"
	"net/netip"
	"slices"
	"testing"

	"github.com/zlmesh/zlmesh/tun/winip"
	"github.com/zlmesh/zlmesh/tun/winip/winiptest"
)

var (
	pfx  = netip.MustParsePrefix
	addr = netip.MustParseAddr
)

// system routes Windows makes for an adapter with 10.200.1.1/24.
var systemRoutes = []winip.Route{
	{Dst: pfx("10.200.1.0/24"), Metric: 256},
	{Dst: pfx("10.200.1.1/32"), Metric: 256},
	{Dst: pfx("10.200.1.255/32"), Metric: 256},
	{Dst: pfx("224.0.0.0/4"), Metric: 256},
	{Dst: pfx("ff00::/8"), Metric: 256},
}

func TestSetAddress(t *testing.T) {
	linkLocal := pfx("fe80::1234/64")
	cases := []struct {
		name    string
		have    []netip.Prefix
		set     netip.Prefix
		want    []netip.Prefix // afterwards, in any order
		changes []string
	}{
		{"fresh", nil, pfx("10.200.1.1/16"), []netip.Prefix{pfx("10.200.1.1/16")},
			[]string{"add-address 10.200.1.1/16"}},
		{"already there", []netip.Prefix{pfx("10.200.1.1/16"), linkLocal}, pfx("10.200.1.1/16"),
			[]netip.Prefix{pfx("10.200.1.1/16"), linkLocal}, nil},
		{"other prefix length", []netip.Prefix{pfx("10.200.1.1/24")}, pfx("10.200.1.1/16"),
			[]netip.Prefix{pfx("10.200.1.1/16")},
			[]string{"delete-address 10.200.1.1/24", "add-address 10.200.1.1/16"}},
		{"renumbered: old one goes, IPv6 and link-local stay",
			[]netip.Prefix{pfx("10.200.7.1/16"), pfx("fd00::1/64"), linkLocal}, pfx("10.200.1.1/16"),
			[]netip.Prefix{pfx("fd00::1/64"), linkLocal, pfx("10.200.1.1/16")},
			[]string{"delete-address 10.200.7.1/16", "add-address 10.200.1.1/16"}},
		{"IPv6 replaces IPv6 only, never link-local",
			[]netip.Prefix{pfx("10.200.1.1/16"), pfx("fd00::1/64"), linkLocal}, pfx("fd00::2/64"),
			[]netip.Prefix{pfx("10.200.1.1/16"), linkLocal, pfx("fd00::2/64")},
			[]string{"delete-address fd00::1/64", "add-address fd00::2/64"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := winiptest.New()
			f.AddInterface("zl0").Addresses = slices.Clone(tc.have)
			if err := winip.SetAddress(f, "zl0", tc.set); err != nil {
				t.Fatal(err)
			}
			it, _ := f.Interface("zl0")
			if !sameSet(it.Addresses, tc.want) {
				t.Errorf("addresses %v, want %v", it.Addresses, tc.want)
			}
			if !slices.Equal(f.Changes, tc.changes) {
				t.Errorf("changes %q, want %q", f.Changes, tc.changes)
			}
			// Again: nothing to do (the re-apply after a restart).
			f.ResetChanges()
			if err := winip.SetAddress(f, "zl0", tc.set); err != nil {
				t.Fatal(err)
			}
			if len(f.Changes) != 0 {
				t.Errorf("second apply changed %q", f.Changes)
			}
		})
	}
}

func TestSetRoutes(t *testing.T) {
	const metric = 90
	static := func(p string, m uint32) winip.Route {
		return winip.Route{Dst: pfx(p), Metric: m, Static: true}
	}
	cases := []struct {
		name    string
		have    []winip.Route
		want    []netip.Prefix
		after   []winip.Route // static routes afterwards, in any order
		changes []string
	}{
		{"fresh", nil, []netip.Prefix{pfx("10.200.0.0/16"), pfx("fd00:200::/48")},
			[]winip.Route{static("10.200.0.0/16", metric), static("fd00:200::/48", metric)},
			[]string{"add-route 10.200.0.0/16 metric 90", "add-route fd00:200::/48 metric 90"}},
		{"the adapter's own connected route is the wanted one", nil,
			[]netip.Prefix{pfx("10.200.1.0/24"), pfx("10.200.0.0/16")},
			[]winip.Route{static("10.200.0.0/16", metric)},
			[]string{"add-route 10.200.0.0/16 metric 90"}},
		{"in place", []winip.Route{static("10.200.0.0/16", metric)}, []netip.Prefix{pfx("10.200.0.0/16")},
			[]winip.Route{static("10.200.0.0/16", metric)}, nil},
		{"stale route of a previous run goes", []winip.Route{static("10.200.0.0/16", metric), static("10.99.0.0/16", metric)},
			[]netip.Prefix{pfx("10.200.0.0/16")},
			[]winip.Route{static("10.200.0.0/16", metric)},
			[]string{"delete-route 10.99.0.0/16"}},
		{"other metric is replaced", []winip.Route{static("10.200.0.0/16", 5)}, []netip.Prefix{pfx("10.200.0.0/16")},
			[]winip.Route{static("10.200.0.0/16", metric)},
			[]string{"delete-route 10.200.0.0/16", "add-route 10.200.0.0/16 metric 90"}},
		{"route with a gateway is replaced by an on-link one",
			[]winip.Route{{Dst: pfx("10.200.0.0/16"), NextHop: addr("10.200.0.9"), Metric: metric, Static: true}},
			[]netip.Prefix{pfx("10.200.0.0/16")},
			[]winip.Route{static("10.200.0.0/16", metric)},
			[]string{"delete-route 10.200.0.0/16", "add-route 10.200.0.0/16 metric 90"}},
		{"nil removes every static route", []winip.Route{static("10.200.0.0/16", metric), static("10.201.0.0/16", 7)}, nil,
			nil, []string{"delete-route 10.200.0.0/16", "delete-route 10.201.0.0/16"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := winiptest.New()
			it := f.AddInterface("zl0")
			it.Routes = append(slices.Clone(systemRoutes), tc.have...)
			if err := winip.SetRoutes(f, "zl0", tc.want, metric); err != nil {
				t.Fatal(err)
			}
			got, _ := f.Interface("zl0")
			var statics []winip.Route
			var system []winip.Route
			for _, r := range got.Routes {
				if r.Static {
					statics = append(statics, r)
				} else {
					system = append(system, r)
				}
			}
			if !sameSet(statics, tc.after) {
				t.Errorf("static routes %v, want %v", statics, tc.after)
			}
			if !sameSet(system, systemRoutes) {
				t.Errorf("system routes touched: %v", system)
			}
			if !slices.Equal(f.Changes, tc.changes) {
				t.Errorf("changes %q, want %q", f.Changes, tc.changes)
			}
			f.ResetChanges()
			if err := winip.SetRoutes(f, "zl0", tc.want, metric); err != nil {
				t.Fatal(err)
			}
			if len(f.Changes) != 0 {
				t.Errorf("second apply changed %q", f.Changes)
			}
		})
	}
}

func TestSetMTU(t *testing.T) {
	f := winiptest.New()
	f.AddInterface("zl0")
	noV6 := f.AddInterface("zl1")
	noV6.NoIPv6 = true
	for _, name := range []string{"zl0", "zl1"} {
		luid, err := f.LUID(name)
		if err != nil {
			t.Fatal(err)
		}
		if err := winip.SetMTU(f, luid, 1420); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
	}
	if it, _ := f.Interface("zl0"); it.MTU != [2]int{1420, 1420} {
		t.Errorf("zl0 mtu %v", it.MTU)
	}
	if it, _ := f.Interface("zl1"); it.MTU != [2]int{1420, 0} {
		t.Errorf("zl1 (no IPv6) mtu %v", it.MTU)
	}
}

func TestCleanup(t *testing.T) {
	f := winiptest.New()
	it := f.AddInterface("zl0")
	it.Addresses = []netip.Prefix{pfx("10.200.1.1/24"), pfx("fe80::1/64")}
	it.Routes = append(slices.Clone(systemRoutes), winip.Route{Dst: pfx("10.200.0.0/16"), Metric: 90, Static: true})
	if err := winip.Cleanup(f, "zl0"); err != nil {
		t.Fatal(err)
	}
	got, _ := f.Interface("zl0")
	if !slices.Equal(got.Addresses, []netip.Prefix{pfx("fe80::1/64")}) {
		t.Errorf("addresses left: %v", got.Addresses)
	}
	if !sameSet(got.Routes, systemRoutes) {
		t.Errorf("routes left: %v", got.Routes)
	}
	// Gone already (the adapter was closed): not an error.
	f.RemoveInterface("zl0")
	if err := winip.Cleanup(f, "zl0"); err != nil {
		t.Errorf("cleanup of a removed interface: %v", err)
	}
}

func TestErrors(t *testing.T) {
	boom := errors.New("boom")
	t.Run("no such interface", func(t *testing.T) {
		f := winiptest.New()
		err := winip.SetAddress(f, "zl9", pfx("10.0.0.1/24"))
		if !errors.Is(err, winip.ErrLinkNotFound) {
			t.Errorf("SetAddress: %v, want ErrLinkNotFound", err)
		}
		if err := winip.SetRoutes(f, "zl9", nil, 90); !errors.Is(err, winip.ErrLinkNotFound) {
			t.Errorf("SetRoutes: %v, want ErrLinkNotFound", err)
		}
	})
	for _, op := range []string{"luid", "addresses", "add-address", "delete-address", "routes", "add-route", "delete-route", "set-interface"} {
		t.Run(op, func(t *testing.T) {
			f := winiptest.New()
			it := f.AddInterface("zl0")
			it.Addresses = []netip.Prefix{pfx("10.0.0.9/24")}
			it.Routes = []winip.Route{{Dst: pfx("10.9.0.0/16"), Metric: 90, Static: true}}
			f.Fail = func(o string) error {
				if o == op {
					return boom
				}
				return nil
			}
			errs := []error{
				winip.SetAddress(f, "zl0", pfx("10.0.0.1/24")),
				winip.SetRoutes(f, "zl0", []netip.Prefix{pfx("10.1.0.0/16")}, 90),
				winip.SetMTU(f, it.LUID, 1420),
			}
			hit := false
			for _, err := range errs {
				if err != nil {
					if !errors.Is(err, boom) {
						t.Errorf("error %v does not wrap the cause", err)
					}
					hit = true
				}
			}
			if !hit {
				t.Errorf("no call failed")
			}
		})
	}
}

func sameSet[T comparable](a, b []T) bool {
	if len(a) != len(b) {
		return false
	}
	for _, x := range a {
		if !slices.Contains(b, x) {
			return false
		}
	}
	return true
}
