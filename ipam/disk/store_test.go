package disk_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/zlmesh/zlmesh/internal/journal"
	"github.com/zlmesh/zlmesh/ipam"
	"github.com/zlmesh/zlmesh/ipam/disk"
	"github.com/zlmesh/zlmesh/ipam/ipamtest"
)

var (
	pfx  = netip.MustParsePrefix
	addr = netip.MustParseAddr
	t0   = time.Date(2026, 11, 27, 9, 0, 0, 0, time.UTC)
)

func blockClaim(b string) ipam.Claim {
	return ipam.Claim{Node: "key-a", Name: "host-a", Block: pfx(b), ClaimedAt: t0, RenewedAt: t0}
}

func claimsOf(bs ...string) []ipam.Claim {
	var out []ipam.Claim
	for _, b := range bs {
		out = append(out, blockClaim(b))
	}
	return out
}

// newStore returns the store at path for the default block prefix, closed
// at the end of the test.
func newStore(t testing.TB, path string) *disk.Store {
	s := disk.New(path, ipam.DefaultBlockBits)
	t.Cleanup(func() { s.Close() })
	return s
}

// openAlloc opens an Allocator of the default pool on the store at path.
func openAlloc(t testing.TB, path string) *ipam.Allocator {
	t.Helper()
	a, err := ipam.NewAllocator(newStore(t, path), ipam.DefaultPool())
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func mustAllocate(t testing.TB, a *ipam.Allocator, service, container string) ipam.Lease {
	t.Helper()
	l, err := a.Allocate(service, container)
	if err != nil {
		t.Fatalf("Allocate(%s, %s): %v", service, container, err)
	}
	return l
}

// goodState is a consistent state of the default pool.
func goodState() ipam.State {
	return ipam.State{
		Version: ipam.StateVersion,
		Claims:  claimsOf("10.200.3.0/26", "10.200.9.64/26"),
		Leases: map[string]ipam.Lease{
			"w1": {Service: "web", Container: "w1", Addr: addr("10.200.3.2")},
			"w2": {Service: "web", Container: "w2", Addr: addr("10.200.3.40")},
			"d1": {Service: "db", Container: "d1", Addr: addr("10.200.9.65")},
		},
	}
}

// sameState compares states with time.Time.Equal for the claims' times (a
// fuzzed zone offset survives JSON as an offset, not as the same *Location).
func sameState(a, b ipam.State) bool {
	if a.Version != b.Version || len(a.Claims) != len(b.Claims) {
		return false
	}
	for i := range a.Claims {
		x, y := a.Claims[i], b.Claims[i]
		if !x.ClaimedAt.Equal(y.ClaimedAt) || !x.RenewedAt.Equal(y.RenewedAt) {
			return false
		}
		x.ClaimedAt, x.RenewedAt = y.ClaimedAt, y.RenewedAt
		if x != y {
			return false
		}
	}
	return reflect.DeepEqual(a.Clone().Leases, b.Clone().Leases)
}

func TestMissingIsEmpty(t *testing.T) {
	s := newStore(t, filepath.Join(t.TempDir(), "ipam.json"))
	st, err := s.Load()
	if err != nil || !reflect.DeepEqual(st, ipam.State{}) || s.Migrated {
		t.Fatalf("Load of a missing file = %+v, %v; want an empty state", st, err)
	}
}

func TestReload(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "ipam.json")
	a := openAlloc(t, path)
	if err := a.SetClaims(claimsOf("10.200.3.0/26")); err != nil {
		t.Fatal(err)
	}
	for i := range 65 { // into a second block
		if _, err := a.Allocate("web", fmt.Sprint("w", i)); errors.Is(err, ipam.ErrFull) {
			if err := a.AddBlock(blockClaim("10.200.3.64/26")); err != nil {
				t.Fatal(err)
			}
			mustAllocate(t, a, "web", fmt.Sprint("w", i))
		} else if err != nil {
			t.Fatal(err)
		}
	}
	if _, _, err := a.Release("w7"); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(path); err != nil || runtime.GOOS != "windows" && fi.Mode().Perm() != 0o600 {
		t.Fatalf("state file: %v %v", fi, err) // Windows has no Unix modes
	}
	var onDisk map[string]any
	data, _ := os.ReadFile(path)
	if err := json.Unmarshal(data, &onDisk); err != nil || onDisk["version"] != float64(ipam.StateVersion) {
		t.Fatalf("state file %s: %v, version %v", data, err, onDisk["version"])
	}

	// The reload reads a copy: a is still open and goes on below, and two
	// stores on one path must not be used at once (Windows also refuses
	// to fold a journal another handle holds open).
	b := openAlloc(t, filepath.Join(copyDir(t, dir), "ipam.json"))
	if !reflect.DeepEqual(a.State(), b.State()) {
		t.Fatalf("reloaded state differs:\n%+v\n%+v", b.State(), a.State())
	}
	if !reflect.DeepEqual(a.Usage(), b.Usage()) || a.NodeAddr() != b.NodeAddr() {
		t.Fatalf("reloaded usage differs: %v %v", b.Usage(), a.Usage())
	}
	// Both continue the same way: the indices were rebuilt from the file.
	la, lb := mustAllocate(t, a, "web", "x1"), mustAllocate(t, b, "web", "x1")
	if la != lb || la.Addr != addr("10.200.3.9") {
		t.Fatalf("after reload x1 got %s, original %s", lb.Addr, la.Addr)
	}
	la, lb = mustAllocate(t, a, "web", "x2"), mustAllocate(t, b, "web", "x2")
	if la != lb || la.Addr != addr("10.200.3.69") {
		t.Fatalf("after reload x2 got %s, original %s", lb.Addr, la.Addr)
	}
}

