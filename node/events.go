package node

import (
	"sync"
	"time"

	"github.com/zlmesh/zlmesh/api"
)

// eventHub fans node events out to the /v1/events streams. Publishing never
// blocks: a subscriber whose buffer is full loses the event, and its stream
// carries an api.EventDropped event counting the losses before the next
// event it does get.
type eventHub struct {
	mu   sync.Mutex
	subs map[*eventSub]struct{}
}

type eventSub struct {
	ch      chan api.Event
	dropped int
}

const eventBuffer = 256

func newEventHub() *eventHub { return &eventHub{subs: map[*eventSub]struct{}{}} }

// publish stamps ev with the time (if unset) and hands it to every subscriber.
func (h *eventHub) publish(ev api.Event) {
	if ev.Time.IsZero() {
		ev.Time = time.Now().UTC()
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	for s := range h.subs {
		select {
		case s.ch <- ev:
		default:
			s.dropped++
		}
	}
}

// subscribe returns a channel of events, a function that returns (and
// resets) how many events the subscriber lost since it was last called, and
// a cancel function that must be called when the reader is done.
func (h *eventHub) subscribe() (<-chan api.Event, func() int, func()) {
	s := &eventSub{ch: make(chan api.Event, eventBuffer)}
	h.mu.Lock()
	h.subs[s] = struct{}{}
	h.mu.Unlock()
	lost := func() int {
		h.mu.Lock()
		defer h.mu.Unlock()
		n := s.dropped
		s.dropped = 0
		return n
	}
	return s.ch, lost, func() {
		h.mu.Lock()
		delete(h.subs, s)
		h.mu.Unlock()
	}
}
