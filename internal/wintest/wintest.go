// Package wintest helps Windows tests that run under Wine
// (scripts/test-windows.sh) as well as on Windows: Wine lacks parts of the
// API (every winipcfg create/set/delete, HCN), so tests that need them skip
// there, saying why.
package wintest

import "testing"

// Wine reports whether the process runs under Wine (ntdll exports
// wine_get_version); false off Windows.
func Wine() bool { return wine() }

// SkipUnderWine skips t under Wine with the reason (what Wine lacks).
func SkipUnderWine(t testing.TB, reason string) {
	t.Helper()
	if Wine() {
		t.Skipf("under Wine: %s", reason)
	}
}
