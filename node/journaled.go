package node

import (
	"encoding/json"
	"fmt"

	"github.com/zlmesh/zlmesh/internal/journal"
	"github.com/zlmesh/zlmesh/internal/statefile"
)

// The node's state files that change with every attach, detach and publish
// (attachments.json, ports.json) are a JSON snapshot beside a journal of
// changes (internal/journal): a change is one synced append, and the
// journal is folded into a new snapshot once it holds as many records as
// the state has entries.

// minCompact is the least number of journal records before the journal is
// folded into a new snapshot; past it, the fold waits for as many records as
// the state has entries, so its cost spread over the records stays constant.
const minCompact = 256

// openJournaled opens the state file at path: it decodes the snapshot, if
// there is one, into snap, then hands every journal record after it, in
// order, to apply (which applies it to snap). what names the state in
// errors. On error the journal is
// closed; the error names the file and, for a record, its number.
func openJournaled(path, what string, snap any, apply func(raw []byte) error) (*journal.Log, error) {
	log, data, recs, err := journal.Open(path)
	if err != nil {
		return nil, fmt.Errorf("load %s: %w", what, err)
	}
	if data != nil {
		if err := statefile.Decode(path, data, snap); err != nil {
			log.Close()
			return nil, fmt.Errorf("load %s: %w", what, err)
		}
	}
	for i, raw := range recs {
		if err := apply(raw); err != nil {
			log.Close()
			return nil, fmt.Errorf("load %s: record %d of %s.log: %w", what, i+1, path, err)
		}
	}
	return log, nil
}

// appendJournaled appends rec (as JSON) to log, durably, and folds the
// journal into a new snapshot (snapshot(), as JSON) when it holds at least
// max(minCompact, entries) records. The change is durable once the append
// returns: a failed fold only leaves the journal longer, and the next
// change tries again.
func appendJournaled(log *journal.Log, rec any, entries int, snapshot func() any) error {
	b, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	if err := log.Append(b); err != nil {
		return err
	}
	if log.Records() >= max(minCompact, entries) {
		rewriteJournaled(log, snapshot())
	}
	return nil
}

// rewriteJournaled writes snap (as indented JSON) as log's new snapshot,
// with an empty journal after it.
func rewriteJournaled(log *journal.Log, snap any) error {
	b, err := json.MarshalIndent(snap, "", "  ")
	if err != nil {
		return err
	}
	return log.Rewrite(append(b, '\n'))
}
