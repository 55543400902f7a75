package mesh

import (
	"github.com/hashicorp/memberlist"
)

// recordQueue is the transmit queue of records to broadcast: memberlist's
// TransmitLimitedQueue (each record sent RetransmitMult × log10(n) times,
// the least sent first, a newer version of a record replacing the queued
// one), kept from losing records to a bug of that queue.
//
// The bug (hashicorp/memberlist#263, unfixed in v0.7.0): the queue resets
// its id generator whenever it becomes empty, which happens for a moment
// inside GetBroadcasts (every item taken out before the re-insertion) and
// when a named broadcast replaces the only one queued. Items are ordered by
// (transmits, length, id) in a B-tree that holds one item per key, so a
// later item with a reused id, once it reaches the tier of an older item of
// the same length, silently replaces it: that record is never sent again,
// and never reported Finished. Claim records are all about the same length,
// so in a 50-node burst join the records of a few nodes were lost this way
// and spread only by the store sync, tens of seconds later (bench/sim).
//
// The fix: a sentinel item that is never sent (its message is larger than
// any packet) stays in the queue, so it is never empty and ids are never
// reused.
type recordQueue struct {
	q memberlist.TransmitLimitedQueue
}

// sentinelBroadcast keeps the queue from ever being empty (see
// recordQueue). Its message does not fit any gossip packet.
type sentinelBroadcast struct{}

var sentinelMessage = make([]byte, 64<<10)

func (sentinelBroadcast) Invalidates(memberlist.Broadcast) bool { return false }
func (sentinelBroadcast) Message() []byte                       { return sentinelMessage }
func (sentinelBroadcast) Finished()                             {}
func (sentinelBroadcast) UniqueBroadcast()                      {}

// newRecordQueue returns a queue sending each record mult × log10(nodes())
// times (rounded up).
func newRecordQueue(nodes func() int, mult int) *recordQueue {
	rq := &recordQueue{q: memberlist.TransmitLimitedQueue{NumNodes: nodes, RetransmitMult: mult}}
	rq.q.QueueBroadcast(sentinelBroadcast{})
	return rq
}

// push queues b, replacing a queued broadcast of the same name.
func (rq *recordQueue) push(b memberlist.NamedBroadcast) { rq.q.QueueBroadcast(b) }

// take returns the queued messages due for sending that fit in limit bytes
// together (at most 64 KiB - 1, which the sentinel never fits), each
// counted as sent once.
func (rq *recordQueue) take(limit int) [][]byte {
	if limit <= 0 || rq.len() == 0 {
		return nil
	}
	return rq.q.GetBroadcasts(0, min(limit, len(sentinelMessage)-1))
}

// len returns how many records are queued.
func (rq *recordQueue) len() int { return rq.q.NumQueued() - 1 }
