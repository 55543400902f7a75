//go:build linux

package natd

import (
	"encoding/binary"
	"fmt"
	"net/netip"

	"github.com/google/nftables"
	"golang.org/x/sys/unix"
)

// The port maps' elements, per family, as natd holds them in memory: keys
// and values packed in comparable values without pointers (cheap to hash
// and compare; the maps hold thousands), and their bytes in the kernel.
// IPv4 packs into integers; IPv6 needs its 16-byte addresses.
type (
	// elemKey and elemVal are an IPv4 map's key and value:
	//
	//	ports_any key:  proto<<16 | port
	//	ports_addr key: addr<<24 | proto<<16 | port
	//	value:          addr<<16 | port
	elemKey uint64
	elemVal uint64
	// elemKey6 and elemVal6 are an IPv6 map's key (addr zero in
	// ports6_any) and value.
	elemKey6 struct {
		addr [16]byte
		pp   uint32 // proto<<16 | port
	}
	elemVal6 struct {
		addr [16]byte
		port uint32
	}
)

// elemCodec is one family's element encoding: the kernel's bytes of a key
// and a value of its maps, the inverse, and the stale UDP port an element
// stands for.
type elemCodec[K, V comparable] interface {
	keyBytes(set string, k K) []byte
	valBytes(v V) []byte
	// parse is the inverse of keyBytes and valBytes; ok is false for an
	// element zlmesh cannot have written.
	parse(set string, key, val []byte) (k K, v V, ok bool)
	// udp is the port of an element if it is a UDP one.
	udp(set string, k K, v V) (staleUDP, bool)
}

type (
	codec4 struct{}
	codec6 struct{}
)

var (
	_ elemCodec[elemKey, elemVal]   = codec4{}
	_ elemCodec[elemKey6, elemVal6] = codec6{}
)

// portElem is the map element of one IPv4 KindPublish rule.
func portElem(r Rule) (set string, k elemKey, v elemVal) {
	proto, _ := protoNumber(r.Proto)
	t := r.Target.Addr().As4()
	v = elemVal(binary.BigEndian.Uint32(t[:]))<<16 | elemVal(r.Target.Port())
	k = elemKey(proto)<<16 | elemKey(r.HostPort)
	if !r.HostAddr.IsValid() {
		return setPortsAny, k, v
	}
	h := r.HostAddr.As4()
	return setPortsAddr, elemKey(binary.BigEndian.Uint32(h[:]))<<24 | k, v
}

// portElem6 is the map element of one IPv6 KindPublish rule.
func portElem6(r Rule) (set string, k elemKey6, v elemVal6) {
	proto, _ := protoNumber(r.Proto)
	k.pp = uint32(proto)<<16 | uint32(r.HostPort)
	v = elemVal6{addr: r.Target.Addr().As16(), port: uint32(r.Target.Port())}
	if !r.HostAddr.IsValid() {
		return setPorts6Any, k, v
	}
	k.addr = r.HostAddr.As16()
	return setPorts6Addr, k, v
}

// keyBytes is k as the kernel holds it in set: each field in network
// order, padded to 4 bytes (ipv4_addr . inet_proto . inet_service).
func (codec4) keyBytes(set string, k elemKey) []byte {
	b := make([]byte, 0, 12)
	if set == setPortsAddr {
		b = binary.BigEndian.AppendUint32(b, uint32(k>>24))
	}
	b = append(b, byte(k>>16), 0, 0, 0)
	b = binary.BigEndian.AppendUint16(b, uint16(k)) // port
	return append(b, 0, 0)
}

// valBytes is v as the kernel holds it (ipv4_addr . inet_service).
func (codec4) valBytes(v elemVal) []byte {
	b := binary.BigEndian.AppendUint32(make([]byte, 0, 8), uint32(v>>16))
	return append(binary.BigEndian.AppendUint16(b, uint16(v)), 0, 0)
}

func (codec4) parse(set string, key, val []byte) (k elemKey, v elemVal, ok bool) {
	want := 8
	if set == setPortsAddr {
		want = 12
	}
	if len(key) != want || len(val) != 8 || val[6] != 0 || val[7] != 0 {
		return 0, 0, false
	}
	if set == setPortsAddr {
		k = elemKey(binary.BigEndian.Uint32(key))<<24 | elemKey(key[4])<<16 | elemKey(binary.BigEndian.Uint16(key[8:]))
		if key[5]|key[6]|key[7]|key[10]|key[11] != 0 {
			return 0, 0, false
		}
	} else {
		k = elemKey(key[0])<<16 | elemKey(binary.BigEndian.Uint16(key[4:]))
		if key[1]|key[2]|key[3]|key[6]|key[7] != 0 {
			return 0, 0, false
		}
	}
	return k, elemVal(binary.BigEndian.Uint32(val))<<16 | elemVal(binary.BigEndian.Uint16(val[4:])), true
}

func (codec4) udp(set string, k elemKey, v elemVal) (staleUDP, bool) {
	if uint8(k>>16) != unix.IPPROTO_UDP {
		return staleUDP{}, false
	}
	u := staleUDP{hostPort: uint16(k), target: netip.AddrPortFrom(addr4(uint32(v>>16)), uint16(v))}
	if set == setPortsAddr {
		u.hostAddr = addr4(uint32(k >> 24))
	}
	return u, true
}

func addr4(a uint32) netip.Addr {
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], a)
	return netip.AddrFrom4(b)
}

