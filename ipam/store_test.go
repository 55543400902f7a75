package ipam_test

import (
	"encoding/json"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/zlmesh/zlmesh/ipam"
	"github.com/zlmesh/zlmesh/ipam/ipamtest"
)

func TestFileStoreMissingIsEmpty(t *testing.T) {
	s := ipam.NewFileStore(filepath.Join(t.TempDir(), "ipam.json"))
	st, err := s.Load()
	if err != nil || !reflect.DeepEqual(st, ipam.State{}) {
		t.Fatalf("Load of a missing file = %+v, %v; want an empty state", st, err)
	}
}

func TestFileStoreReload(t *testing.T) {
	p := defaultPool(t)
	path := filepath.Join(t.TempDir(), "ipam.json")
	a, err := ipam.NewAllocator(ipam.NewFileStore(path), p)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.SetClaim(nodeClaim("10.200.3.0/24")); err != nil {
		t.Fatal(err)
	}
	for _, s := range [][2]string{{"web", "w1"}, {"web", "w2"}, {"db", "d1"}, {"web", "w3"}} {
		mustAllocate(t, a, s[0], s[1])
	}
	if _, _, err := a.Release("w2"); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("state file: %v %v", fi, err)
	}

	b, err := ipam.NewAllocator(ipam.NewFileStore(path), p)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(a.State(), b.State()) {
		t.Fatalf("reloaded state differs:\n%+v\n%+v", b.State(), a.State())
	}
	if !reflect.DeepEqual(a.Leases(), b.Leases()) {
		t.Fatalf("reloaded leases differ")
	}
	// Both continue the same way: the indices were rebuilt from the file.
	la, lb := mustAllocate(t, a, "web", "w4"), mustAllocate(t, b, "web", "w4")
	if la != lb || la.Addr != pfx("10.200.3.35/27") {
		t.Fatalf("after reload w4 got %s, original %s", lb.Addr, la.Addr)
	}
	if l := mustAllocate(t, b, "cache", "c1"); l.Addr != pfx("10.200.3.98/27") {
		t.Fatalf("after reload cache got %s", l.Addr)
	}
}

func TestFileStoreCorrupt(t *testing.T) {
	cases := map[string]string{
		"garbage":       "{not json",
		"empty file":    "",
		"unknown field": `{"claim":null,"nodes":{}}`,
		"bad prefix":    `{"slices":{"web":"10.200.3.32/99"}}`,
		"bad time":      `{"claim":{"node":"k","subnet":"10.200.3.0/24","claimed_at":"yesterday"}}`,
		"wrong type":    `{"leases":[]}`,
		"trailing data": `{} {"leases":{}}`,
	}
	for name, body := range cases {
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "ipam.json")
			if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
				t.Fatal(err)
			}
			st, err := ipam.NewFileStore(path).Load()
			if err == nil {
				t.Fatalf("Load of %q = %+v, want an error", body, st)
			}
			if !strings.Contains(err.Error(), path) {
				t.Fatalf("error %q does not name the file", err)
			}
			if _, err := ipam.NewAllocator(ipam.NewFileStore(path), defaultPool(t)); err == nil || !strings.Contains(err.Error(), path) {
				t.Fatalf("NewAllocator = %v, want the file's error", err)
			}
		})
	}
}

