package ipam_test

import (
	"errors"
	"testing"

	"github.com/zlmesh/zlmesh/ipam"
)

func TestRename(t *testing.T) {
	cases := []struct {
		name           string
		old, to, svc   string
		wantErr        error
		wantLeaseOfOld bool
	}{
		{name: "pending to endpoint", old: "pending-1", to: "docker-abc", svc: "web"},
		{name: "same key, new service", old: "pending-1", to: "pending-1", svc: "db"},
		{name: "missing lease", old: "nobody", to: "docker-abc", svc: "web", wantErr: ipam.ErrNotFound, wantLeaseOfOld: true},
		{name: "target leased", old: "pending-1", to: "other", svc: "web", wantErr: ipam.ErrExists, wantLeaseOfOld: true},
		{name: "empty service", old: "pending-1", to: "docker-abc", svc: "", wantErr: errAny, wantLeaseOfOld: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			a, st := newAlloc(t, smallPool(t), blkA)
			l := mustAllocate(t, a, "-pending", "pending-1")
			mustAllocate(t, a, "web", "other")
			got, err := a.Rename(tc.old, tc.to, tc.svc)
			if tc.wantErr != nil {
				if err == nil || (tc.wantErr != errAny && !errors.Is(err, tc.wantErr)) {
					t.Fatalf("Rename: err %v, want %v", err, tc.wantErr)
				}
				if _, ok := a.Lease("pending-1"); ok != tc.wantLeaseOfOld {
					t.Fatalf("lease of pending-1 held %v after a failed rename, want %v", ok, tc.wantLeaseOfOld)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			want := ipam.Lease{Service: tc.svc, Container: tc.to, Addr: l.Addr}
			if got != want {
				t.Fatalf("Rename = %+v, want %+v", got, want)
			}
			if cur, ok := a.Lease(tc.to); !ok || cur != want {
				t.Fatalf("Lease(%s) = %+v %v, want %+v", tc.to, cur, ok, want)
			}
			if _, ok := a.Lease(tc.old); ok && tc.old != tc.to {
				t.Fatalf("%s still leased", tc.old)
			}
			if saved := st.State().Leases[tc.to]; saved != want {
				t.Fatalf("saved lease %+v, want %+v", saved, want)
			}
			// The store reloads: one lease per address.
			if _, err := ipam.NewAllocator(st, smallPool(t)); err != nil {
				t.Fatalf("reload after rename: %v", err)
			}
		})
	}
}

func TestRenameSaveFails(t *testing.T) {
	a, st := newAlloc(t, smallPool(t), blkA)
	l := mustAllocate(t, a, "-pending", "pending-1")
	boom := errors.New("disk on fire")
	st.FailNextSave(boom)
	if _, err := a.Rename("pending-1", "docker-abc", "web"); !errors.Is(err, boom) {
		t.Fatalf("Rename with a failing save: %v", err)
	}
	if cur, ok := a.Lease("pending-1"); !ok || cur != l {
		t.Fatalf("lease after failed rename: %+v %v, want %+v", cur, ok, l)
	}
	if _, ok := a.Lease("docker-abc"); ok {
		t.Fatal("renamed lease kept after a failed save")
	}
}

var errAny = errors.New("any error")
