//go:build linux

package natd

import (
	"bytes"
	"net/netip"
	"testing"
)

func TestElemEncoding(t *testing.T) {
	tests := []struct {
		port     Port
		set      string
		key, val []byte
	}{
		{Port{Proto: "tcp", HostPort: 8080, Target: netip.MustParseAddrPort("10.200.3.34:80")},
			setPortsAny, []byte{6, 0, 0, 0, 0x1f, 0x90, 0, 0}, []byte{10, 200, 3, 34, 0, 80, 0, 0}},
		{Port{Proto: "udp", HostAddr: netip.MustParseAddr("192.0.2.10"), HostPort: 65535, Target: netip.MustParseAddrPort("10.200.255.254:65535")},
			setPortsAddr, []byte{192, 0, 2, 10, 17, 0, 0, 0, 0xff, 0xff, 0, 0}, []byte{10, 200, 255, 254, 0xff, 0xff, 0, 0}},
		{Port{Proto: "tcp", HostPort: 8080, Target6: netip.MustParseAddrPort("[fd00:200:0:3::22]:80")},
			setPorts6Any, []byte{6, 0, 0, 0, 0x1f, 0x90, 0, 0}, []byte{0xfd, 0, 2, 0, 0, 0, 0, 3, 0, 0, 0, 0, 0, 0, 0, 0x22, 0, 80, 0, 0}},
		{Port{Proto: "udp", HostAddr: netip.MustParseAddr("2001:db8::10"), HostPort: 53, Target6: netip.MustParseAddrPort("[fd00:200:0:5::7]:5353")},
			setPorts6Addr, []byte{0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10, 17, 0, 0, 0, 0, 53, 0, 0},
			[]byte{0xfd, 0, 2, 0, 0, 0, 0, 5, 0, 0, 0, 0, 0, 0, 0, 7, 0x14, 0xe9, 0, 0}},
	}
	for _, tt := range tests {
		t.Run(tt.port.String(), func(t *testing.T) {
			target := tt.port.Target
			if tt.port.Target6.IsValid() {
				target = tt.port.Target6
			}
			set, kb, vb := encodeRule(Rule{Kind: KindPublish, Proto: tt.port.Proto, HostAddr: tt.port.HostAddr, HostPort: tt.port.HostPort, Target: target})
			if set != tt.set {
				t.Fatalf("set %s, want %s", set, tt.set)
			}
			if !bytes.Equal(kb, tt.key) || !bytes.Equal(vb, tt.val) {
				t.Errorf("encoded %x : %x, want %x : %x", kb, vb, tt.key, tt.val)
			}
			k2, v2, ok := reencode(set, tt.key, tt.val)
			if !ok || !bytes.Equal(k2, kb) || !bytes.Equal(v2, vb) {
				t.Errorf("parse and encode %x : %x = %x : %x, %v", tt.key, tt.val, k2, v2, ok)
			}
		})
	}
	for _, bad := range [][2][]byte{
		{{6, 0, 0, 0, 0x1f, 0x90, 0}, {10, 200, 3, 34, 0, 80, 0, 0}},
		{{6, 1, 0, 0, 0x1f, 0x90, 0, 0}, {10, 200, 3, 34, 0, 80, 0, 0}},
		{{6, 0, 0, 0, 0x1f, 0x90, 0, 0}, {10, 200, 3, 34, 0, 80, 0, 1}},
	} {
		if _, _, ok := reencode(setPortsAny, bad[0], bad[1]); ok {
			t.Errorf("the parser accepted %x : %x", bad[0], bad[1])
		}
	}
	for _, bad := range []struct {
		set      string
		key, val []byte
	}{
		{setPorts6Any, []byte{6, 0, 0, 0, 0x1f, 0x90, 0, 0}, []byte{10, 200, 3, 34, 0, 80, 0, 0}}, // IPv4 value
		{setPortsAny, []byte{6, 0, 0, 0, 0x1f, 0x90, 0, 0}, make([]byte, 20)},                     // IPv6 value
		{setPorts6Addr, []byte{192, 0, 2, 10, 17, 0, 0, 0, 0, 53, 0, 0}, make([]byte, 20)},        // IPv4 key
		{"ports7_any", []byte{6, 0, 0, 0, 0x1f, 0x90, 0, 0}, make([]byte, 20)},
	} {
		if _, _, ok := reencode(bad.set, bad.key, bad.val); ok {
			t.Errorf("the parser of %s accepted %x : %x", bad.set, bad.key, bad.val)
		}
	}
}

