package mesh

import (
	"log/slog"
	"sync"
	"sync/atomic"
	"time"
)

// EventType tells what an Event is about.
type EventType uint8

const (
	// EventMemberJoin: a member became alive (joined, or came back).
	EventMemberJoin EventType = iota + 1
	// EventMemberUpdate: an alive member changed its meta or address.
	EventMemberUpdate
	// EventMemberDead: a member was declared dead (failed probes).
	EventMemberDead
	// EventMemberLeft: a member left gracefully, or a member reported dead
	// is now known to have left.
	EventMemberLeft
	// EventRecord: a record of the store changed (written here, merged
	// from elsewhere, or deleted: Record.Deleted).
	EventRecord
)

func (t EventType) String() string {
	switch t {
	case EventMemberJoin:
		return "join"
	case EventMemberUpdate:
		return "update"
	case EventMemberDead:
		return "dead"
	case EventMemberLeft:
		return "left"
	case EventRecord:
		return "record"
	}
	return "unknown"
}

// Event is a membership or record change. Member is set for member events,
// Record for EventRecord.
type Event struct {
	Type   EventType
	Member Member
	Record Record
}

// Subscribe returns a channel of every membership and record change from
// now on, and a func that cancels the subscription and closes the channel.
// The channel has Tuning.EventBuffer slots; gossip never waits for a
// subscriber: when a channel is full the event is dropped for that
// subscriber, counted (DroppedEvents) and logged (at most every 10s). A
// subscriber that drops events should resynchronize from Members and
// Store.List. The channel is closed after Leave or Shutdown.
func (m *Mesh) Subscribe() (<-chan Event, func()) {
	return m.events.subscribe()
}

// DroppedEvents returns how many events were dropped for slow subscribers.
func (m *Mesh) DroppedEvents() uint64 { return m.events.dropped.Load() }

// eventHub fans events out to subscribers without blocking.
type eventHub struct {
	size    int
	log     *slog.Logger
	dropped atomic.Uint64

	mu       sync.Mutex
	subs     map[int]chan Event
	next     int
	closed   bool
	lastWarn time.Time
	warned   uint64 // dropped count at lastWarn
}

func (h *eventHub) init(size int, log *slog.Logger) {
	h.size = size
	h.log = log
	h.subs = make(map[int]chan Event)
}

func (h *eventHub) subscribe() (<-chan Event, func()) {
	h.mu.Lock()
	defer h.mu.Unlock()
	ch := make(chan Event, h.size)
	if h.closed {
		close(ch)
		return ch, func() {}
	}
	h.next++
	id := h.next
	h.subs[id] = ch
	return ch, func() {
		h.mu.Lock()
		defer h.mu.Unlock()
		if c, ok := h.subs[id]; ok {
			delete(h.subs, id)
			close(c)
		}
	}
}

// publish hands ev to every subscriber that has room. It never blocks.
func (h *eventHub) publish(ev Event) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, ch := range h.subs {
		select {
		case ch <- ev:
		default:
			n := h.dropped.Add(1)
			if now := time.Now(); now.Sub(h.lastWarn) >= 10*time.Second {
				h.log.Warn("event subscriber too slow, events dropped", "dropped_total", n, "dropped_since_last_warning", n-h.warned)
				h.lastWarn = now
				h.warned = n
			}
		}
	}
}

// close closes every subscriber's channel; later subscriptions get a
// closed channel.
func (h *eventHub) close() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.closed = true
	for id, ch := range h.subs {
		delete(h.subs, id)
		close(ch)
	}
}
