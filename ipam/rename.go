package ipam

import "fmt"

// Rename gives the lease of container old to container new of service,
// keeping its address: a runtime that asks for an address before it names
// the endpoint (Docker's IPAM, then CreateEndpoint) leases it under a
// temporary key and renames it once the endpoint exists. The change is one
// atomic Save (never two lease records for one address on disk). It
// returns the renamed lease; ErrNotFound when old has no lease, ErrExists
// when new has one, an error for an empty name. On a failed save nothing
// changes.
func (a *Allocator) Rename(old, container, service string) (Lease, error) {
	if old == "" || container == "" || service == "" {
		return Lease{}, fmt.Errorf("rename lease %q to container %q in service %q: empty name", old, container, service)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	l, ok := a.st.Leases[old]
	if !ok {
		return Lease{}, fmt.Errorf("rename lease %s to %s: %w", old, container, ErrNotFound)
	}
	if old == container && l.Service == service {
		return l, nil
	}
	if cur, ok := a.st.Leases[container]; ok && old != container {
		return Lease{}, fmt.Errorf("rename lease %s to %s: %s has %s in service %s: %w", old, container, container, cur.Addr, cur.Service, ErrExists)
	}
	n := Lease{Service: service, Container: container, Addr: l.Addr}
	delete(a.st.Leases, old)
	a.st.Leases[container] = n
	if err := a.saveLocked(); err != nil {
		delete(a.st.Leases, container)
		a.st.Leases[old] = l
		return Lease{}, fmt.Errorf("rename lease %s to %s: %w", old, container, err)
	}
	return n, nil
}