func TestCorrupt(t *testing.T) {
	cases := []struct {
		name, body, wantInErr string
	}{
		{"garbage", "{not json", "does not parse"},
		{"empty file", "", "does not parse"},
		{"unknown field", `{"version":2,"nodes":{}}`, "unknown field"},
		{"bad prefix", `{"version":2,"claims":[{"node":"k","block":"10.200.3.0/99"}]}`, "does not parse"},
		{"bad time", `{"version":2,"claims":[{"node":"k","block":"10.200.3.0/26","claimed_at":"yesterday"}]}`, "does not parse"},
		{"bad address", `{"version":2,"leases":{"w":{"service":"web","container":"w","addr":"10.200.3.300"}}}`, "does not parse"},
		{"wrong type", `{"version":2,"leases":[]}`, "does not parse"},
		{"trailing data", `{"version":2} {"leases":{}}`, "data after"},
		{"newer version", `{"version":3}`, "state version 3"},
		{"no version", `{"leases":{}}`, "state version 0"},
		{"v1 unknown field", `{"claim":{"node":"k","subnet":"10.200.3.0/24","extra":1}}`, "unknown field"},
		{"v1 bad subnet", `{"claim":{"node":"k","subnet":"10.200.3.0/33"}}`, "does not parse"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "ipam.json")
			if err := os.WriteFile(path, []byte(tc.body), 0o600); err != nil {
				t.Fatal(err)
			}
			st, err := newStore(t, path).Load()
			if err == nil {
				t.Fatalf("Load of %q = %+v, want an error", tc.body, st)
			}
			if !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), tc.wantInErr) {
				t.Fatalf("error %q does not name the file and %q", err, tc.wantInErr)
			}
			if _, err := ipam.NewAllocator(newStore(t, path), ipam.DefaultPool()); err == nil || !strings.Contains(err.Error(), path) {
				t.Fatalf("NewAllocator = %v, want the file's error", err)
			}
			if got, _ := os.ReadFile(path); string(got) != tc.body {
				t.Fatalf("a file that does not load was rewritten: %q", got)
			}
		})
	}
}

// TestInconsistentNamesFile: a state that parses but does not fit the pool
// is refused by NewAllocator with an error naming the file.
func TestInconsistentNamesFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ipam.json")
	st := goodState()
	st.Leases["x"] = ipam.Lease{Service: "web", Container: "x", Addr: addr("10.200.3.1")}
	if err := newStore(t, path).Save(st); err != nil {
		t.Fatal(err)
	}
	if _, err := ipam.NewAllocator(newStore(t, path), ipam.DefaultPool()); err == nil || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "node's own") {
		t.Fatalf("NewAllocator = %v, want an error naming %s and the node's address", err, path)
	}
}

