// Package disk keeps ipam's State in the state dir: a JSON snapshot and a
// journal of lease changes beside it (internal/journal), the way CNI's
// host-local IPAM keeps its allocator pure and puts disk in backend/disk.
//
// It also reads the state the previous release wrote (version 1: one node
// subnet cut into service slices) and migrates it in place: every block of
// the new plan that held the node's address or a container's becomes one of
// the node's claims, and every container keeps its address.
package disk

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"slices"
	"time"

	"github.com/zlmesh/zlmesh/internal/journal"
	"github.com/zlmesh/zlmesh/internal/statefile"
	"github.com/zlmesh/zlmesh/ipam"
)

// Store is an ipam.LeaseStore in the JSON file at path and the journal
// path+".log" of lease changes since the file was written.
//
// Save replaces the file atomically (temp file, fsync, rename); SaveLease
// appends one record and syncs it, and folds the journal into the file once
// it holds as many records as there are leases (at least 256). A missing
// file loads as an empty State; a file or journal that does not parse is an
// error naming the file, never an empty state; a torn last journal record (a
// crash during SaveLease, which then never returned) is dropped.
//
// It holds no lock of its own: the Allocator serializes its calls, and two
// stores on one path in one process must not be used at once. Close
// releases the journal's open file (the files stay); a later call opens it
// again.
type Store struct {
	path string
	// migrate is the block prefix length a version-1 state is migrated to;
	// 0 refuses version 1.
	blockBits int
	log       *journal.Log // opened by Load, or by the first save
	// Migrated is set by Load when it read a version-1 state, turned it
	// into the current version and wrote that back in place of the old file.
	Migrated bool
}

var (
	_ ipam.LeaseStore = (*Store)(nil)
	_ fmt.Stringer    = (*Store)(nil)
)

// leaseRecord is one journal record: a lease made or changed (Put) or a
// container's lease released (Del).
type leaseRecord struct {
	Put *ipam.Lease `json:"put,omitempty"`
	Del string      `json:"del,omitempty"`
}

// compactAt is how many journal records the store lets pile up before it
// folds them into a new snapshot: at least minCompact, else as many as there
// are leases, so that the rewrite's cost spread over the appends stays
// constant.
func compactAt(leases int) int { return max(minCompact, leases) }

const minCompact = 256

// New returns the store at path. blockBits is the block prefix length of
// the running plan, used to migrate a version-1 state; 0 refuses one.
func New(path string, blockBits int) *Store { return &Store{path: path, blockBits: blockBits} }

// Close releases the journal's file.
func (f *Store) Close() error {
	if f.log == nil {
		return nil
	}
	err := f.log.Close()
	f.log = nil
	return err
}

// Load reads the snapshot and replays the journal.
func (f *Store) Load() (ipam.State, error) {
	if f.log != nil {
		f.log.Close()
		f.log = nil
	}
	log, snap, recs, err := journal.Open(f.path)
	if err != nil {
		return ipam.State{}, fmt.Errorf("load ipam state: %w", err)
	}
	var s ipam.State
	if snap != nil {
		v1, err := isV1(f.path, snap)
		if err == nil && v1 {
			s, err = f.migrate(snap, recs)
			recs = nil
		} else if err == nil {
			s, err = f.decodeSnapshot(snap)
		}
		if err != nil {
			log.Close()
			return ipam.State{}, fmt.Errorf("load ipam state: %w", err)
		}
	}
	for i, raw := range recs {
		var r leaseRecord
		err := statefile.Decode(f.path+".log", raw, &r)
		if err == nil && (r.Put == nil) == (r.Del == "") {
			err = fmt.Errorf("want exactly one of put and del")
		}
		if err == nil && r.Put != nil && (r.Put.Container == "" || !r.Put.Addr.IsValid()) {
			err = fmt.Errorf("lease without container or address")
		}
		if err != nil {
			log.Close()
			return ipam.State{}, fmt.Errorf("load ipam state: record %d of %s.log: %w", i+1, f.path, err)
		}
		if r.Put != nil {
			if s.Leases == nil {
				s.Leases = map[string]ipam.Lease{}
			}
			s.Leases[r.Put.Container] = *r.Put
		} else {
			delete(s.Leases, r.Del)
		}
	}
	if len(s.Leases) == 0 {
		s.Leases = nil
	}
	f.log = log
	if f.Migrated {
		// Written back at once, so that no record of the current shape is
		// ever appended to the previous release's journal.
		if err := f.save(s); err != nil {
			return ipam.State{}, fmt.Errorf("load ipam state: write migrated %s: %w", f.path, err)
		}
	}
	return s, nil
}

