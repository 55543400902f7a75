package testbed

import "encoding/binary"

// The pure parts of Ping (ping_linux.go): building and recognizing ICMP.

// quotesEcho reports whether the packet quoted in an ICMP error is our echo
// request (the quote starts with the IP header of the request).
func quotesEcho(q []byte, v6 bool, id, seq uint16) bool {
	hl := 40
	if !v6 {
		if len(q) < 20 {
			return false
		}
		hl = int(q[0]&0x0f) * 4
	}
	if len(q) < hl+8 {
		return false
	}
	e := q[hl:]
	return binary.BigEndian.Uint16(e[4:]) == id && binary.BigEndian.Uint16(e[6:]) == seq
}

// checksum is the Internet checksum (RFC 1071).
func checksum(b []byte) uint16 {
	var s uint32
	for i := 0; i+1 < len(b); i += 2 {
		s += uint32(b[i])<<8 | uint32(b[i+1])
	}
	if len(b)%2 == 1 {
		s += uint32(b[len(b)-1]) << 8
	}
	for s>>16 != 0 {
		s = s&0xffff + s>>16
	}
	return ^uint16(s)
}
