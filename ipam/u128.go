package ipam

import (
	"encoding/binary"
	"math/bits"
	"net/netip"
)

// u128 is an address as a 128-bit unsigned number, so that the arithmetic of
// the pool is the same for IPv4 (in the low 32 bits) and IPv6.
type u128 struct{ hi, lo uint64 }

func fromAddr(a netip.Addr) u128 {
	if a.Is4() {
		b := a.As4()
		return u128{lo: uint64(binary.BigEndian.Uint32(b[:]))}
	}
	b := a.As16()
	return u128{hi: binary.BigEndian.Uint64(b[:8]), lo: binary.BigEndian.Uint64(b[8:])}
}

// addr converts v back to an address of the family of is4; for IPv4 only the
// low 32 bits count.
func (v u128) addr(is4 bool) netip.Addr {
	if is4 {
		var b [4]byte
		binary.BigEndian.PutUint32(b[:], uint32(v.lo))
		return netip.AddrFrom4(b)
	}
	var b [16]byte
	binary.BigEndian.PutUint64(b[:8], v.hi)
	binary.BigEndian.PutUint64(b[8:], v.lo)
	return netip.AddrFrom16(b)
}

func (v u128) add(o u128) u128 {
	lo, c := bits.Add64(v.lo, o.lo, 0)
	hi, _ := bits.Add64(v.hi, o.hi, c)
	return u128{hi, lo}
}

func (v u128) sub(o u128) u128 {
	lo, b := bits.Sub64(v.lo, o.lo, 0)
	hi, _ := bits.Sub64(v.hi, o.hi, b)
	return u128{hi, lo}
}

// shifted returns x << s as a 128-bit number.
func shifted(x uint64, s int) u128 {
	switch {
	case s <= 0:
		return u128{lo: x}
	case s >= 128:
		return u128{}
	case s >= 64:
		return u128{hi: x << (s - 64)}
	default:
		return u128{hi: x >> (64 - s), lo: x << s}
	}
}

// shiftedDown returns v >> s truncated to 64 bits.
func (v u128) shiftedDown(s int) uint64 {
	switch {
	case s <= 0:
		return v.lo
	case s >= 128:
		return 0
	case s >= 64:
		return v.hi >> (s - 64)
	default:
		return v.lo>>s | v.hi<<(64-s)
	}
}

// lowMask is the largest number of n bits (n <= 64).
func lowMask(n int) uint64 {
	if n <= 0 {
		return 0
	}
	if n >= 64 {
		return ^uint64(0)
	}
	return 1<<n - 1
}

// offsetIn returns the position of a inside prefix p (a - p's base). ok is
// false when a is not in p or the position does not fit in 64 bits.
func offsetIn(p netip.Prefix, a netip.Addr) (uint64, bool) {
	if !p.Contains(a) {
		return 0, false
	}
	d := fromAddr(a).sub(fromAddr(p.Addr()))
	if d.hi != 0 {
		return 0, false
	}
	return d.lo, true
}

// nth returns the address at position off inside prefix p (p's base + off).
func nth(p netip.Prefix, off uint64) netip.Addr {
	return fromAddr(p.Addr()).add(u128{lo: off}).addr(p.Addr().Is4())
}

// child returns the index-th prefix of length bits inside p.
func child(p netip.Prefix, bits int, index uint64) netip.Prefix {
	total := p.Addr().BitLen()
	base := fromAddr(p.Addr()).add(shifted(index, total-bits))
	return netip.PrefixFrom(base.addr(p.Addr().Is4()), bits)
}

// childIndex returns the index of the prefix of length bits inside p that
// holds a.
func childIndex(p netip.Prefix, bits int, a netip.Addr) uint64 {
	total := a.BitLen()
	d := fromAddr(a).sub(fromAddr(p.Addr()))
	return d.shiftedDown(total-bits) & lowMask(bits-p.Bits())
}
