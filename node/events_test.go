package node

import (
	"testing"

	"github.com/zlmesh/zlmesh/api"
)

// A slow reader loses events without blocking the publisher, and learns how
// many it lost.
func TestEventHubSlowReader(t *testing.T) {
	h := newEventHub()
	ch, lost, cancel := h.subscribe()
	defer cancel()
	for i := 0; i < eventBuffer+10; i++ {
		h.publish(api.Event{Type: api.EventAttach})
	}
	if len(ch) != eventBuffer {
		t.Fatalf("buffered %d, want %d", len(ch), eventBuffer)
	}
	if n := lost(); n != 10 {
		t.Errorf("lost %d, want 10", n)
	}
	if n := lost(); n != 0 {
		t.Errorf("lost count not reset: %d", n)
	}
	ev := <-ch
	if ev.Time.IsZero() || ev.Type != api.EventAttach {
		t.Errorf("event %+v", ev)
	}
}