// FuzzKernelData feeds arbitrary bytes to the parsers of what natd reads
// back from the kernel (rule comments, port map elements): no panic, and
// whatever the element parsers accept encode back to the same bytes.
func FuzzKernelData(f *testing.F) {
	f.Add(commentData("zlmesh hairpin #0123456789ab"), []byte{6, 0, 0, 0, 0x1f, 0x90, 0, 0}, []byte{10, 200, 3, 34, 0, 80, 0, 0}, uint8(0))
	f.Add([]byte{0, 200, 'x'}, []byte{192, 0, 2, 10, 17, 0, 0, 0, 0, 53, 0, 0}, []byte{10, 200, 5, 7, 0, 53, 0, 0}, uint8(1))
	f.Add([]byte{3, 1, 0, 0, 2, 'a', 0}, []byte{}, []byte{1}, uint8(1))
	f.Add([]byte{}, []byte{0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10, 17, 0, 0, 0, 0, 53, 0, 0},
		[]byte{0xfd, 0, 2, 0, 0, 0, 0, 5, 0, 0, 0, 0, 0, 0, 0, 7, 0x14, 0xe9, 0, 0}, uint8(3))
	f.Fuzz(func(t *testing.T, ud, key, val []byte, which uint8) {
		_ = comment(ud)
		set := setOrder[int(which)%len(setOrder)]
		kb, vb, ok := reencode(set, key, val)
		if !ok {
			return
		}
		if !bytes.Equal(kb, key) || !bytes.Equal(vb, val) {
			t.Fatalf("%x : %x parsed and encoded back as %x : %x", key, val, kb, vb)
		}
	})
}

func TestComment(t *testing.T) {
	for _, tt := range []struct {
		ud   []byte
		want string
	}{
		{commentData("zlmesh x #1"), "zlmesh x #1"},
		{append([]byte{7, 2, 1, 2}, commentData("after another tlv")...), "after another tlv"},
		{[]byte{0, 9, 'a'}, ""}, // length past the end
		{[]byte{0}, ""},
		{nil, ""},
	} {
		if got := comment(tt.ud); got != tt.want {
			t.Errorf("comment(%x) = %q, want %q", tt.ud, got, tt.want)
		}
	}
}

// encodeRule is the set and the kernel's bytes of the element of a
// KindPublish rule.
func encodeRule(r Rule) (set string, key, val []byte) {
	if r.Is6() {
		set, k, v := portElem6(r)
		return set, codec6{}.keyBytes(set, k), codec6{}.valBytes(v)
	}
	set, k, v := portElem(r)
	return set, codec4{}.keyBytes(set, k), codec4{}.valBytes(v)
}

// reencode parses key and val as an element of set and encodes it back;
// ok is false when the parser refuses it.
func reencode(set string, key, val []byte) (k2, v2 []byte, ok bool) {
	if portSets[set].six {
		return reencodeWith(codec6{}, set, key, val)
	}
	return reencodeWith(codec4{}, set, key, val)
}

func reencodeWith[K, V comparable, C elemCodec[K, V]](c C, set string, key, val []byte) ([]byte, []byte, bool) {
	k, v, ok := c.parse(set, key, val)
	if !ok {
		return nil, nil, false
	}
	return c.keyBytes(set, k), c.valBytes(v), true
}
