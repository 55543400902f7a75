//go:build windows

package winip_test

import (
	"errors"
	"net/netip"
	"testing"

	"github.com/zlmesh/zlmesh/internal/wintest"
	"github.com/zlmesh/zlmesh/tun/winip"
	"golang.zx2c4.com/wireguard/windows/tunnel/winipcfg"
)

// The real helper's reads, against this machine's (or Wine's) interfaces:
// every interface alias resolves to its own LUID, and listing its
// addresses and routes works and gives valid prefixes.
func TestSystemReads(t *testing.T) {
	rows, err := winipcfg.GetIfTable2Ex(winipcfg.MibIfEntryNormal)
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) == 0 {
		t.Fatal("no interfaces")
	}
	h := winip.System()
	for i := range rows {
		alias := rows[i].Alias()
		luid, err := h.LUID(alias)
		if err != nil {
			t.Fatalf("LUID(%q): %v", alias, err)
		}
		if luid != winip.LUID(rows[i].InterfaceLUID) {
			// Two interfaces may share an alias only if Windows lets
			// them; the first one wins.
			t.Logf("LUID(%q) = %#x, row has %#x", alias, luid, rows[i].InterfaceLUID)
		}
		addrs, err := h.Addresses(luid)
		if err != nil {
			t.Fatalf("Addresses(%q): %v", alias, err)
		}
		for _, a := range addrs {
			if !a.IsValid() {
				t.Errorf("%q: invalid address %v", alias, a)
			}
		}
		routes, err := h.Routes(luid)
		if err != nil {
			t.Fatalf("Routes(%q): %v", alias, err)
		}
		for _, r := range routes {
			if !r.Dst.IsValid() {
				t.Errorf("%q: route with invalid destination %+v", alias, r)
			}
		}
		t.Logf("%q luid %#x: %d addresses %v, %d routes", alias, luid, len(addrs), addrs, len(routes))
	}
}

// A missing interface is ErrLinkNotFound, before anything would change.
func TestSystemNoSuchInterface(t *testing.T) {
	h := winip.System()
	const name = "zlmesh-test-missing"
	if _, err := h.LUID(name); !errors.Is(err, winip.ErrLinkNotFound) {
		t.Errorf("LUID: %v, want ErrLinkNotFound", err)
	}
	if err := winip.SetAddress(h, name, netip.MustParsePrefix("10.200.1.1/24")); !errors.Is(err, winip.ErrLinkNotFound) {
		t.Errorf("SetAddress: %v, want ErrLinkNotFound", err)
	}
	if err := winip.SetRoutes(h, name, nil, 90); !errors.Is(err, winip.ErrLinkNotFound) {
		t.Errorf("SetRoutes: %v, want ErrLinkNotFound", err)
	}
	if err := winip.Cleanup(h, name); err != nil {
		t.Errorf("Cleanup of a missing interface: %v", err)
	}
}

// Changing a real adapter needs a Wintun adapter and Administrator rights;
// under Wine every winipcfg create/set/delete panics (missing iphlpapi
// functions), so the logic is tested against winiptest.Fake instead.
func TestSystemMutations(t *testing.T) {
	wintest.SkipUnderWine(t, "winipcfg Create/Set/Delete panic (iphlpapi functions Wine 8.0 lacks); the logic is tested against winiptest.Fake")
	t.Skip("needs a Wintun adapter and Administrator rights: run the node on Windows")
}
