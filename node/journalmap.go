package node

import (
	"cmp"
	"errors"
	"fmt"
	"slices"
	"sync"

	"github.com/zlmesh/zlmesh/internal/journal"
	"github.com/zlmesh/zlmesh/internal/statefile"
)

// journalMap is a map kept in the state dir as a snapshot plus a journal of
// changes (openJournaled, appendJournaled), with a busy set so that one
// key's add and remove exclude each other while different keys run in
// parallel. It is the journaled-map pattern of attachments.go and ports.go
// as one type; guests use it. mu is held while a change is synced to disk,
// so the journal's order is memory's order.
type journalMap[V any] struct {
	path, what string

	mu   sync.Mutex
	log  *journal.Log
	m    map[string]V
	busy map[string]bool
}

// journalMapState is the snapshot's content.
type journalMapState[V any] struct {
	Entries map[string]V `json:"entries"`
}

// journalMapRecord is one journal record: an entry put or a key deleted.
type journalMapRecord[V any] struct {
	Key string `json:"key"`
	Put *V     `json:"put,omitempty"`
	Del bool   `json:"del,omitempty"`
}

// openJournalMap loads the map at path (what names it in errors).
func openJournalMap[V any](path, what string) (*journalMap[V], error) {
	jm := &journalMap[V]{path: path, what: what, busy: map[string]bool{}}
	st := journalMapState[V]{Entries: map[string]V{}}
	log, err := openJournaled(path, what, &st, func(raw []byte) error {
		var r journalMapRecord[V]
		if err := statefile.Decode(path+".log", raw, &r); err != nil {
			return err
		}
		if st.Entries == nil {
			st.Entries = map[string]V{}
		}
		switch {
		case r.Key == "":
			return errors.New("record without a key")
		case (r.Put == nil) == !r.Del:
			return errors.New("want exactly one of put and del")
		case r.Put != nil:
			st.Entries[r.Key] = *r.Put
		default:
			delete(st.Entries, r.Key)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	jm.m, jm.log = st.Entries, log
	if jm.m == nil {
		jm.m = map[string]V{}
	}
	return jm, nil
}

// close closes the journal; the files stay.
func (jm *journalMap[V]) close() {
	jm.mu.Lock()
	defer jm.mu.Unlock()
	jm.log.Close()
}

func (jm *journalMap[V]) recordLocked(r journalMapRecord[V]) error {
	return appendJournaled(jm.log, r, len(jm.m), func() any { return journalMapState[V]{Entries: jm.m} })
}

// claim marks key busy; false when an add or remove of it is under way.
func (jm *journalMap[V]) claim(key string) bool {
	jm.mu.Lock()
	defer jm.mu.Unlock()
	if jm.busy[key] {
		return false
	}
	jm.busy[key] = true
	return true
}

func (jm *journalMap[V]) release(key string) {
	jm.mu.Lock()
	delete(jm.busy, key)
	jm.mu.Unlock()
}

func (jm *journalMap[V]) get(key string) (V, bool) {
	jm.mu.Lock()
	defer jm.mu.Unlock()
	v, ok := jm.m[key]
	return v, ok
}

// put records v at key durably; on error memory is unchanged.
func (jm *journalMap[V]) put(key string, v V) error {
	jm.mu.Lock()
	defer jm.mu.Unlock()
	old, had := jm.m[key]
	jm.m[key] = v
	if err := jm.recordLocked(journalMapRecord[V]{Key: key, Put: &v}); err != nil {
		if had {
			jm.m[key] = old
		} else {
			delete(jm.m, key)
		}
		return fmt.Errorf("record %s %s: %w", jm.what, key, err)
	}
	return nil
}

// remove forgets key durably; on error memory is unchanged. A missing key
// is success.
func (jm *journalMap[V]) remove(key string) error {
	jm.mu.Lock()
	defer jm.mu.Unlock()
	old, had := jm.m[key]
	if !had {
		return nil
	}
	delete(jm.m, key)
	if err := jm.recordLocked(journalMapRecord[V]{Key: key, Del: true}); err != nil {
		jm.m[key] = old
		return fmt.Errorf("forget %s %s: %w", jm.what, key, err)
	}
	return nil
}

// list returns the entries sorted by key.
func (jm *journalMap[V]) list() []V {
	jm.mu.Lock()
	defer jm.mu.Unlock()
	keys := make([]string, 0, len(jm.m))
	for k := range jm.m {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, cmp.Compare[string])
	out := make([]V, 0, len(keys))
	for _, k := range keys {
		out = append(out, jm.m[k])
	}
	return out
}

func (jm *journalMap[V]) len() int {
	jm.mu.Lock()
	defer jm.mu.Unlock()
	return len(jm.m)
}
