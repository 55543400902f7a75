package ipam_test

import (
	"errors"
	"fmt"
	"net/netip"
	"path/filepath"
	"testing"

	"github.com/zlmesh/zlmesh/ipam"
	"github.com/zlmesh/zlmesh/ipam/disk"
	"github.com/zlmesh/zlmesh/ipam/ipamtest"
)

// nullStore keeps nothing: it measures the allocator alone.
type nullStore struct{}

func (nullStore) Load() (ipam.State, error) { return ipam.State{}, nil }
func (nullStore) Save(ipam.State) error     { return nil }

// loadedNullStore loads st once and then keeps nothing.
type loadedNullStore struct {
	nullStore
	st ipam.State
}

func (s loadedNullStore) Load() (ipam.State, error) { return s.st.Clone(), nil }

// filled returns the state of an allocator of the default pool with n
// leases in ten services, grown block by block as a node grows (the next
// block after the last one, as PickNext picks).
func filled(b *testing.B, p *ipam.Pool, n int) ipam.State {
	b.Helper()
	a, err := ipam.NewAllocator(nullStore{}, p)
	if err != nil {
		b.Fatal(err)
	}
	if err := a.SetClaims(claimsOf("10.200.3.0/26")); err != nil {
		b.Fatal(err)
	}
	held := func(x netip.Prefix) bool {
		for _, c := range a.Claims() {
			if c.Block == x {
				return true
			}
		}
		return false
	}
	for i := range n {
		_, err := a.Allocate(fmt.Sprint("svc", i%10), fmt.Sprint("c", i))
		if errors.Is(err, ipam.ErrFull) {
			nb, perr := p.PickNext(held, blocksOf(a.Claims()), []byte("key-a"))
			if perr != nil {
				b.Fatal(perr)
			}
			if err := a.AddBlock(blockClaim(nb.String())); err != nil {
				b.Fatal(err)
			}
			_, err = a.Allocate(fmt.Sprint("svc", i%10), fmt.Sprint("c", i))
		}
		if err != nil {
			b.Fatal(err)
		}
	}
	return a.State()
}

// BenchmarkAllocateRelease measures one Allocate plus one Release with n
// leases present in the node's blocks of the default pool (1000 leases: 17
// blocks of /26), so that growth with the number of leases shows. The new
// lease goes into the last block, every block before it full: the worst
// case for finding the lowest free address. Stores: none (the allocator
// alone), the memory fake, and ipam/disk (an fsync'd journal record each).
func BenchmarkAllocateRelease(b *testing.B) {
	p := ipam.DefaultPool()
	stores := map[string]func(b *testing.B, st ipam.State) ipam.Store{
		"null": func(_ *testing.B, st ipam.State) ipam.Store { return loadedNullStore{st: st} },
		"fake": func(_ *testing.B, st ipam.State) ipam.Store { return ipamtest.NewStoreWith(st) },
		"disk": func(b *testing.B, st ipam.State) ipam.Store {
			s := disk.New(filepath.Join(b.TempDir(), "ipam.json"), p.BlockBits())
			if err := s.Save(st); err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { s.Close() })
			return s
		},
	}
	for _, store := range []string{"null", "fake", "disk"} {
		for _, n := range []int{0, 1000} {
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
