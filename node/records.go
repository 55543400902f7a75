package node

import "encoding/json"

// records decodes the record store's live records of kind into T, skipping
// records that do not decode, and those whose owner alive rejects (nil
// keeps every owner: a record of a node that is down comes back with it).
// Records are the store's, sorted by key.
func records[T any](n *Node, kind string, alive func(owner string) bool) []T {
	var out []T
	for _, r := range n.mesh.Store().List(kind) {
		if alive != nil && !alive(r.Owner) {
			continue
		}
		var v T
		if json.Unmarshal(r.Value, &v) == nil {
			out = append(out, v)
		}
	}
	return out
}
