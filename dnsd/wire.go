package dnsd

import (
	"encoding/binary"
	"errors"
)

// This file holds the hand-written wire code of the hot path: the request
// parser and the helpers that append a response. The zone and the cache keep
// their records prebuilt in wire form, so answering a question is copying
// bytes, never building dns.RR values. Everything here works on caller-owned
// buffers and allocates nothing.

// DNS wire constants used by the hand-written paths.
const (
	headerLen = 12
	maxName   = 255 // longest wire-format name
	maxLabels = 128 // a 255-byte name has at most 127 labels plus the root

	minUDPSize   = 512  // RFC 1035 limit without EDNS0
	ourUDPSize   = 1232 // what we advertise and the most we send over UDP (DNS flag day 2020)
	maxTCPSize   = 65535
	optRRLen     = 11 // root owner, type, class, ttl, rdlen 0
	ednsVersion0 = 0

	flagQR = 1 << 15
	flagAA = 1 << 10
	flagTC = 1 << 9
	flagRD = 1 << 8
	flagRA = 1 << 7
	flagAD = 1 << 5
	flagCD = 1 << 4

	opcodeMask  = 0xF << 11
	opcodeQuery = 0

	rcodeSuccess  = 0
	rcodeFormErr  = 1
	rcodeServFail = 2
	rcodeNXDomain = 3
	rcodeNotImp   = 4
	rcodeRefused  = 5
	rcodeBadVers  = 16 // extended: upper 8 bits go in the OPT TTL

	typeA     = 1
	typeNS    = 2
	typeCNAME = 5
	typeSOA   = 6
	typePTR   = 12
	typeAAAA  = 28
	typeSRV   = 33
	typeOPT   = 41
	typeIXFR  = 251
	typeAXFR  = 252
	typeANY   = 255

	classIN  = 1
	classANY = 255

	ednsDO = 1 << 15 // DO bit in the low 16 bits of the OPT TTL
)

// errNoHeader and errNotQuery are returned for messages that get no answer at
// all: too short to carry a header, or a response rather than a query.
var (
	errNoHeader = errors.New("message shorter than a DNS header")
	errNotQuery = errors.New("message is a response, not a query")
)

// request is a parsed query. Slices point into the caller's buffer and are
// valid only as long as it is. A request is meant to live on the stack.
type request struct {
	id    uint16
	flags uint16
	// question is the whole question (name, type, class) as sent; qname is
	// its name part. Both alias the request buffer.
	question []byte
	qname    []byte
	qtype    uint16
	qclass   uint16
	// key holds the question name in wire form, lowercased; keyLen bytes
	// are used. labels[i] is the offset of the i-th label in the name (the
	// root label included), nlabels how many there are.
	key     [maxName]byte
	keyLen  int
	labels  [maxLabels]uint8
	nlabels int
	// EDNS0 as the client sent it.
	edns    bool
	udpSize uint16
	do      bool
	ednsVer uint8
	// rcode is set when the query cannot be answered normally (FORMERR,
	// NOTIMP, BADVERS); the rest of the request may then be incomplete.
	rcode int
}

// name returns the lowercased wire-form question name.
func (r *request) name() []byte { return r.key[:r.keyLen] }

// limit is the largest response the client accepts over the transport.
func (r *request) limit(tcp bool) int {
	if tcp {
		return maxTCPSize
	}
	if !r.edns || r.udpSize <= minUDPSize {
		return minUDPSize
	}
	return int(min(r.udpSize, ourUDPSize))
}

// parseRequest parses msg into r. It returns an error only when msg gets no
// answer (no header, or not a query); a malformed query sets r.rcode.
func parseRequest(msg []byte, r *request) error {
	if len(msg) < headerLen {
		return errNoHeader
	}
	r.id = binary.BigEndian.Uint16(msg[0:])
	r.flags = binary.BigEndian.Uint16(msg[2:])
	if r.flags&flagQR != 0 {
		return errNotQuery
	}
	if r.flags&opcodeMask != opcodeQuery {
		r.rcode = rcodeNotImp
		return nil
	}
	qd := binary.BigEndian.Uint16(msg[4:])
	an := binary.BigEndian.Uint16(msg[6:])
	ns := binary.BigEndian.Uint16(msg[8:])
	ar := binary.BigEndian.Uint16(msg[10:])
	if qd != 1 || an != 0 || ns != 0 {
		r.rcode = rcodeFormErr
		return nil
	}
	off, ok := r.parseQName(msg, headerLen)
	if !ok || off+4 > len(msg) {
		r.rcode = rcodeFormErr
		return nil
	}
	r.qname = msg[headerLen:off]
	r.qtype = binary.BigEndian.Uint16(msg[off:])
	r.qclass = binary.BigEndian.Uint16(msg[off+2:])
	off += 4
	r.question = msg[headerLen:off]
	for range ar {
		var ok bool
		if off, ok = r.parseAdditional(msg, off); !ok {
			r.rcode = rcodeFormErr
			return nil
		}
	}
	if r.edns && r.ednsVer != ednsVersion0 {
		r.rcode = rcodeBadVers
	}
	return nil
}

