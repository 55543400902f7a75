package mesh

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// The gossip wire format of the store (user messages and push/pull user
// state), version 1:
//
//	message = version:u8 (=1) type:u8 from:string body
//	body of type 1 and 2 = count:uvarint record*count
//	record  = kind:string key:string owner:string clock:uvarint flags:u8 value:bytes
//	body of type 3 = count:uvarint sum:u64
//	body of type 4 = count:uvarint (keyhash:u64 clock:uvarint hash:u64)*count
//	string, bytes = length:uvarint data; u64 = 8 bytes big endian
//	flags   = bit 0: deleted; other bits must be zero
//
// type 1 is a broadcast (one record, usually), passed on by receivers;
// type 2 records from anti-entropy (push/pull state, or a sync repair),
// not passed on; type 3 a store summary and type 4 a store digest (see
// sync.go). from is the name of the node that encoded the message (not
// necessarily the records' owner). memberlist compresses and encrypts what
// it sends, so the encoding itself stays simple.
const (
	wireVersion = 1

	msgRecords = 1
	msgState   = 2
	msgSummary = 3
	msgDigest  = 4

	flagDeleted = 1 << 0

	// minRecordSize is the smallest encoded record (empty strings, one-byte
	// clock): it bounds the record count a message of a given size can
	// claim. minDigestSize is the same for a digest entry.
	minRecordSize = 6
	minDigestSize = 17
)

// errMalformed is wrapped by every decodeMessage error.
var errMalformed = errors.New("malformed mesh message")

// message is a decoded wire message.
type message struct {
	typ     byte
	from    string
	records []Record      // msgRecords, msgState
	summary summary       // msgSummary
	digest  []digestEntry // msgDigest
}

// summary is an order-independent fingerprint of a store: its record count
// and the wrapping sum of the records' hashes.
type summary struct {
	count, sum uint64
}

// digestEntry is one record of a digest: the hash of its (kind, key), its
// clock, and the hash of the whole version (recordHash).
type digestEntry struct {
	key, clock, hash uint64
}

// encodeSummary encodes a summary message.
func encodeSummary(from string, s summary) []byte {
	b := make([]byte, 0, 3+len(from)+2*binary.MaxVarintLen64+8)
	b = append(b, wireVersion, msgSummary)
	b = appendString(b, from)
	b = binary.AppendUvarint(b, s.count)
	return binary.BigEndian.AppendUint64(b, s.sum)
}

// encodeDigest encodes a digest message.
func encodeDigest(from string, d []digestEntry) []byte {
	b := make([]byte, 0, 3+len(from)+binary.MaxVarintLen64+len(d)*(16+binary.MaxVarintLen64))
	b = append(b, wireVersion, msgDigest)
	b = appendString(b, from)
	b = binary.AppendUvarint(b, uint64(len(d)))
	for _, e := range d {
		b = binary.BigEndian.AppendUint64(b, e.key)
		b = binary.AppendUvarint(b, e.clock)
		b = binary.BigEndian.AppendUint64(b, e.hash)
	}
	return b
}

// encodeMessage encodes records as a message of type typ sent by from.
func encodeMessage(typ byte, from string, records []Record) []byte {
	size := 3 + len(from) + binary.MaxVarintLen64
	for _, r := range records {
		size += recordSize(r)
	}
	b := make([]byte, 0, size)
	b = append(b, wireVersion, typ)
	b = appendString(b, from)
	b = binary.AppendUvarint(b, uint64(len(records)))
	for _, r := range records {
		b = appendRecord(b, r)
	}
	return b
}

// recordSize is an upper bound of r's encoded size.
func recordSize(r Record) int {
	return len(r.Kind) + len(r.Key) + len(r.Owner) + len(r.Value) + 5*binary.MaxVarintLen64 + 1
}

func appendRecord(b []byte, r Record) []byte {
	b = appendString(b, r.Kind)
	b = appendString(b, r.Key)
	b = appendString(b, r.Owner)
	b = binary.AppendUvarint(b, r.Clock)
	var flags byte
	if r.Deleted {
		flags |= flagDeleted
	}
	b = append(b, flags)
	b = binary.AppendUvarint(b, uint64(len(r.Value)))
	return append(b, r.Value...)
}

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

