package ipam

import (
	"encoding/json"
	"fmt"
	"net/netip"

	"github.com/zlmesh/zlmesh/internal/journal"
	"github.com/zlmesh/zlmesh/internal/statefile"
)

// fileStore keeps the State in a JSON snapshot file and a journal of lease
// changes beside it (internal/journal).
type fileStore struct {
	path string
	log  *journal.Log // opened by Load, or by the first save
}

// leaseRecord is one journal record: a lease made or changed (Put) or a
// container's lease released (Del).
type leaseRecord struct {
	Put *Lease `json:"put,omitempty"`
	Del string `json:"del,omitempty"`
}

// compactAt is how many journal records the store lets pile up before it
// folds them into a new snapshot: at least minCompact, else as many as there
// are leases, so that the rewrite's cost spread over the appends stays
// constant.
func compactAt(leases int) int { return max(minCompact, leases) }

const minCompact = 256

// NewFileStore returns a LeaseStore in the JSON file at path (the State, as
// json.Marshal writes it) and the journal path+".log" of lease changes since
// the file was written (internal/journal). Save replaces the file
// atomically (temp file, fsync, rename); SaveLease appends one record and
// syncs it, and folds the journal into the file once it holds as many
// records as there are leases (at least 256). A missing file loads as an
// empty State; a file or journal that does not parse is an error naming the
// file, never an empty state; a torn last journal record (a crash during
// SaveLease, which then never returned) is dropped. It holds no lock of its
// own: the Allocator serializes its calls, and two stores on one path in one
// process must not be used at once. The store is also an io.Closer: Close
// releases the journal's open file (the files stay); a later call opens it
// again.
func NewFileStore(path string) LeaseStore { return &fileStore{path: path} }

func (f *fileStore) Close() error {
	if f.log == nil {
		return nil
	}
	err := f.log.Close()
	f.log = nil
	return err
}

func (f *fileStore) Load() (State, error) {
	if f.log != nil {
		f.log.Close()
		f.log = nil
	}
	log, snap, recs, err := journal.Open(f.path)
	if err != nil {
		return State{}, fmt.Errorf("load ipam state: %w", err)
	}
	var s State
	if snap != nil {
		if err := statefile.Decode(f.path, snap, &s); err != nil {
			log.Close()
			return State{}, fmt.Errorf("load ipam state: %w", err)
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
			return State{}, fmt.Errorf("load ipam state: record %d of %s.log: %w", i+1, f.path, err)
		}
		if r.Put != nil {
			if s.Leases == nil {
				s.Leases = map[string]Lease{}
			}
			s.Leases[r.Put.Container] = *r.Put
		} else {
			delete(s.Leases, r.Del)
		}
	}
	if len(recs) > 0 {
		// A service's slice is where its leases are: derive the slices
		// again rather than journal them.
		s.Slices = nil
		for _, l := range s.Leases {
			if s.Slices == nil {
				s.Slices = map[string]netip.Prefix{}
			}
			s.Slices[l.Service] = l.Addr.Masked()
		}
		if len(s.Leases) == 0 {
			s.Leases = nil
		}
	}
	f.log = log
	return s, nil
}

// openLog opens the journal for a store that saves without having loaded.
func (f *fileStore) openLog() error {
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

func (f *fileStore) Save(s State) error {
	if err := f.save(s); err != nil {
		return fmt.Errorf("save ipam state: %w", err)
	}
	return nil
}

func (f *fileStore) save(s State) error {
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

func (f *fileStore) SaveLease(s State, container string, l Lease, held bool) error {
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

func (f *fileStore) String() string { return f.path }
