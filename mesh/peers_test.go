package mesh

import (
	"testing"
	"time"
)

// The first re-join attempt at a peer that is not alive waits a random
// delay: up to RejoinMax for a member that went away (it may come back by
// itself), at most 2×RejoinMin for a peer known only from its marker
// record (its alive broadcast most likely missed this node). Alone, every
// target is due at once.
func TestPeerBookFirstDelay(t *testing.T) {
	const minB, maxB = time.Second, 30 * time.Second
	now := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
	tests := []struct {
		name     string
		add      func(b *peerBook)
		alone    bool
		lo, hi   time.Duration
		dueAtNow bool
	}{
		{"member gone", func(b *peerBook) { b.seen("p", "192.0.2.2:7946", now.Add(-time.Minute)) }, false, minB, maxB, false},
		{"known from its marker", func(b *peerBook) { b.hint("p", "192.0.2.2:7946", now) }, false, minB, 2 * minB, false},
		{"marker, then seen", func(b *peerBook) {
			b.hint("p", "192.0.2.2:7946", now)
			b.seen("p", "192.0.2.2:7946", now)
		}, false, minB, maxB, false},
		{"alone", func(b *peerBook) { b.hint("p", "192.0.2.2:7946", now) }, true, 0, 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for range 200 { // the delay is random: its range must hold every time
				var b peerBook
				if err := b.init("", nil, "self", minB, maxB); err != nil {
					t.Fatal(err)
				}
				tt.add(&b)
				alive := map[string]string{"q": "192.0.2.3:7946"}
				if tt.alone {
					alive = nil
				}
				got := b.due(now, alive, "192.0.2.1:7946")
				if tt.dueAtNow {
					if len(got) != 1 {
						t.Fatalf("due %d targets, want the peer at once", len(got))
					}
					return
				}
				if len(got) != 0 {
					t.Fatalf("due %d targets at once, want a delay", len(got))
				}
				d := b.peers["p"].next.Sub(now)
				if d < tt.lo || d > tt.hi {
					t.Fatalf("first attempt after %v, want %v–%v", d, tt.lo, tt.hi)
				}
			}
		})
	}
}
