package mesh

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// The gossip wire format of the store (user messages and push/pull user
// state), version 1:
//
//	message = version:u8 (=1) type:u8 from:string count:uvarint record*count
//	record  = kind:string key:string owner:string clock:uvarint flags:u8 value:bytes
//	string, bytes = length:uvarint data
//	flags   = bit 0: deleted; other bits must be zero
//
// type 1 is a broadcast (one record, usually), type 2 the whole store for
// anti-entropy. from is the name of the node that encoded the message (not
// necessarily the records' owner). memberlist compresses and encrypts what
// it sends, so the encoding itself stays simple.
const (
	wireVersion = 1

	msgRecords = 1
	msgState   = 2

	flagDeleted = 1 << 0

	// minRecordSize is the smallest encoded record (empty strings, one-byte
	// clock): it bounds the record count a message of a given size can
	// claim.
	minRecordSize = 6
)

// errMalformed is wrapped by every decodeMessage error.
var errMalformed = errors.New("malformed mesh message")

// message is a decoded wire message.
type message struct {
	typ     byte
	from    string
	records []Record
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
	if m.typ != msgRecords && m.typ != msgState {
		return m, fmt.Errorf("%w: unknown type %d", errMalformed, m.typ)
	}
	count := d.uvarint()
	if d.err != nil {
		return m, fmt.Errorf("%w: record count: %v", errMalformed, d.err)
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
	if len(d.b) != 0 {
		return m, fmt.Errorf("%w: %d trailing bytes", errMalformed, len(d.b))
	}
	return m, nil
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