// parseQName reads the uncompressed question name at off into r.key and
// r.labels, and returns the offset after it.
func (r *request) parseQName(msg []byte, off int) (int, bool) {
	n := 0
	r.nlabels = 0
	for {
		if off >= len(msg) {
			return 0, false
		}
		l := int(msg[off])
		if l > 63 { // compression pointers and reserved label types
			return 0, false
		}
		if n+1+l > maxName || off+1+l > len(msg) {
			return 0, false
		}
		r.labels[r.nlabels] = uint8(n)
		r.nlabels++
		r.key[n] = byte(l)
		for i := range l {
			c := msg[off+1+i]
			if 'A' <= c && c <= 'Z' {
				c += 'a' - 'A'
			}
			r.key[n+1+i] = c
		}
		n += 1 + l
		off += 1 + l
		if l == 0 {
			r.keyLen = n
			return off, true
		}
	}
}

// parseAdditional reads one record of the additional section, remembering
// an OPT record, and returns the offset after it.
func (r *request) parseAdditional(msg []byte, off int) (int, bool) {
	start := off
	off, ok := skipName(msg, off)
	if !ok || off+10 > len(msg) {
		return 0, false
	}
	typ := binary.BigEndian.Uint16(msg[off:])
	class := binary.BigEndian.Uint16(msg[off+2:])
	ttl := binary.BigEndian.Uint32(msg[off+4:])
	rdlen := int(binary.BigEndian.Uint16(msg[off+8:]))
	off += 10
	if off+rdlen > len(msg) {
		return 0, false
	}
	if typ != typeOPT {
		return off + rdlen, true
	}
	// RFC 6891 6.1.1: one OPT at most, owned by the root.
	if r.edns || off-10-start != 1 || !validOptions(msg[off:off+rdlen]) {
		return 0, false
	}
	r.edns = true
	r.udpSize = max(class, minUDPSize)
	r.ednsVer = uint8(ttl >> 16)
	r.do = ttl&ednsDO != 0
	return off + rdlen, true
}

// validOptions reports whether b is a well-formed sequence of EDNS0 options.
func validOptions(b []byte) bool {
	for len(b) > 0 {
		if len(b) < 4 {
			return false
		}
		l := int(binary.BigEndian.Uint16(b[2:]))
		if 4+l > len(b) {
			return false
		}
		b = b[4+l:]
	}
	return true
}

// skipName returns the offset after the (possibly compressed) name at off.
func skipName(msg []byte, off int) (int, bool) {
	for n := 0; ; n++ {
		if off >= len(msg) || n > maxLabels {
			return 0, false
		}
		l := int(msg[off])
		switch {
		case l == 0:
			return off + 1, true
		case l&0xC0 == 0xC0:
			if off+2 > len(msg) {
				return 0, false
			}
			return off + 2, true
		case l > 63:
			return 0, false
		}
		off += 1 + l
	}
}

// appendHeader appends a response header for r with the given flags and
// counts. The opcode, RD and CD bits are copied from the request.
func appendHeader(dst []byte, r *request, flags uint16, qd, an, ns, ar uint16) []byte {
	flags |= flagQR | r.flags&(opcodeMask|flagRD|flagCD)
	return append(dst,
		byte(r.id>>8), byte(r.id),
		byte(flags>>8), byte(flags),
		byte(qd>>8), byte(qd),
		byte(an>>8), byte(an),
		byte(ns>>8), byte(ns),
		byte(ar>>8), byte(ar))
}

// setCounts rewrites the section counts of the message starting at msg[0].
func setCounts(msg []byte, an, ns, ar int) {
	binary.BigEndian.PutUint16(msg[6:], uint16(an))
	binary.BigEndian.PutUint16(msg[8:], uint16(ns))
	binary.BigEndian.PutUint16(msg[10:], uint16(ar))
}

// appendOPT appends our OPT record: our UDP size, the client's DO bit echoed
// (RFC 3225) and the upper bits of an extended rcode.
func appendOPT(dst []byte, r *request, rcode int) []byte {
	var ttl uint32
	ttl |= uint32(rcode>>4) << 24
	if r.do {
		ttl |= ednsDO
	}
	return append(dst, 0,
		byte(typeOPT>>8), byte(typeOPT),
		byte(ourUDPSize>>8), byte(ourUDPSize&0xFF),
		byte(ttl>>24), byte(ttl>>16), byte(ttl>>8), byte(ttl),
		0, 0)
}

// appendError appends a response that carries only an rcode (and the
// question, when the request parsed far enough to have one).
func appendError(dst []byte, r *request, rcode int, ra bool) []byte {
	var flags uint16 = uint16(rcode & 0xF)
	if ra {
		flags |= flagRA
	}
	start := len(dst)
	qd := 0
	if r.question != nil && rcode != rcodeFormErr && rcode != rcodeNotImp {
		qd = 1
	}
	dst = appendHeader(dst, r, flags, uint16(qd), 0, 0, 0)
	if qd == 1 {
		dst = append(dst, r.question...)
	}
	if r.edns && rcode != rcodeFormErr {
		dst = appendOPT(dst, r, rcode)
		setCounts(dst[start:], 0, 0, 1)
	}
	return dst
}

// appendPtr appends a compression pointer to offset off of the message.
func appendPtr(dst []byte, off int) []byte {
	return append(dst, byte(0xC0|off>>8), byte(off))
}

// nameSuffixOffset returns the offset, within r's question name, of the
// suffix equal to the lowercased wire name suffix, or -1. suffix must be a
// suffix of r.name() at a label boundary for a match.
func (r *request) suffixOffset(suffix []byte) int {
	off := r.keyLen - len(suffix)
	if off < 0 {
		return -1
	}
	for i := range r.nlabels {
		if int(r.labels[i]) == off {
			if string(r.key[off:r.keyLen]) == string(suffix) {
				return off
			}
			return -1
		}
	}
	return -1
}
