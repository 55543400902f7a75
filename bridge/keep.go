package bridge

import (
	"slices"
	"sync"
)

// keepSet is the bridges Detach leaves in place when their last port goes
// (Manager.KeepBridges). The zero value keeps none.
type keepSet struct {
	mu    sync.Mutex
	names map[string]bool // bridge names
}

// has reports whether bridge name is kept.
func (k *keepSet) has(name string) bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.names[name]
}

// set replaces the set and returns the names it no longer holds, sorted.
func (k *keepSet) set(names map[string]bool) []string {
	k.mu.Lock()
	defer k.mu.Unlock()
	var released []string
	for n := range k.names {
		if !names[n] {
			released = append(released, n)
		}
	}
	k.names = names
	slices.Sort(released)
	return released
}

// KeepBridges sets the services whose bridges stay when their last port
// detaches, replacing the set given before (nil keeps none): a runtime's
// network that exists with no container on it yet (Docker's) keeps its
// bridge, so that its next container does not pay for making the bridge
// again, nor its last one for deleting it. It makes nothing: a kept bridge
// is made by the next Attach, as any other. It returns the names of the
// bridges no longer kept (sorted), which the caller removes with
// RemoveBridgeIfEmpty if it wants them gone now; Detach removes them at the
// next last port otherwise. Invalid service names are ignored. It is safe
// for concurrent use, on every platform.
func (m *Manager) KeepBridges(services []string) []string {
	names := map[string]bool{}
	for _, s := range services {
		if ValidateService(s) == nil {
			names[BridgeName(s)] = true
		}
	}
	return m.keep.set(names)
}
