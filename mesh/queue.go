package mesh

import (
	"github.com/hashicorp/memberlist"
)

// recordQueue is the transmit queue of records to broadcast: two of
// memberlist's TransmitLimitedQueue (each record sent RetransmitMult ×
// log10(n) times, the least sent first, a newer version of a record
// replacing the queued one), an urgent one and one for records that only
// get the room the urgent ones leave, each kept from losing records to a
// bug of that queue.
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
// any packet) stays in each queue, so it is never empty and ids are never
// reused.
type recordQueue struct {
	urgent, spare memberlist.TransmitLimitedQueue
}

// sentinelBroadcast keeps a queue from ever being empty (see
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
	rq := &recordQueue{
		urgent: memberlist.TransmitLimitedQueue{NumNodes: nodes, RetransmitMult: mult},
		spare:  memberlist.TransmitLimitedQueue{NumNodes: nodes, RetransmitMult: mult},
	}
	rq.urgent.QueueBroadcast(sentinelBroadcast{})
	rq.spare.QueueBroadcast(sentinelBroadcast{})
	return rq
}

// push queues b, replacing a queued broadcast of the same name (in the
// same queue: a record is always queued with the same urgency). A spare
// broadcast is only sent in the room the urgent ones leave.
func (rq *recordQueue) push(b memberlist.NamedBroadcast, spare bool) {
	if spare {
		rq.spare.QueueBroadcast(b)
	} else {
		rq.urgent.QueueBroadcast(b)
	}
}

// take returns the queued messages due for sending that fit in limit bytes
// together (at most 64 KiB - 1, which the sentinels never fit), urgent ones
// first, each counted as sent once.
func (rq *recordQueue) take(limit int) [][]byte {
	limit = min(limit, len(sentinelMessage)-1)
	if limit <= 0 || rq.len() == 0 {
		return nil
	}
	msgs := rq.urgent.GetBroadcasts(0, limit)
	for _, m := range msgs {
		limit -= len(m)
	}
	if limit > 0 && rq.spare.NumQueued() > 1 {
		msgs = append(msgs, rq.spare.GetBroadcasts(0, limit)...)
	}
	return msgs
}

// len returns how many records are queued.
func (rq *recordQueue) len() int { return rq.urgent.NumQueued() + rq.spare.NumQueued() - 2 }