func TestSaveError(t *testing.T) {
	path := filepath.Join(t.TempDir(), "missing-dir", "ipam.json")
	a, err := ipam.NewAllocator(newStore(t, path), ipam.DefaultPool())
	if err != nil {
		t.Fatal(err)
	}
	if err := a.AddBlock(blockClaim("10.200.3.0/26")); err == nil || !strings.Contains(err.Error(), path) {
		t.Fatalf("AddBlock into a missing directory = %v, want an error naming %s", err, path)
	}
	if len(a.Claims()) != 0 || a.NodeAddr().IsValid() {
		t.Fatalf("claim kept after a failed save: %v", a.Claims())
	}
	if err := newStore(t, path).SaveLease(goodState(), "w1", goodState().Leases["w1"], true); err == nil || !strings.Contains(err.Error(), "w1") {
		t.Fatalf("SaveLease into a missing directory = %v", err)
	}
}

// copyDir copies the regular files of dir into a new temporary directory:
// a picture of the disk at one moment, as a crash would leave it.
func copyDir(t *testing.T, dir string) string {
	t.Helper()
	out := t.TempDir()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(out, e.Name()), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return out
}

// The store records a lease change as one journal record, not a rewrite of
// the state file; the state survives a reload at every step, across the
// journal being folded into the file, and a crash image taken after any
// step loads to exactly the state of that step.
func TestJournal(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "ipam.json")
	a := openAlloc(t, path)
	if err := a.SetClaims(claimsOf("10.200.3.0/26", "10.200.3.64/26")); err != nil {
		t.Fatal(err)
	}
	snap, _ := os.ReadFile(path)
	mustAllocate(t, a, "web", "w0")
	if now, _ := os.ReadFile(path); !bytes.Equal(now, snap) {
		t.Fatalf("Allocate rewrote the state file")
	}
	if j, err := os.ReadFile(path + ".log"); err != nil || !bytes.Contains(j, []byte(`"w0"`)) {
		t.Fatalf("journal after Allocate: %q, %v", j, err)
	}
	type image struct {
		dir  string
		want ipam.State
	}
	var images []image
	// Enough changes to fold the journal into the file a few times.
	for i := range 700 {
		svc := []string{"web", "db", "api", "cache", "mq"}[i%5]
		ctr := fmt.Sprintf("%s%d", svc, i%40)
		if _, ok := a.Lease(ctr); ok {
			if _, _, err := a.Release(ctr); err != nil {
				t.Fatal(err)
			}
		} else if _, err := a.Allocate(svc, ctr); err != nil {
			t.Fatal(err)
		}
		if i%97 == 0 {
			images = append(images, image{copyDir(t, dir), a.State()})
		}
	}
	images = append(images, image{copyDir(t, dir), a.State()})
	b := openAlloc(t, filepath.Join(copyDir(t, dir), "ipam.json")) // a copy: a goes on below
	if !sameState(a.State(), b.State()) {
		t.Fatalf("reloaded state differs:\n%+v\n%+v", b.State(), a.State())
	}
	for i, im := range images {
		c := openAlloc(t, filepath.Join(im.dir, "ipam.json"))
		if !sameState(c.State(), im.want) {
			t.Fatalf("image %d loads to\n%+v\nwant\n%+v", i, c.State(), im.want)
		}
	}
	// The journal stays short: it is folded into the file.
	j, _ := os.ReadFile(path + ".log")
	if n := bytes.Count(j, []byte("\n")); n > 300 {
		t.Fatalf("journal has %d lines after 700 changes", n)
	}
	// A block change rewrites the file and empties the journal.
	if err := a.AddBlock(blockClaim("10.200.7.0/26")); err != nil {
		t.Fatal(err)
	}
	j, _ = os.ReadFile(path + ".log")
	if n := bytes.Count(j, []byte("\n")); n != 1 {
		t.Fatalf("journal has %d lines after a block change, want the header", n)
	}
}

