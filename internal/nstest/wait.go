//go:build linux

package nstest

import (
	"net/netip"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// WaitLocal waits until the namespace's kernel takes packets to addr as
// its own (a route lookup for addr gives a local route), or fails t after 5
// seconds. An IPv6 address counts as local only once the kernel's address
// work has run, a few milliseconds after it was added, even with
// IFA_F_NODAD; until then packets to it are dropped (Ip6InAddrErrors).
func (ns *NS) WaitLocal(t testing.TB, addr netip.Addr) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		routes, err := ns.NL.RouteGet(addr.AsSlice())
		if err == nil && len(routes) > 0 && routes[0].Type == unix.RTN_LOCAL {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s in %s: not local after 5s (routes %v, err %v)", addr, ns.Name, routes, err)
		}
		time.Sleep(2 * time.Millisecond)
	}
}