func TestFileStoreSaveError(t *testing.T) {
	path := filepath.Join(t.TempDir(), "missing-dir", "ipam.json")
	a, err := ipam.NewAllocator(ipam.NewFileStore(path), defaultPool(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := a.SetClaim(nodeClaim("10.200.3.0/24")); err == nil || !strings.Contains(err.Error(), path) {
		t.Fatalf("SetClaim into a missing directory = %v, want an error naming %s", err, path)
	}
	if _, ok := a.Claim(); ok {
		t.Fatalf("claim kept after a failed save")
	}
}

func TestLoadFailingStore(t *testing.T) {
	st := ipamtest.NewStore()
	boom := errors.New("unreadable")
	st.FailLoad(boom)
	if _, err := ipam.NewAllocator(st, defaultPool(t)); !errors.Is(err, boom) {
		t.Fatalf("NewAllocator = %v, want %v", err, boom)
	}
}

// goodState is a consistent state on 10.200.3.0/24 of the default pool.
func goodState() ipam.State {
	c := nodeClaim("10.200.3.0/24")
	return ipam.State{
		Claim:  &c,
		Slices: map[string]netip.Prefix{"web": pfx("10.200.3.32/27"), "db": pfx("10.200.3.64/27")},
		Leases: map[string]ipam.Lease{
			"w1": lease("web", "w1", "10.200.3.34/27", "10.200.3.33/27"),
			"w2": lease("web", "w2", "10.200.3.40/27", "10.200.3.33/27"),
			"d1": lease("db", "d1", "10.200.3.66/27", "10.200.3.65/27"),
		},
	}
}

func TestLoadInconsistent(t *testing.T) {
	cases := []struct {
		name      string
		edit      func(*ipam.State)
		wantInErr string // "" means it loads
	}{
		{"good", func(*ipam.State) {}, ""},
		{"empty", func(s *ipam.State) { *s = ipam.State{} }, ""},
		{"claim only", func(s *ipam.State) { s.Slices, s.Leases = nil, nil }, ""},
		{"leases without claim", func(s *ipam.State) { s.Claim = nil }, "no claim"},
		{"claim reserved", func(s *ipam.State) { s.Claim.Subnet = pfx("10.200.255.0/24") }, "reserved"},
		{"claim wrong length", func(s *ipam.State) { s.Claim.Subnet = pfx("10.200.2.0/23") }, "not a /24"},
		{"slice outside claim", func(s *ipam.State) { s.Slices["db"] = pfx("10.200.4.64/27") }, "slice 10.200.4.64/27 of service db"},
		{"slice wrong length", func(s *ipam.State) { s.Slices["db"] = pfx("10.200.3.64/26") }, "not a masked /27"},
		{"slice not masked", func(s *ipam.State) { s.Slices["db"] = pfx("10.200.3.65/27") }, "not a masked /27"},
		{"slice zero", func(s *ipam.State) { s.Slices["db"] = netip.Prefix{} }, "service db"},
		{"slice 0", func(s *ipam.State) { s.Slices["db"] = pfx("10.200.3.0/27") }, "node's own"},
		{"slice twice", func(s *ipam.State) { s.Slices["db"] = pfx("10.200.3.32/27") }, "both services db and web"},
		{"slice without lease", func(s *ipam.State) { s.Slices["cache"] = pfx("10.200.3.96/27") }, "service cache has no lease"},
		{"empty service name", func(s *ipam.State) { s.Slices[""] = pfx("10.200.3.96/27") }, "empty service name"},
		{"lease key differs", func(s *ipam.State) { l := s.Leases["w1"]; l.Container = "x"; s.Leases["w1"] = l }, `"w1" names container "x"`},
		{"lease without slice", func(s *ipam.State) { l := s.Leases["w1"]; l.Service = "api"; s.Leases["w1"] = l }, `service "api", which has no slice`},
		{"lease outside slice", func(s *ipam.State) { s.Leases["w1"] = lease("web", "w1", "10.200.3.66/27", "10.200.3.33/27") }, "not inside slice 10.200.3.32/27"},
		{"lease wrong length", func(s *ipam.State) { s.Leases["w1"] = lease("web", "w1", "10.200.3.34/24", "10.200.3.33/27") }, "not inside slice"},
		{"lease on network", func(s *ipam.State) { s.Leases["w1"] = lease("web", "w1", "10.200.3.32/27", "10.200.3.33/27") }, "network, gateway or broadcast"},
		{"lease on gateway", func(s *ipam.State) { s.Leases["w1"] = lease("web", "w1", "10.200.3.33/27", "10.200.3.33/27") }, "network, gateway or broadcast"},
		{"lease on broadcast", func(s *ipam.State) { s.Leases["w1"] = lease("web", "w1", "10.200.3.63/27", "10.200.3.33/27") }, "network, gateway or broadcast"},
		{"wrong gateway", func(s *ipam.State) { s.Leases["w1"] = lease("web", "w1", "10.200.3.34/27", "10.200.3.62/27") }, "gateway 10.200.3.62/27"},
		{"address twice", func(s *ipam.State) { s.Leases["w2"] = lease("web", "w2", "10.200.3.34/27", "10.200.3.33/27") }, "both containers w1 and w2"},
		{"ipv6 lease", func(s *ipam.State) { s.Leases["w1"] = lease("web", "w1", "fd00::2/27", "10.200.3.33/27") }, "not inside slice"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			st := goodState()
			tc.edit(&st)
			a, err := ipam.NewAllocator(ipamtest.NewStoreWith(st), defaultPool(t))
			if tc.wantInErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				if !reflect.DeepEqual(a.State(), st.Clone()) {
					t.Fatalf("loaded %+v, stored %+v", a.State(), st)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantInErr) {
				t.Fatalf("NewAllocator = %v, want an error containing %q", err, tc.wantInErr)
			}
		})
	}
}

// FuzzFileStoreLoad: any bytes in the state file either fail to load (with
// an error, never a panic) or give a state that NewAllocator rejects with an
// error or accepts as consistent; an accepted state survives a save and a
// reload unchanged.
func FuzzFileStoreLoad(f *testing.F) {
	good, _ := json.Marshal(goodState())
	f.Add(good)
	f.Add([]byte(`{}`))
	f.Add([]byte(`null`))
	f.Add([]byte(``))
	f.Add([]byte(`{"claim":{"node":"k","name":"n","subnet":"10.200.3.0/24","claimed_at":"2026-11-27T09:00:00Z","renewed_at":"2026-11-27T09:00:00Z"}}`))
	f.Add([]byte(`{"slices":{"web":"10.200.3.32/27"},"leases":{"w":{"service":"web","container":"w","addr":"10.200.3.34/27","gateway":"10.200.3.33/27"}}}`))
	f.Add([]byte(`{"leases":{"w":{"addr":"::ffff:10.200.3.34/27"}}}`))
	p := ipam.DefaultPool()
	f.Fuzz(func(t *testing.T, data []byte) {
		dir := t.TempDir()
		path := filepath.Join(dir, "ipam.json")
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		st, err := ipam.NewFileStore(path).Load()
		if err != nil {
			return
		}
		a, err := ipam.NewAllocator(ipam.NewFileStore(path), p)
		if err != nil {
			return
		}
		mem := ipamtest.NewStoreWith(st)
		if _, err := ipam.NewAllocator(mem, p); err != nil {
			t.Fatalf("same state loads from a file but not from memory: %v", err)
		}
		checkInvariants(t, mustReload(t, mem, p), p, mem)
		// Save through the file and read back: same state.
		path2 := filepath.Join(dir, "again.json")
		if err := ipam.NewFileStore(path2).Save(a.State()); err != nil {
			t.Fatal(err)
		}
		b, err := ipam.NewAllocator(ipam.NewFileStore(path2), p)
		if err != nil {
			t.Fatalf("saved state does not load: %v", err)
		}
		if !sameState(a.State(), b.State()) {
			t.Fatalf("state changed through a save:\n%+v\n%+v", a.State(), b.State())
		}
	})
}

func mustReload(t *testing.T, s *ipamtest.Store, p *ipam.Pool) *ipam.Allocator {
	a, err := ipam.NewAllocator(s, p)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// sameState compares states with time.Time.Equal for the claim's times (a
// fuzzed zone offset survives JSON as an offset, not as the same *Location).
func sameState(a, b ipam.State) bool {
	if (a.Claim == nil) != (b.Claim == nil) {
		return false
	}
	if a.Claim != nil {
		x, y := *a.Claim, *b.Claim
		if !x.ClaimedAt.Equal(y.ClaimedAt) || !x.RenewedAt.Equal(y.RenewedAt) {
			return false
		}
		x.ClaimedAt, x.RenewedAt = y.ClaimedAt, y.RenewedAt
		if x != y {
			return false
		}
	}
	return reflect.DeepEqual(a.Slices, b.Slices) && reflect.DeepEqual(a.Leases, b.Leases)
}