// A crash during SaveLease (a torn journal record) loads the state before
// it; a crash between the two steps of folding the journal (new file
// written, old journal left) loads the state after it.
func TestCrash(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "ipam.json")
	a := openAlloc(t, path)
	if err := a.SetClaims(claimsOf("10.200.3.0/26")); err != nil {
		t.Fatal(err)
	}
	mustAllocate(t, a, "web", "w1")
	mustAllocate(t, a, "web", "w2")
	before := a.State()
	img := copyDir(t, dir)
	f, _ := os.OpenFile(filepath.Join(img, "ipam.json.log"), os.O_WRONLY|os.O_APPEND, 0)
	f.WriteString(`0badf00d {"put":{"service":"web","contai`)
	f.Close()
	b := openAlloc(t, filepath.Join(img, "ipam.json"))
	if !sameState(b.State(), before) {
		t.Fatalf("torn record:\n%+v\nwant\n%+v", b.State(), before)
	}
	// The allocator goes on past the torn record.
	mustAllocate(t, b, "db", "d1")
	c := openAlloc(t, filepath.Join(img, "ipam.json"))
	if !sameState(c.State(), b.State()) {
		t.Fatalf("after a torn record and an allocation:\n%+v\nwant\n%+v", c.State(), b.State())
	}

	// Fold: write the file as the fold would, leave the old journal. Its
	// records (w2 released, w3 allocated) must not be replayed over it:
	// w3 took w2's address, and replaying "put w2" would give it twice.
	if _, _, err := a.Release("w2"); err != nil {
		t.Fatal(err)
	}
	mustAllocate(t, a, "web", "w3")
	after := a.State()
	img = copyDir(t, dir)
	data, _ := json.MarshalIndent(after, "", "  ")
	if err := os.WriteFile(filepath.Join(img, "ipam.json"), data, 0o600); err != nil {
		t.Fatal(err)
	}
	d := openAlloc(t, filepath.Join(img, "ipam.json"))
	if !sameState(d.State(), after) {
		t.Fatalf("stale journal after a fold:\n%+v\nwant\n%+v", d.State(), after)
	}
}

func record(s string) string {
	return fmt.Sprintf("%08x %s\n", crc32.Checksum([]byte(s), crc32.MakeTable(crc32.Castagnoli)), s)
}

func TestJournalCorrupt(t *testing.T) {
	cases := []struct {
		name, rec, wantInErr string
	}{
		{"not json", "not json", "does not parse"},
		{"unknown field", `{"put":null,"extra":1}`, "unknown field"},
		{"neither", `{}`, "exactly one of put and del"},
		{"both", `{"put":{"container":"x","addr":"10.200.3.34"},"del":"y"}`, "exactly one of put and del"},
		{"no container", `{"put":{"service":"web","addr":"10.200.3.34"}}`, "without container"},
		{"no address", `{"put":{"service":"web","container":"x"}}`, "without container or address"},
		{"bad address", `{"put":{"container":"x","addr":"10.200.3.340"}}`, "does not parse"},
		{"v1 address", `{"put":{"service":"web","container":"x","addr":"10.200.3.34/27"}}`, "does not parse"},
		{"trailing data", `{"del":"x"} {}`, "data after"},
		{"wrong type", `{"del":7}`, "does not parse"},
		{"lease elsewhere", `{"put":{"service":"web","container":"x","addr":"10.200.9.34"}}`, "in none of the node's blocks"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "ipam.json")
			a := openAlloc(t, path)
			if err := a.SetClaims(claimsOf("10.200.3.0/26")); err != nil {
				t.Fatal(err)
			}
			mustAllocate(t, a, "web", "w1")
			// A complete record (its CRC matches), so not a torn tail.
			f, _ := os.OpenFile(path+".log", os.O_WRONLY|os.O_APPEND, 0)
			f.WriteString(record(tc.rec))
			f.Close()
			_, err := ipam.NewAllocator(newStore(t, path), ipam.DefaultPool())
			if err == nil || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), tc.wantInErr) {
				t.Fatalf("NewAllocator = %v, want an error naming %s and %q", err, path, tc.wantInErr)
			}
		})
	}
}