// decodeMessage parses a wire message. It never panics and never keeps a
// reference to b. On error the returned message carries whatever header
// fields were read (from, for the log line) and the error wraps
// errMalformed.
func decodeMessage(b []byte) (message, error) {
	var m message
	d := decoder{b: b}
	version := d.byte()
	if d.err != nil {
		return m, fmt.Errorf("%w: empty", errMalformed)
	}
	if version != wireVersion {
		return m, fmt.Errorf("%w: unknown version %d", errMalformed, version)
	}
	m.typ = d.byte()
	m.from = d.string(maxNameSize)
	if d.err != nil {
		return m, fmt.Errorf("%w: header: %v", errMalformed, d.err)
	}
	if m.typ < msgRecords || m.typ > msgDigest {
		return m, fmt.Errorf("%w: unknown type %d", errMalformed, m.typ)
	}
	count := d.uvarint()
	if d.err != nil {
		return m, fmt.Errorf("%w: count: %v", errMalformed, d.err)
	}
	switch m.typ {
	case msgSummary:
		m.summary = summary{count: count, sum: d.u64()}
		return m, d.finish()
	case msgDigest:
		if count > uint64(len(d.b)/minDigestSize) {
			return m, fmt.Errorf("%w: %d digest entries claimed in %d bytes", errMalformed, count, len(d.b))
		}
		m.digest = make([]digestEntry, 0, count)
		for range count {
			m.digest = append(m.digest, digestEntry{key: d.u64(), clock: d.uvarint(), hash: d.u64()})
		}
		return m, d.finish()
	}
	if count > uint64(len(d.b)/minRecordSize) {
		return m, fmt.Errorf("%w: %d records claimed in %d bytes", errMalformed, count, len(d.b))
	}
	m.records = make([]Record, 0, count)
	for i := range count {
		var r Record
		r.Kind = d.string(maxNameSize)
		r.Key = d.string(maxNameSize)
		r.Owner = d.string(maxNameSize)
		r.Clock = d.uvarint()
		flags := d.byte()
		r.Value = d.bytes(MaxValueSize)
		if d.err != nil {
			return m, fmt.Errorf("%w: record %d: %v", errMalformed, i, d.err)
		}
		if flags&^flagDeleted != 0 {
			return m, fmt.Errorf("%w: record %d: unknown flags %#x", errMalformed, i, flags)
		}
		r.Deleted = flags&flagDeleted != 0
		m.records = append(m.records, r)
	}
	return m, d.finish()
}

// finish reports the first error, or trailing bytes, wrapped in
// errMalformed.
func (d *decoder) finish() error {
	if d.err != nil {
		return fmt.Errorf("%w: %v", errMalformed, d.err)
	}
	if len(d.b) != 0 {
		return fmt.Errorf("%w: %d trailing bytes", errMalformed, len(d.b))
	}
	return nil
}

func (d *decoder) u64() uint64 {
	if d.err != nil {
		return 0
	}
	if len(d.b) < 8 {
		d.err = errors.New("truncated")
		return 0
	}
	v := binary.BigEndian.Uint64(d.b)
	d.b = d.b[8:]
	return v
}

// decoder reads from b and remembers the first error; after an error every
// read returns a zero value.
type decoder struct {
	b   []byte
	err error
}

func (d *decoder) byte() byte {
	if d.err != nil {
		return 0
	}
	if len(d.b) < 1 {
		d.err = errors.New("truncated")
		return 0
	}
	v := d.b[0]
	d.b = d.b[1:]
	return v
}

func (d *decoder) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.err = errors.New("bad varint")
		return 0
	}
	d.b = d.b[n:]
	return v
}

// bytes reads a length-prefixed byte string of at most limit bytes, copied.
func (d *decoder) bytes(limit int) []byte {
	n := d.uvarint()
	if d.err != nil {
		return nil
	}
	if n > uint64(limit) {
		d.err = fmt.Errorf("field of %d bytes exceeds %d", n, limit)
		return nil
	}
	if n > uint64(len(d.b)) {
		d.err = errors.New("truncated")
		return nil
	}
	v := make([]byte, n)
	copy(v, d.b)
	d.b = d.b[n:]
	return v
}

func (d *decoder) string(limit int) string {
	return string(d.bytes(limit))
}