// isV1 reports whether snap is the previous release's state (no version,
// a node-subnet claim or service slices).
func isV1(path string, snap []byte) (bool, error) {
	var probe struct {
		Version int             `json:"version"`
		Claim   json.RawMessage `json:"claim"`
		Slices  json.RawMessage `json:"slices"`
	}
	// Only these fields are read here (the full decode, strict about
	// unknown fields, follows).
	if err := json.Unmarshal(snap, &probe); err != nil {
		return false, statefile.Decode(path, snap, &probe)
	}
	return probe.Version == 0 && (probe.Claim != nil || probe.Slices != nil), nil
}

// decodeSnapshot decodes a current snapshot.
func (f *Store) decodeSnapshot(snap []byte) (ipam.State, error) {
	var s ipam.State
	if err := statefile.Decode(f.path, snap, &s); err != nil {
		return ipam.State{}, err
	}
	if s.Version != ipam.StateVersion {
		return ipam.State{}, fmt.Errorf("%s has state version %d; this zlmesh reads version %d", f.path, s.Version, ipam.StateVersion)
	}
	return s, nil
}

// v1State is the previous release's ipam.json: a node subnet, the slices of
// its services and the containers' leases with the slice's prefix length.
type v1State struct {
	Claim *struct {
		Node      string       `json:"node"`
		Name      string       `json:"name"`
		Subnet    netip.Prefix `json:"subnet"`
		ClaimedAt time.Time    `json:"claimed_at"`
		RenewedAt time.Time    `json:"renewed_at"`
	} `json:"claim"`
	// Slices (service → slice) are read only so that the strict decoder
	// accepts the file: a container's address is all that is kept.
	Slices map[string]netip.Prefix `json:"slices"`
	Leases map[string]v1Lease      `json:"leases"`
}

type v1Lease struct {
	Service   string       `json:"service"`
	Container string       `json:"container"`
	Addr      netip.Prefix `json:"addr"`
	Gateway   netip.Prefix `json:"gateway"` // the slice's bridge; dropped
}

// v1Record is a journal record of the previous release.
type v1Record struct {
	Put *v1Lease `json:"put,omitempty"`
	Del string   `json:"del,omitempty"`
}

