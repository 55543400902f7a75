package mesh

import (
	"slices"
	"testing"

	"github.com/hashicorp/memberlist"
)

// The scenario of hashicorp/memberlist#263: a record replaced while it is
// the only one queued, then two more records of the same length. The plain
// queue reuses an id and loses one of them; recordQueue sends every one.
func TestRecordQueueKeepsEveryRecord(t *testing.T) {
	rec := func(name, version string) *recordBroadcast {
		return &recordBroadcast{name: name, msg: []byte("record " + name + " " + version)}
	}
	scenario := func(push func(memberlist.NamedBroadcast)) {
		push(rec("a", "v1"))
		push(rec("a", "v2")) // replaces v1: the queue is empty for a moment
		push(rec("b", "v1"))
		push(rec("c", "v1"))
	}
	want := []string{"record a v2", "record b v1", "record c v1"}
	drain := func(take func() [][]byte) []string {
		seen := map[string]bool{}
		for range 100 {
			msgs := take()
			if len(msgs) == 0 {
				break
			}
			for _, m := range msgs {
				seen[string(m)] = true
			}
		}
		var out []string
		for m := range seen {
			out = append(out, m)
		}
		slices.Sort(out)
		return out
	}
	nodes := func() int { return 10 }

	rq := newRecordQueue(nodes, 2)
	scenario(func(b memberlist.NamedBroadcast) { rq.push(b, false) })
	if rq.len() != 3 {
		t.Errorf("recordQueue holds %d records, want 3", rq.len())
	}
	if got := drain(func() [][]byte { return rq.take(1400) }); !slices.Equal(got, want) {
		t.Errorf("recordQueue sent %q, want %q", got, want)
	}
	if rq.len() != 0 {
		t.Errorf("recordQueue holds %d records after sending them all, want 0", rq.len())
	}

	plain := &memberlist.TransmitLimitedQueue{NumNodes: nodes, RetransmitMult: 2}
	scenario(func(b memberlist.NamedBroadcast) { plain.QueueBroadcast(b) })
	if got := drain(func() [][]byte { return plain.GetBroadcasts(0, 1400) }); slices.Equal(got, want) {
		t.Logf("memberlist's queue no longer loses a record here (fixed upstream?): recordQueue's sentinel may go")
	} else {
		t.Logf("memberlist's queue alone sent %q: the bug recordQueue works around", got)
	}
}

// Records that do not fit the room are left for a later packet, and the
// sentinel is never sent, whatever the room.
func TestRecordQueueTake(t *testing.T) {
	rq := newRecordQueue(func() int { return 1 }, 1)
	if got := rq.take(1 << 20); got != nil {
		t.Fatalf("empty queue gave %d messages", len(got))
	}
	rq.push(&recordBroadcast{name: "big", msg: make([]byte, 500)}, false)
	rq.push(&recordBroadcast{name: "small", msg: make([]byte, 50)}, true)
	if got := rq.take(100); len(got) != 1 || len(got[0]) != 50 {
		t.Fatalf("take(100) gave %d messages", len(got))
	}
	if got := rq.take(1 << 20); len(got) != 1 || len(got[0]) != 500 {
		t.Fatalf("take(1 MiB) gave %d messages", len(got))
	}
	if rq.len() != 0 || rq.take(1<<20) != nil {
		t.Errorf("queue not empty after every record was sent its once: len %d", rq.len())
	}
}

// Spare records (live member markers) get only the room urgent ones leave.
func TestRecordQueueSpareAfterUrgent(t *testing.T) {
	rq := newRecordQueue(func() int { return 1 }, 1) // each record sent once
	rq.push(&recordBroadcast{name: "marker", msg: make([]byte, 500)}, true)
	rq.push(&recordBroadcast{name: "claim", msg: make([]byte, 1000)}, false)
	if got := rq.take(1200); len(got) != 1 || len(got[0]) != 1000 {
		t.Fatalf("first packet: %d messages, want the urgent one alone", len(got))
	}
	if got := rq.take(1200); len(got) != 1 || len(got[0]) != 500 {
		t.Fatalf("second packet: %d messages, want the spare one", len(got))
	}
	rq.push(&recordBroadcast{name: "marker2", msg: make([]byte, 100)}, true)
	rq.push(&recordBroadcast{name: "claim2", msg: make([]byte, 100)}, false)
	if got := rq.take(1200); len(got) != 2 || rq.len() != 0 {
		t.Fatalf("room for both: %d messages, %d left", len(got), rq.len())
	}
}