// keyBytes is k as the kernel holds it in set ([ipv6_addr .] inet_proto .
// inet_service).
func (codec6) keyBytes(set string, k elemKey6) []byte {
	b := make([]byte, 0, 24)
	if set == setPorts6Addr {
		b = append(b, k.addr[:]...)
	}
	b = append(b, byte(k.pp>>16), 0, 0, 0)
	b = binary.BigEndian.AppendUint16(b, uint16(k.pp))
	return append(b, 0, 0)
}

// valBytes is v as the kernel holds it (ipv6_addr . inet_service).
func (codec6) valBytes(v elemVal6) []byte {
	b := append(make([]byte, 0, 20), v.addr[:]...)
	return append(binary.BigEndian.AppendUint16(b, uint16(v.port)), 0, 0)
}

func (codec6) parse(set string, key, val []byte) (k elemKey6, v elemVal6, ok bool) {
	want := 8
	if set == setPorts6Addr {
		want = 24
	}
	if len(key) != want || len(val) != 20 || val[18]|val[19] != 0 {
		return k, v, false
	}
	if set == setPorts6Addr {
		k.addr = [16]byte(key)
		key = key[16:]
	}
	if key[1]|key[2]|key[3]|key[6]|key[7] != 0 {
		return elemKey6{}, v, false
	}
	k.pp = uint32(key[0])<<16 | uint32(binary.BigEndian.Uint16(key[4:]))
	v = elemVal6{addr: [16]byte(val), port: uint32(binary.BigEndian.Uint16(val[16:]))}
	return k, v, true
}

func (codec6) udp(set string, k elemKey6, v elemVal6) (staleUDP, bool) {
	if k.pp>>16 != unix.IPPROTO_UDP {
		return staleUDP{}, false
	}
	u := staleUDP{hostPort: uint16(k.pp), target: netip.AddrPortFrom(netip.AddrFrom16(v.addr), uint16(v.port))}
	if set == setPorts6Addr {
		u.hostAddr = netip.AddrFrom16(k.addr)
	}
	return u, true
}

// diffElems returns the elements to delete from and add to set to turn h
// into w, and the UDP ports of those deleted.
func diffElems[K, V comparable, C elemCodec[K, V]](c C, set string, h, w map[K]V) (del, add []nftables.SetElement, stale []staleUDP) {
	same := 0
	for k, wv := range w {
		if hv, ok := h[k]; ok && hv == wv {
			same++
		} else {
			add = append(add, nftables.SetElement{Key: c.keyBytes(set, k), Val: c.valBytes(wv)})
		}
	}
	if same < len(h) { // some of have is not wanted as it is
		for k, hv := range h {
			if wv, ok := w[k]; !ok || wv != hv {
				del = append(del, nftables.SetElement{Key: c.keyBytes(set, k)})
				if u, ok := c.udp(set, k, hv); ok {
					stale = append(stale, u)
				}
			}
		}
	}
	return del, add, stale
}

// staleElems appends to s every UDP element of have that want does not
// hold as it is.
func staleElems[K, V comparable, C elemCodec[K, V]](c C, have, want map[string]map[K]V, s []staleUDP) []staleUDP {
	for set, h := range have {
		for k, hv := range h {
			if wv, ok := want[set][k]; !ok || wv != hv {
				if u, ok := c.udp(set, k, hv); ok {
					s = append(s, u)
				}
			}
		}
	}
	return s
}

// allElems is every element of m, to add to set.
func allElems[K, V comparable, C elemCodec[K, V]](c C, set string, m map[K]V) []nftables.SetElement {
	add := make([]nftables.SetElement, 0, len(m))
	for k, v := range m {
		add = append(add, nftables.SetElement{Key: c.keyBytes(set, k), Val: c.valBytes(v)})
	}
	return add
}

// parseElems reads the elements of set as the kernel listed them.
func parseElems[K, V comparable, C elemCodec[K, V]](c C, set string, elems []nftables.SetElement) (map[K]V, error) {
	m := make(map[K]V, len(elems))
	for _, e := range elems {
		k, v, ok := c.parse(set, e.Key, e.Val)
		if !ok {
			return nil, fmt.Errorf("set %s: element %x : %x is not one zlmesh writes", set, e.Key, e.Val)
		}
		m[k] = v
	}
	return m, nil
}

// setDiff is diffElems on the set's family's maps of have and want.
func setDiff(set string, have, want *state) (del, add []nftables.SetElement, stale []staleUDP) {
	if portSets[set].six {
		return diffElems(codec6{}, set, have.Elems6[set], want.Elems6[set])
	}
	return diffElems(codec4{}, set, have.Elems[set], want.Elems[set])
}

// setElems is allElems on the set's family's map of s.
func setElems(set string, s *state) []nftables.SetElement {
	if portSets[set].six {
		return allElems(codec6{}, set, s.Elems6[set])
	}
	return allElems(codec4{}, set, s.Elems[set])
}

// readElems parses the listed elements of set into s.
func readElems(set string, elems []nftables.SetElement, s *state) (err error) {
	if portSets[set].six {
		s.Elems6[set], err = parseElems(codec6{}, set, elems)
	} else {
		s.Elems[set], err = parseElems(codec4{}, set, elems)
	}
	return err
}

// staleAll is every UDP element of have that want does not hold as it is.
func staleAll(have, want *state) []staleUDP {
	return staleElems(codec6{}, have.Elems6, want.Elems6, staleElems(codec4{}, have.Elems, want.Elems, nil))
}
