package ipam_test

import (
	"fmt"
	"path/filepath"
	"testing"

	"github.com/zlmesh/zlmesh/ipam"
	"github.com/zlmesh/zlmesh/ipam/ipamtest"
)

// nullStore keeps nothing: it measures the allocator alone.
type nullStore struct{}

func (nullStore) Load() (ipam.State, error) { return ipam.State{}, nil }
func (nullStore) Save(ipam.State) error     { return nil }

// loadedNullStore loads benchState once and then keeps nothing.
type loadedNullStore struct{ nullStore }

var benchState ipam.State

func (loadedNullStore) Load() (ipam.State, error) { return benchState.Clone(), nil }

// filled returns the state of an allocator with n leases in ten services.
func filled(b *testing.B, p *ipam.Pool, n int) ipam.State {
	a, err := ipam.NewAllocator(nullStore{}, p)
	if err != nil {
		b.Fatal(err)
	}
	if err := a.SetClaim(nodeClaim("10.3.0.0/16")); err != nil {
		b.Fatal(err)
	}
	for i := range n {
		if _, err := a.Allocate(fmt.Sprint("svc", i%10), fmt.Sprint("c", i)); err != nil {
			b.Fatal(err)
		}
	}
	benchState = a.State()
	return benchState
}

// BenchmarkAllocateRelease measures one Allocate plus one Release with n
// leases present (in ten services of a /16 node subnet cut into /20 slices),
// so that growth with the number of leases shows. The new lease goes into a
// service whose slice is full up to it, the worst case for finding the
// lowest free address.
func BenchmarkAllocateRelease(b *testing.B) {
	p, err := ipam.NewPool(pfx("10.0.0.0/8"), 16, 20)
	if err != nil {
		b.Fatal(err)
	}
	// stores return a store holding st.
	stores := map[string]func(b *testing.B, st ipam.State) ipam.Store{
		"null": func(*testing.B, ipam.State) ipam.Store { return loadedNullStore{} },
		"fake": func(_ *testing.B, st ipam.State) ipam.Store { return ipamtest.NewStoreWith(st) },
		"file": func(b *testing.B, st ipam.State) ipam.Store {
			s := ipam.NewFileStore(filepath.Join(b.TempDir(), "ipam.json"))
			if err := s.Save(st); err != nil {
				b.Fatal(err)
			}
			return s
		},
	}
	for _, store := range []string{"null", "fake", "file"} {
		for _, n := range []int{10, 1000, 10000} {
			b.Run(fmt.Sprintf("store=%s/leases=%d", store, n), func(b *testing.B) {
				a, err := ipam.NewAllocator(stores[store](b, filled(b, p, n)), p)
				if err != nil {
					b.Fatal(err)
				}
				if len(a.Leases()) != n {
					b.Fatalf("%d leases, want %d", len(a.Leases()), n)
				}
				b.ReportAllocs()
				b.ResetTimer()
				for b.Loop() {
					if _, err := a.Allocate("svc0", "extra"); err != nil {
						b.Fatal(err)
					}
					if _, _, err := a.Release("extra"); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}
