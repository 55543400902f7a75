package node

import (
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/zlmesh/zlmesh/api"
	"github.com/zlmesh/zlmesh/internal/journal"
	"github.com/zlmesh/zlmesh/internal/statefile"
)

// attachFile is the node's record of its attachments, in the state dir:
// a snapshot beside a journal of changes (attachFile+".log", see
// internal/journal), so that recording an attach or a detach is one
// appended, synced record whatever the number of containers. The kernel
// objects outlive the process; this file is how a restarted node knows which
// of them are its own.
const attachFile = "attachments.json"

// attachment is one attached container as the state file keeps it.
type attachment struct {
	Spec      ContainerSpec `json:"spec"`
	Attached  Plumbed       `json:"attached"`
	CreatedAt time.Time     `json:"created_at"`
	// Origin is the attach request's origin (see origin.go); nil for none.
	Origin *api.Origin `json:"origin,omitempty"`
}

// attachState is the snapshot's content.
type attachState struct {
	Attachments map[string]attachment `json:"attachments"`
}

// attachRecord is one journal record: an attachment recorded or changed
// (Put), or a container's attachment forgotten (Del).
type attachRecord struct {
	Put *attachment `json:"put,omitempty"`
	Del string      `json:"del,omitempty"`
}

// attachments is the node's set of attached containers. Attach and detach of
// one container exclude each other through busy; different containers run
// their plumbing in parallel, and only the bookkeeping takes mu (held while
// a change is synced to disk, so the journal's order is memory's order).
type attachments struct {
	path string

	mu   sync.Mutex
	log  *journal.Log
	byID map[string]attachment
	busy map[string]bool // containers with an attach or detach under way
}

func loadAttachments(stateDir string) (*attachments, error) {
	a := &attachments{path: filepath.Join(stateDir, attachFile), busy: map[string]bool{}}
	st := attachState{Attachments: map[string]attachment{}}
	log, err := openJournaled(a.path, "attachments", &st, func(raw []byte) error {
		var r attachRecord
		if err := statefile.Decode(a.path+".log", raw, &r); err != nil {
			return err
		}
		if st.Attachments == nil { // a snapshot saying null
			st.Attachments = map[string]attachment{}
		}
		switch {
		case (r.Put == nil) == (r.Del == ""):
			return errors.New("want exactly one of put and del")
		case r.Put != nil && r.Put.Spec.Container == "":
			return errors.New("attachment without a container id")
		case r.Put != nil:
			st.Attachments[r.Put.Spec.Container] = *r.Put
		default:
			delete(st.Attachments, r.Del)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	a.byID, a.log = st.Attachments, log
	if a.byID == nil { // a snapshot saying null, and no record
		a.byID = map[string]attachment{}
	}
	return a, nil
}

// close closes the journal; the files stay.
func (a *attachments) close() {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.log.Close()
}

// recordLocked appends r to the journal (see appendJournaled); the caller
// holds mu and has already changed byID.
func (a *attachments) recordLocked(r attachRecord) error {
	return appendJournaled(a.log, r, len(a.byID), func() any { return attachState{Attachments: a.byID} })
}

// claim marks container busy; false when an attach or detach of it is
// already under way.
func (a *attachments) claim(container string) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.busy[container] {
		return false
	}
	a.busy[container] = true
	return true
}

func (a *attachments) release(container string) {
	a.mu.Lock()
	delete(a.busy, container)
	a.mu.Unlock()
}

func (a *attachments) get(container string) (attachment, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	at, ok := a.byID[container]
	return at, ok
}

// put records at durably; on error memory is unchanged.
func (a *attachments) put(at attachment) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	id := at.Spec.Container
	old, had := a.byID[id]
	a.byID[id] = at
	if err := a.recordLocked(attachRecord{Put: &at}); err != nil {
		if had {
			a.byID[id] = old
		} else {
			delete(a.byID, id)
		}
		return fmt.Errorf("record attachment of %s: %w", id, err)
	}
	return nil
}

// remove forgets container durably; on error memory is unchanged.
func (a *attachments) remove(container string) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	old, had := a.byID[container]
	if !had {
		return nil
	}
	delete(a.byID, container)
	if err := a.recordLocked(attachRecord{Del: container}); err != nil {
		a.byID[container] = old
		return fmt.Errorf("forget attachment of %s: %w", container, err)
	}
	return nil
}

func (a *attachments) list() []attachment {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := make([]attachment, 0, len(a.byID))
	for _, at := range a.byID {
		out = append(out, at)
	}
	slices.SortFunc(out, func(x, y attachment) int { return strings.Compare(x.Spec.Container, y.Spec.Container) })
	return out
}

func (a *attachments) len() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.byID)
}