// FuzzFileStoreLoad: any bytes in the state file either fail to load (with
// an error, never a panic) or give a state that NewAllocator rejects with an
// error or accepts; an accepted state loads the same from memory and
// survives a save and a reload unchanged. Version-1 files go through the
// migration.
func FuzzFileStoreLoad(f *testing.F) {
	good, _ := json.Marshal(goodState())
	f.Add(good)
	f.Add([]byte(`{"version":2}`))
	f.Add([]byte(`{}`))
	f.Add([]byte(`null`))
	f.Add([]byte(``))
	f.Add([]byte(`{"version":2,"claims":[{"node":"k","name":"n","block":"10.200.3.0/26","claimed_at":"2026-11-27T09:00:00Z","renewed_at":"2026-11-27T09:00:00+01:00"}]}`))
	f.Add([]byte(`{"version":2,"leases":{"w":{"addr":"::ffff:10.200.3.34"}}}`))
	f.Add([]byte(v1Snapshot))
	f.Add([]byte(`{"claim":{"node":"k","subnet":"10.200.3.0/24"},"leases":{"w":{"service":"web","container":"w","addr":"10.200.3.63/27"}}}`))
	f.Add([]byte(`{"slices":{}}`))
	p := ipam.DefaultPool()
	f.Fuzz(func(t *testing.T, data []byte) {
		dir := t.TempDir()
		path := filepath.Join(dir, "ipam.json")
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		st, err := newStore(t, path).Load()
		if err != nil {
			if strings.Contains(err.Error(), "\n") {
				t.Fatalf("error is not one line: %q", err)
			}
			return
		}
		a, err := ipam.NewAllocator(newStore(t, path), p)
		if err != nil {
			return
		}
		if _, err := ipam.NewAllocator(ipamtest.NewStoreWith(st), p); err != nil {
			t.Fatalf("same state loads from a file but not from memory: %v", err)
		}
		// Save through another file and read back: same state.
		path2 := filepath.Join(dir, "again.json")
		if err := newStore(t, path2).Save(a.State()); err != nil {
			t.Fatal(err)
		}
		b, err := ipam.NewAllocator(newStore(t, path2), p)
		if err != nil {
			t.Fatalf("saved state does not load: %v", err)
		}
		if !sameState(a.State(), b.State()) {
			t.Fatalf("state changed through a save:\n%+v\n%+v", a.State(), b.State())
		}
	})
}

// FuzzFileStoreJournal: any journal body after a valid header either fails
// to load with an error, or gives a state that NewAllocator rejects with an
// error or accepts; an accepted state goes on (an allocation) and survives
// a reload.
func FuzzFileStoreJournal(f *testing.F) {
	good, _ := json.MarshalIndent(goodState(), "", "  ")
	f.Add([]byte(record(`{"del":"w1"}`)))
	f.Add([]byte(record(`{"put":{"service":"web","container":"w9","addr":"10.200.3.50"}}`)))
	f.Add([]byte(record(`{"put":{"service":"cache","container":"c1","addr":"10.200.9.66"}}`) + record(`{"del":"d1"}`)))
	f.Add([]byte(record(`{"put":{"service":"web","container":"w9","addr":"10.200.3.2"}}`)))
	f.Add([]byte(record(`{"put":{"service":"web","container":"w9","addr":"10.200.3.1"}}`)))
	f.Add([]byte(record(`{"del":"w1"}`) + `0badf00d {"put"`))
	p := ipam.DefaultPool()
	f.Fuzz(func(t *testing.T, body []byte) {
		dir := t.TempDir()
		path := filepath.Join(dir, "ipam.json")
		if err := os.WriteFile(path, good, 0o600); err != nil {
			t.Fatal(err)
		}
		sum := sha256.Sum256(good)
		hdr := "zlmesh-journal 1 " + hex.EncodeToString(sum[:]) + "\n"
		if err := os.WriteFile(path+".log", append([]byte(hdr), body...), 0o600); err != nil {
			t.Fatal(err)
		}
		a, err := ipam.NewAllocator(newStore(t, path), p)
		if err != nil {
			return
		}
		if _, err := ipam.NewAllocator(ipamtest.NewStoreWith(a.State()), p); err != nil {
			t.Fatalf("state loads from a file but not from memory: %v", err)
		}
		if _, err := a.Allocate("web", "fuzz-extra"); err != nil && !errors.Is(err, ipam.ErrFull) && !errors.Is(err, ipam.ErrExists) {
			t.Fatal(err)
		}
		b, err := ipam.NewAllocator(newStore(t, path), p)
		if err != nil {
			t.Fatalf("state does not reload after an allocation: %v", err)
		}
		if !sameState(a.State(), b.State()) {
			t.Fatalf("state changed through a reload:\n%+v\n%+v", a.State(), b.State())
		}
	})
}