// migrate turns a version-1 snapshot and its journal into the current State: the blocks of
// the node subnet that hold the node's address or a lease become claims
// (the one with the node's address first, all with the subnet's claim
// time), and every lease keeps its address. The allocator's load checks the
// result against the pool; what does not fit there is an error naming the
// file.
func (f *Store) migrate(snap []byte, recs [][]byte) (ipam.State, error) {
	if f.blockBits == 0 {
		return ipam.State{}, fmt.Errorf("%s was written by the previous release (node subnets); this store cannot migrate it", f.path)
	}
	var old v1State
	if err := statefile.Decode(f.path, snap, &old); err != nil {
		return ipam.State{}, err
	}
	for i, raw := range recs {
		var r v1Record
		if err := statefile.Decode(f.path+".log", raw, &r); err != nil {
			return ipam.State{}, fmt.Errorf("record %d of %s.log: %w", i+1, f.path, err)
		}
		switch {
		case r.Put != nil && r.Put.Container != "":
			if old.Leases == nil {
				old.Leases = map[string]v1Lease{}
			}
			old.Leases[r.Put.Container] = *r.Put
		case r.Put == nil && r.Del != "":
			delete(old.Leases, r.Del)
		default:
			return ipam.State{}, fmt.Errorf("record %d of %s.log: want exactly one of put and del", i+1, f.path)
		}
	}
	s := ipam.State{Version: ipam.StateVersion}
	if old.Claim == nil {
		if len(old.Leases) > 0 {
			return ipam.State{}, fmt.Errorf("migrate %s: %d leases but no node subnet", f.path, len(old.Leases))
		}
		f.Migrated = true
		return s, nil
	}
	sub := old.Claim.Subnet
	if !sub.IsValid() || sub.Bits() > f.blockBits {
		return ipam.State{}, fmt.Errorf("migrate %s: node subnet %s is smaller than a block of /%d; start with --block-prefix %d or longer, or detach every container and remove %s", f.path, sub, f.blockBits, sub.Bits(), f.path)
	}
	block := func(a netip.Addr) netip.Prefix { p, _ := a.Prefix(f.blockBits); return p }
	claim := func(b netip.Prefix) ipam.Claim {
		return ipam.Claim{Node: old.Claim.Node, Name: old.Claim.Name, Block: b, ClaimedAt: old.Claim.ClaimedAt, RenewedAt: old.Claim.RenewedAt}
	}
	first := block(sub.Addr().Next())
	s.Claims = []ipam.Claim{claim(first)}
	var more []netip.Prefix
	for ctr, l := range old.Leases {
		if !l.Addr.IsValid() || !sub.Contains(l.Addr.Addr()) {
			return ipam.State{}, fmt.Errorf("migrate %s: address %s of container %s is outside the node subnet %s", f.path, l.Addr, ctr, sub)
		}
		// Blocks smaller than the old slices put some old addresses on a
		// block's first or last address, which the allocator refuses:
		// refuse here, before the old file is rewritten.
		if b := block(l.Addr.Addr()); l.Addr.Addr() == b.Addr() || l.Addr.Addr().Next() == block(l.Addr.Addr().Next()).Addr() {
			return ipam.State{}, fmt.Errorf("migrate %s: address %s of container %s would be the first or last address of block %s; start with a shorter --block-prefix than /%d, or detach the container and remove its lease", f.path, l.Addr.Addr(), ctr, b, f.blockBits)
		}
		if s.Leases == nil {
			s.Leases = map[string]ipam.Lease{}
		}
		s.Leases[ctr] = ipam.Lease{Service: l.Service, Container: l.Container, Addr: l.Addr.Addr()}
		if b := block(l.Addr.Addr()); b != first && !slices.Contains(more, b) {
			more = append(more, b)
		}
	}
	slices.SortFunc(more, func(a, b netip.Prefix) int { return a.Addr().Compare(b.Addr()) })
	for _, b := range more {
		s.Claims = append(s.Claims, claim(b))
	}
	f.Migrated = true
	return s, nil
}

// openLog opens the journal for a store that saves without having loaded.
func (f *Store) openLog() error {
	if f.log != nil {
		return nil
	}
	log, _, _, err := journal.Open(f.path)
	if err != nil {
		return err
	}
	f.log = log
	return nil
}

// Save replaces the snapshot (and empties the journal).
func (f *Store) Save(s ipam.State) error {
	if err := f.save(s); err != nil {
		return fmt.Errorf("save ipam state: %w", err)
	}
	return nil
}

func (f *Store) save(s ipam.State) error {
	s.Version = ipam.StateVersion
	data, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return err
	}
	data = append(data, '\n')
	if f.log == nil {
		// Without a journal open yet (a first save): a fresh snapshot makes
		// any old journal stale.
		if err := f.openLog(); err != nil {
			return err
		}
	}
	return f.log.Rewrite(data)
}

// SaveLease appends one lease change to the journal.
func (f *Store) SaveLease(s ipam.State, container string, l ipam.Lease, held bool) error {
	if err := f.openLog(); err != nil {
		return fmt.Errorf("save lease of %s: %w", container, err)
	}
	r := leaseRecord{Del: container}
	if held {
		r = leaseRecord{Put: &l}
	}
	rec, err := json.Marshal(r)
	if err != nil {
		return fmt.Errorf("save lease of %s: %w", container, err)
	}
	if err := f.log.Append(rec); err != nil {
		return fmt.Errorf("save lease of %s: %w", container, err)
	}
	if f.log.Records() >= compactAt(len(s.Leases)) {
		// The change is durable already; a failed fold only leaves the
		// journal longer, and the next SaveLease tries again.
		f.save(s)
	}
	return nil
}

func (f *Store) String() string { return f.path }
