package mesh

import (
	"encoding/json"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"
)

// memberTable is the mesh's view of the members, fed by memberlist's event
// callbacks (memberlist has no API listing dead or left members).
type memberTable struct {
	mu     sync.Mutex
	byName map[string]*memberEntry
	alive  int // members in StateAlive
	// aliveCache is name → address of the alive members, rebuilt on the
	// first read after a change; readers must not modify it.
	aliveCache map[string]string
}

type memberEntry struct {
	m       Member
	changed time.Time // when State last changed
}

func (t *memberTable) get(name string) (Member, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	e, ok := t.byName[name]
	if !ok {
		return Member{}, false
	}
	return e.m, true
}

func (t *memberTable) list() []Member {
	t.mu.Lock()
	out := make([]Member, 0, len(t.byName))
	for _, e := range t.byName {
		out = append(out, e.m)
	}
	t.mu.Unlock()
	return sortedMembers(out)
}

// aliveOthers returns name → gossip address of the alive members other
// than self. The map is shared: read it only.
func (t *memberTable) aliveOthers(self string) map[string]string {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.aliveCache == nil {
		t.aliveCache = make(map[string]string, t.alive)
		for name, e := range t.byName {
			if name != self && e.m.State == StateAlive {
				t.aliveCache[name] = e.m.Addr.String()
			}
		}
	}
	return t.aliveCache
}

// alivePublicKeys returns the Meta.PublicKey of every alive member that
// has one.
func (t *memberTable) alivePublicKeys() map[string]bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make(map[string]bool, len(t.byName))
	for _, e := range t.byName {
		if e.m.State == StateAlive && e.m.Meta.PublicKey != "" {
			out[e.m.Meta.PublicKey] = true
		}
	}
	return out
}

// prune forgets members dead or left since before cutoff, as memberlist
// does after GossipToTheDeadTime.
func (t *memberTable) prune(cutoff time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for name, e := range t.byName {
		if (e.m.State == StateDead || e.m.State == StateLeft) && e.changed.Before(cutoff) {
			delete(t.byName, name)
		}
	}
}

// setLocked records mem and keeps the alive count and cache.
func (t *memberTable) setLocked(e *memberEntry, mem Member) {
	if e.m.State == StateAlive {
		t.alive--
	}
	if mem.State == StateAlive {
		t.alive++
	}
	if e.m.State != mem.State || e.m.Addr != mem.Addr || mem.State == StateAlive {
		t.aliveCache = nil
	}
	e.m = mem
}

// memberEvent records a membership change reported by memberlist and
// publishes it. It runs under memberlist's node lock: it must not call
// memberlist.
func (m *Mesh) memberEvent(n *memberlist.Node, typ EventType) {
	mem := Member{
		Name: n.Name,
		Addr: nodeAddr(n.Addr, n.Port),
		Self: n.Name == m.name,
	}
	if len(n.Meta) > 0 {
		if err := json.Unmarshal(n.Meta, &mem.Meta); err != nil {
			mem.Meta = Meta{}
			m.log.Warn("member meta does not decode", "member", n.Name, "err", err)
		}
	}
	switch typ {
	case EventMemberJoin, EventMemberUpdate:
		mem.State = StateAlive
	default:
		mem.State = StateDead
		if r, ok := m.store.lookup(kindMember, n.Name); ok && r.Deleted {
			mem.State = StateLeft
			typ = EventMemberLeft
		}
	}
	now := time.Now()
	m.members.mu.Lock()
	e, ok := m.members.byName[n.Name]
	if !ok {
		e = &memberEntry{changed: now}
		m.members.byName[n.Name] = e
	}
	if e.m.State != mem.State {
		e.changed = now
	}
	if ok && e.m.State == StateAlive && mem.State == StateDead {
		m.counters.died.Add(1)
	}
	m.members.setLocked(e, mem)
	m.numLive.Store(int32(m.members.alive))
	m.members.mu.Unlock()

	if !mem.Self {
		if mem.State == StateAlive {
			m.book.seen(mem.Name, mem.Addr.String(), now)
		}
		m.log.Debug("member "+typ.String(), "member", mem.Name, "addr", mem.Addr.String())
	}
	m.events.publish(Event{Type: typ, Member: mem})
}

// markLeft turns a dead member into a left one when its marker tombstone
// arrives after memberlist reported it gone.
func (m *Mesh) markLeft(name string) {
	m.members.mu.Lock()
	e, ok := m.members.byName[name]
	if !ok || e.m.State != StateDead {
		m.members.mu.Unlock()
		return
	}
	mem := e.m
	mem.State = StateLeft
	m.members.setLocked(e, mem)
	m.members.mu.Unlock()
	m.events.publish(Event{Type: EventMemberLeft, Member: mem})
}

// eventDelegate receives memberlist's membership callbacks (under
// memberlist's node lock).
type eventDelegate Mesh

func (d *eventDelegate) NotifyJoin(n *memberlist.Node) {
	(*Mesh)(d).memberEvent(n, EventMemberJoin)
}

func (d *eventDelegate) NotifyUpdate(n *memberlist.Node) {
	(*Mesh)(d).memberEvent(n, EventMemberUpdate)
}

func (d *eventDelegate) NotifyLeave(n *memberlist.Node) {
	(*Mesh)(d).memberEvent(n, EventMemberDead)
}

// NotifyConflict is called when another node claims the name of a known
// member from another address. If it is our own name, the cluster still
// remembers a previous run of this node somewhere else; memberlist keeps
// refusing the new address until the old one is declared dead, plus
// DeadNodeReclaimTime. Otherwise it is a member that restarted elsewhere:
// remember the new address so re-join tries it once the old one is dead.
func (d *eventDelegate) NotifyConflict(existing, other *memberlist.Node) {
	m := (*Mesh)(d)
	addr := nodeAddr(other.Addr, other.Port).String()
	if other.Name == m.name {
		return // memberlist logs it; nothing to remember
	}
	m.book.conflict(other.Name, addr)
}