// v1Snapshot is an ipam.json of the previous release: node subnet
// 10.200.3.0/24 (node address 10.200.3.1), /27 slices, leases with the
// slice's prefix length and gateway.
const v1Snapshot = `{
  "claim": {
    "node": "key-a",
    "name": "host-a",
    "subnet": "10.200.3.0/24",
    "claimed_at": "2026-11-27T09:00:00Z",
    "renewed_at": "2026-11-27T10:00:00Z"
  },
  "slices": {
    "cache": "10.200.3.192/27",
    "db": "10.200.3.64/27",
    "web": "10.200.3.32/27"
  },
  "leases": {
    "d1": {"service": "db", "container": "d1", "addr": "10.200.3.66/27", "gateway": "10.200.3.65/27"},
    "k1": {"service": "cache", "container": "k1", "addr": "10.200.3.194/27", "gateway": "10.200.3.193/27"},
    "w1": {"service": "web", "container": "w1", "addr": "10.200.3.34/27", "gateway": "10.200.3.33/27"},
    "w2": {"service": "web", "container": "w2", "addr": "10.200.3.35/27", "gateway": "10.200.3.33/27"}
  }
}
`

// v1Journal is the previous release's journal after v1Snapshot: a new
// service in a slice of its own, the cache container gone, web changed.
var v1Journal = []string{
	`{"put":{"service":"mq","container":"q1","addr":"10.200.3.130/27","gateway":"10.200.3.129/27"}}`,
	`{"del":"k1"}`,
	`{"put":{"service":"web","container":"w3","addr":"10.200.3.36/27","gateway":"10.200.3.33/27"}}`,
	`{"del":"w2"}`,
}

// writeV1 writes snapshot at path and records after it, framed as the
// previous release framed them (internal/journal, whose format did not
// change).
func writeV1(t *testing.T, path, snapshot string, records []string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(snapshot), 0o600); err != nil {
		t.Fatal(err)
	}
	if len(records) == 0 {
		return
	}
	l, _, _, err := journal.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	for _, r := range records {
		if err := l.Append([]byte(r)); err != nil {
			t.Fatal(err)
		}
	}
}

func v1Claims(blocks ...string) []ipam.Claim {
	out := claimsOf(blocks...)
	for i := range out {
		out[i].RenewedAt = t0.Add(time.Hour)
	}
	return out
}

func lease(service, container, a string) ipam.Lease {
	return ipam.Lease{Service: service, Container: container, Addr: addr(a)}
}

