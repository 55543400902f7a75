package ipam

import "math/bits"

// bitset is a sparse set of small numbers (slice indices, address offsets):
// words of 64 bits keyed by word number, absent words are empty. Finding the
// lowest free number costs one map lookup per 64 taken numbers below it.
type bitset map[uint64]uint64

func (b bitset) has(i uint64) bool { return b[i/64]&(1<<(i%64)) != 0 }

func (b bitset) set(i uint64) { b[i/64] |= 1 << (i % 64) }

func (b bitset) clear(i uint64) {
	w := b[i/64] &^ (1 << (i % 64))
	if w == 0 {
		delete(b, i/64)
	} else {
		b[i/64] = w
	}
}

// firstClear returns the lowest number >= from that is not in the set.
func (b bitset) firstClear(from uint64) uint64 {
	wi := from / 64
	w := b[wi] | lowMask(int(from%64)) // numbers below from count as taken
	for w == ^uint64(0) {
		wi++
		w = b[wi]
	}
	return wi*64 + uint64(bits.TrailingZeros64(^w))
}

func (b bitset) clone() bitset {
	out := make(bitset, len(b))
	for k, v := range b {
		out[k] = v
	}
	return out
}
