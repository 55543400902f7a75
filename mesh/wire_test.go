package mesh

import (
	"bytes"
	"errors"
	"reflect"
	"testing"
)

func TestWireRoundTrip(t *testing.T) {
	tests := []struct {
		name string
		typ  byte
		from string
		recs []Record
	}{
		{"empty state", msgState, "a", []Record{}},
		{"one record", msgRecords, "node-1", []Record{{Kind: "claim", Key: "pk", Value: []byte(`{"x":1}`), Owner: "node-1", Clock: 1767322800000}}},
		{"tombstone and binary", msgState, "b", []Record{
			{Kind: "", Key: "", Value: []byte{0, 1, 2, 255}, Owner: "o", Clock: 1},
			{Kind: "k", Key: "gone", Owner: "o", Clock: ^uint64(0), Deleted: true, Value: []byte{}},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := encodeMessage(tt.typ, tt.from, tt.recs)
			m, err := decodeMessage(b)
			if err != nil {
				t.Fatal(err)
			}
			if m.typ != tt.typ || m.from != tt.from || !reflect.DeepEqual(m.records, tt.recs) {
				t.Errorf("decoded %+v, want %d %q %+v", m, tt.typ, tt.from, tt.recs)
			}
		})
	}
}

func TestWireSummaryDigest(t *testing.T) {
	m, err := decodeMessage(encodeSummary("a", summary{count: 3, sum: 1<<63 + 5}))
	if err != nil || m.typ != msgSummary || m.from != "a" || m.summary != (summary{3, 1<<63 + 5}) {
		t.Errorf("summary decoded %+v, %v", m, err)
	}
	d := []digestEntry{{key: 1, clock: 2, hash: 3}, {key: ^uint64(0), clock: 1 << 40, hash: 0}}
	m, err = decodeMessage(encodeDigest("b", d))
	if err != nil || m.typ != msgDigest || m.from != "b" || !reflect.DeepEqual(m.digest, d) {
		t.Errorf("digest decoded %+v, %v", m, err)
	}
	for _, bad := range [][]byte{
		encodeSummary("a", summary{})[:5],
		append(encodeSummary("a", summary{}), 0),
		encodeDigest("b", d)[:10],
		{1, msgDigest, 0, 0xff, 0xff, 0x03},
	} {
		if _, err := decodeMessage(bad); !errors.Is(err, errMalformed) {
			t.Errorf("decode(%x) = %v", bad, err)
		}
	}
}

func TestDecodeMessageErrors(t *testing.T) {
	good := encodeMessage(msgRecords, "a", []Record{{Kind: "k", Key: "x", Value: []byte("v"), Owner: "a", Clock: 7}})
	tests := []struct {
		name     string
		in       []byte
		wantFrom string
	}{
		{"empty", nil, ""},
		{"unknown version", append([]byte{2}, good[1:]...), ""},
		{"unknown type", append([]byte{1, 9}, good[2:]...), "a"},
		{"truncated header", good[:2], ""},
		{"truncated record", good[:len(good)-1], "a"},
		{"trailing bytes", append(bytes.Clone(good), 0), "a"},
		{"huge count", []byte{1, 1, 1, 'a', 0xff, 0xff, 0xff, 0xff, 0x0f}, "a"},
		{"bad varint", []byte{1, 1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, ""},
		{"unknown flags", bytes.Replace(bytes.Clone(good), []byte{7, 0, 1, 'v'}, []byte{7, 2, 1, 'v'}, 1), "a"},
		{"value over limit", append([]byte{1, 1, 1, 'a', 1, 0, 0, 0, 1, 0, 0x81, 0x80, 0x08}, make([]byte, 16)...), "a"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := decodeMessage(tt.in)
			if err == nil {
				t.Fatalf("decoded %+v, want an error", m)
			}
			if !errors.Is(err, errMalformed) {
				t.Errorf("error %v does not wrap errMalformed", err)
			}
			if m.from != tt.wantFrom {
				t.Errorf("from = %q, want %q", m.from, tt.wantFrom)
			}
		})
	}
}

func FuzzDecodeMessage(f *testing.F) {
	f.Add(encodeMessage(msgRecords, "a", []Record{{Kind: "k", Key: "x", Value: []byte("v"), Owner: "a", Clock: 7}}))
	f.Add(encodeMessage(msgState, "b", []Record{
		{Kind: "claim", Key: "pk", Value: []byte(`{}`), Owner: "b", Clock: 1767322800000},
		{Kind: "claim", Key: "pk2", Owner: "c", Clock: 2, Deleted: true},
	}))
	f.Add(encodeSummary("c", summary{count: 2, sum: 99}))
	f.Add(encodeDigest("d", []digestEntry{{1, 2, 3}}))
	f.Add([]byte{})
	f.Add([]byte{1, 1, 0, 0xff, 0xff, 0xff, 0xff, 0x0f})
	f.Fuzz(func(t *testing.T, b []byte) {
		in := bytes.Clone(b)
		m, err := decodeMessage(b)
		if !bytes.Equal(in, b) {
			t.Fatal("decodeMessage modified its input")
		}
		if err != nil {
			if !errors.Is(err, errMalformed) {
				t.Fatalf("error %v does not wrap errMalformed", err)
			}
			return
		}
		// What decodes re-encodes to something that decodes the same.
		var re []byte
		switch m.typ {
		case msgSummary:
			re = encodeSummary(m.from, m.summary)
		case msgDigest:
			re = encodeDigest(m.from, m.digest)
		default:
			re = encodeMessage(m.typ, m.from, m.records)
		}
		again, err := decodeMessage(re)
		if err != nil {
			t.Fatalf("re-encoded message does not decode: %v", err)
		}
		if !reflect.DeepEqual(again, m) {
			t.Fatalf("round trip changed %+v into %+v", m, again)
		}
		// And the store takes or refuses every record without panicking.
		s := newStore("fuzz", 1, nil, nil)
		s.merge(m.records, originGossip)
	})
}