func TestMigrateV1(t *testing.T) {
	cases := []struct {
		name      string
		snapshot  string
		records   []string
		blockBits int
		want      ipam.State
	}{
		{"snapshot and journal", v1Snapshot, v1Journal, 26, ipam.State{
			Version: ipam.StateVersion,
			Claims:  v1Claims("10.200.3.0/26", "10.200.3.64/26", "10.200.3.128/26"),
			Leases: map[string]ipam.Lease{
				"w1": lease("web", "w1", "10.200.3.34"),
				"w3": lease("web", "w3", "10.200.3.36"),
				"d1": lease("db", "d1", "10.200.3.66"),
				"q1": lease("mq", "q1", "10.200.3.130"),
			},
		}},
		{"snapshot only", v1Snapshot, nil, 26, ipam.State{
			Version: ipam.StateVersion,
			Claims:  v1Claims("10.200.3.0/26", "10.200.3.64/26", "10.200.3.192/26"),
			Leases: map[string]ipam.Lease{
				"w1": lease("web", "w1", "10.200.3.34"),
				"w2": lease("web", "w2", "10.200.3.35"),
				"d1": lease("db", "d1", "10.200.3.66"),
				"k1": lease("cache", "k1", "10.200.3.194"),
			},
		}},
		{"blocks of the subnet's size", v1Snapshot, v1Journal, 24, ipam.State{
			Version: ipam.StateVersion,
			Claims: []ipam.Claim{{Node: "key-a", Name: "host-a", Block: pfx("10.200.3.0/24"),
				ClaimedAt: t0, RenewedAt: t0.Add(time.Hour)}},
			Leases: map[string]ipam.Lease{
				"w1": lease("web", "w1", "10.200.3.34"),
				"w3": lease("web", "w3", "10.200.3.36"),
				"d1": lease("db", "d1", "10.200.3.66"),
				"q1": lease("mq", "q1", "10.200.3.130"),
			},
		}},
		{"only the node's address", `{"claim":{"node":"key-a","name":"host-a","subnet":"10.200.7.0/24","claimed_at":"2026-11-27T09:00:00Z","renewed_at":"2026-11-27T10:00:00Z"}}`, nil, 26,
			ipam.State{Version: ipam.StateVersion, Claims: v1Claims("10.200.7.0/26")}},
		{"every container gone in the journal", `{"claim":{"node":"key-a","name":"host-a","subnet":"10.200.7.0/24","claimed_at":"2026-11-27T09:00:00Z","renewed_at":"2026-11-27T10:00:00Z"},"slices":{"web":"10.200.7.224/27"},"leases":{"w":{"service":"web","container":"w","addr":"10.200.7.226/27","gateway":"10.200.7.225/27"}}}`,
			[]string{`{"del":"w"}`}, 26, ipam.State{Version: ipam.StateVersion, Claims: v1Claims("10.200.7.0/26")}},
		{"no claim", `{"slices":{}}`, nil, 26, ipam.State{Version: ipam.StateVersion}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "ipam.json")
			writeV1(t, path, tc.snapshot, tc.records)
			s := disk.New(path, tc.blockBits)
			defer s.Close()
			got, err := s.Load()
			if err != nil {
				t.Fatal(err)
			}
			if !s.Migrated {
				t.Fatalf("Migrated not set")
			}
			if !reflect.DeepEqual(got.Clone(), tc.want.Clone()) {
				t.Fatalf("migrated to\n%+v\nwant\n%+v", got, tc.want)
			}
			// Rewritten in the current format at once, the old journal
			// replaced by an empty one.
			data, _ := os.ReadFile(path)
			var onDisk ipam.State
			if err := json.Unmarshal(data, &onDisk); err != nil || onDisk.Version != ipam.StateVersion || bytes.Contains(data, []byte("subnet")) {
				t.Fatalf("file after migration: %v\n%s", err, data)
			}
			if !reflect.DeepEqual(onDisk.Clone(), tc.want.Clone()) {
				t.Fatalf("file holds\n%+v\nwant\n%+v", onDisk, tc.want)
			}
			if j, err := os.ReadFile(path + ".log"); err == nil && bytes.Count(j, []byte("\n")) > 1 {
				t.Fatalf("old journal records left after migration:\n%s", j)
			}
			// A fresh store reads it as the current version.
			again := disk.New(path, tc.blockBits)
			defer again.Close()
			st2, err := again.Load()
			if err != nil || again.Migrated || !reflect.DeepEqual(st2.Clone(), tc.want.Clone()) {
				t.Fatalf("reload after migration: %+v, migrated %v, %v", st2, again.Migrated, err)
			}
		})
	}
}

// TestMigrateV1Allocator: the node starts on a previous release's state
// dir: the allocator loads the migrated state, every container keeps its
// address, the node keeps its own, new containers fill the holes (the old
// service slices' network and gateway addresses included), and the state
// goes on in the current format.
func TestMigrateV1Allocator(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "ipam.json")
	writeV1(t, path, v1Snapshot, v1Journal)
	s := newStore(t, path)
	a, err := ipam.NewAllocator(s, ipam.DefaultPool())
	if err != nil {
		t.Fatal(err)
	}
	if !s.Migrated {
		t.Fatalf("not migrated")
	}
	if a.NodeAddr() != addr("10.200.3.1") {
		t.Fatalf("NodeAddr = %s, want the old node address 10.200.3.1", a.NodeAddr())
	}
	want := map[string]string{"w1": "10.200.3.34", "w3": "10.200.3.36", "d1": "10.200.3.66", "q1": "10.200.3.130"}
	for ctr, w := range want {
		if l, ok := a.Lease(ctr); !ok || l.Addr != addr(w) {
			t.Fatalf("Lease(%s) = %+v %v, want %s", ctr, l, ok, w)
		}
	}
	if len(a.Leases()) != len(want) {
		t.Fatalf("%d leases after migration, want %d", len(a.Leases()), len(want))
	}
	wantUsage := []ipam.BlockUsage{{Block: pfx("10.200.3.0/26"), Leases: 2}, {Block: pfx("10.200.3.64/26"), Leases: 1}, {Block: pfx("10.200.3.128/26"), Leases: 1}}
	if got := a.Usage(); !reflect.DeepEqual(got, wantUsage) {
		t.Fatalf("Usage = %v, want %v", got, wantUsage)
	}
	if l := mustAllocate(t, a, "web", "n1"); l.Addr != addr("10.200.3.2") {
		t.Fatalf("first new container at %s, want 10.200.3.2", l.Addr)
	}
	b := openAlloc(t, path)
	if !reflect.DeepEqual(a.State(), b.State()) {
		t.Fatalf("reload after migration and an allocation:\n%+v\nwant\n%+v", b.State(), a.State())
	}
}

