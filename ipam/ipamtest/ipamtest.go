// Package ipamtest has fakes for tests of code that uses package ipam: an
// in-memory Store that counts saves and can be told to fail, and a
// LeaseStore on top of it.
package ipamtest

import (
	"fmt"
	"sync"

	"github.com/zlmesh/zlmesh/ipam"
)

// Store is an in-memory ipam.Store. It keeps deep copies, so neither the
// caller's later changes nor its own leak across. It is safe for concurrent
// use. The zero value is not ready: use NewStore.
type Store struct {
	mu       sync.Mutex
	state    ipam.State
	saves    int
	failSave error
	failLoad error
}

// NewStore returns an empty store.
func NewStore() *Store { return &Store{} }

// NewStoreWith returns a store that holds a copy of st.
func NewStoreWith(st ipam.State) *Store { return &Store{state: st.Clone()} }

// Load returns a copy of the stored state, or the error set by FailLoad.
func (s *Store) Load() (ipam.State, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.failLoad != nil {
		return ipam.State{}, s.failLoad
	}
	return s.state.Clone(), nil
}

// Save stores a copy of st and counts the save; if FailNextSave was called,
// it instead returns that error once and keeps the previous state (a failed
// save does not count).
func (s *Store) Save(st ipam.State) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.failSave; err != nil {
		s.failSave = nil
		return err
	}
	s.state = st.Clone()
	s.saves++
	return nil
}

// FailNextSave makes the next Save return err (once) without storing.
func (s *Store) FailNextSave(err error) {
	s.mu.Lock()
	s.failSave = err
	s.mu.Unlock()
}

// FailLoad makes every Load return err until FailLoad(nil).
func (s *Store) FailLoad(err error) {
	s.mu.Lock()
	s.failLoad = err
	s.mu.Unlock()
}

// Saves is the number of successful saves so far.
func (s *Store) Saves() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.saves
}

// State returns a copy of what is stored.
func (s *Store) State() ipam.State {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.state.Clone()
}

// LeaseStore is a Store that is also an ipam.LeaseStore: SaveLease stores
// the whole state as Save does (failing as Save does after FailNextSave),
// and counts the call. It checks the LeaseStore contract: the state it is
// given must hold l under container when held is true and no lease for
// container when it is false; a call that breaks it stores nothing and
// returns an error.
type LeaseStore struct {
	*Store
	mu     sync.Mutex
	leases int
}

var _ ipam.LeaseStore = (*LeaseStore)(nil)

// NewLeaseStore returns an empty LeaseStore.
func NewLeaseStore() *LeaseStore { return &LeaseStore{Store: NewStore()} }

// SaveLease stores st after checking that it agrees with the change.
func (s *LeaseStore) SaveLease(st ipam.State, container string, l ipam.Lease, held bool) error {
	got, ok := st.Leases[container]
	if ok != held || held && (got != l || l.Container != container) {
		return fmt.Errorf("ipamtest: SaveLease(%s, %+v, %v) with a state holding %+v, %v", container, l, held, got, ok)
	}
	if err := s.Store.Save(st); err != nil {
		return err
	}
	s.mu.Lock()
	s.leases++
	s.mu.Unlock()
	return nil
}

// LeaseSaves is the number of successful SaveLease calls so far (they also
// count in Saves).
func (s *LeaseStore) LeaseSaves() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.leases
}