func TestMigrateV1Errors(t *testing.T) {
	claim := `"claim":{"node":"key-a","name":"host-a","subnet":"%s","claimed_at":"2026-11-27T09:00:00Z","renewed_at":"2026-11-27T10:00:00Z"}`
	cases := []struct {
		name      string
		snapshot  string
		records   []string
		blockBits int
		wantInErr string
		wantInLog bool // the error names the journal
	}{
		{"subnet smaller than a block", "{" + fmt.Sprintf(claim, "10.200.3.0/27") + "}", nil, 26, "node subnet 10.200.3.0/27 is smaller than a block of /26", false},
		{"block prefix 0 refuses", v1Snapshot, nil, 0, "previous release", false},
		{"leases but no claim", `{"slices":{"web":"10.200.3.32/27"},"leases":{"w1":{"service":"web","container":"w1","addr":"10.200.3.34/27","gateway":"10.200.3.33/27"}}}`, nil, 26, "1 leases but no node subnet", false},
		{"lease outside the subnet", "{" + fmt.Sprintf(claim, "10.200.3.0/24") + `,"leases":{"w1":{"service":"web","container":"w1","addr":"10.200.4.34/27","gateway":"10.200.4.33/27"}}}`, nil, 26, "outside the node subnet", false},
		{"lease on a block's first address", "{" + fmt.Sprintf(claim, "10.200.3.0/24") + `,"leases":{"w1":{"service":"web","container":"w1","addr":"10.200.3.48/27","gateway":"10.200.3.33/27"}}}`, nil, 28, "first or last address of block 10.200.3.48/28", false},
		{"lease on a block's last address", "{" + fmt.Sprintf(claim, "10.200.3.0/24") + `,"leases":{"w1":{"service":"web","container":"w1","addr":"10.200.3.47/27","gateway":"10.200.3.33/27"}}}`, nil, 28, "first or last address", false},
		{"journal record of neither kind", v1Snapshot, []string{`{}`}, 26, "record 1 of", true},
		{"journal record that does not parse", v1Snapshot, []string{`{"del":"k1"}`, `{"put":{"container":"x","addr":"nope"}}`}, 26, "record 2 of", true},
		{"journal record of an unknown field", v1Snapshot, []string{`{"del":"k1","when":1}`}, 26, "unknown field", true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "ipam.json")
			writeV1(t, path, tc.snapshot, tc.records)
			snap, _ := os.ReadFile(path)
			log, _ := os.ReadFile(path + ".log")
			s := disk.New(path, tc.blockBits)
			defer s.Close()
			st, err := s.Load()
			if err == nil {
				t.Fatalf("Load = %+v, want an error containing %q", st, tc.wantInErr)
			}
			if !strings.Contains(err.Error(), tc.wantInErr) || !strings.Contains(err.Error(), path) || strings.Contains(err.Error(), "\n") {
				t.Fatalf("error %q: want one line naming %s and %q", err, path, tc.wantInErr)
			}
			if tc.wantInLog && !strings.Contains(err.Error(), path+".log") {
				t.Fatalf("error %q does not name the journal", err)
			}
			// Nothing half made: the old files are as they were.
			if now, _ := os.ReadFile(path); !bytes.Equal(now, snap) {
				t.Fatalf("the old state file was rewritten:\n%s", now)
			}
			if now, _ := os.ReadFile(path + ".log"); !bytes.Equal(now, log) {
				t.Fatalf("the old journal was changed")
			}
			if _, err := ipam.NewAllocator(disk.New(path, tc.blockBits), ipam.DefaultPool()); err == nil || !strings.Contains(err.Error(), path) {
				t.Fatalf("NewAllocator = %v, want the error naming the file", err)
			}
		})
	}
}
