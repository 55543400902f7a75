package dnsd

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync/atomic"
)

// Endpoint is one container of a service: it is named
// <Container>.<Service>.<zone> and counts among the addresses of
// <Service>.<zone>. A dual-stack container is one Endpoint with Addr and
// Addr6 set (or, equally, two Endpoints with one address each).
type Endpoint struct {
	Service   string
	Container string
	Node      string // the node that hosts it; informational
	// Addr is served as A (IPv4) or AAAA (IPv6); Addr6 is the IPv6 twin,
	// served as AAAA. Either may be zero, not both. Both get PTR records
	// when inside Config.Cluster or Config.Cluster6.
	Addr  netip.Addr
	Addr6 netip.Addr
}

// NodeRecord is a node's overlay address, named <Name>.node.<zone>; Addr6
// is its IPv6 twin (zero: none), as in Endpoint.
type NodeRecord struct {
	Name  string
	Addr  netip.Addr
	Addr6 netip.Addr
}

// GuestRecord is a guest's address (a plain WireGuard client that joined
// the mesh through Node), named <Name>.guest.<zone>; Addr6 is its IPv6
// twin (zero: none), as in Endpoint.
type GuestRecord struct {
	Name  string
	Node  string // the node it joined through; informational
	Addr  netip.Addr
	Addr6 netip.Addr
}

// PortRecord is a port a service offers, served as SRV records at
// _<Proto>.<Service>.<zone> (the SRV scheme; see the package doc).
type PortRecord struct {
	Service string
	Proto   string // "tcp" or "udp"; any valid label is accepted
	Port    uint16
	// Target is the address that offers the port; it must be the address
	// (Addr or Addr6) of a known endpoint or node, whose name becomes the
	// SRV target; the target's A and AAAA records come as additional
	// records. The zero Addr means every endpoint of the service.
	Target netip.Addr
}

// Snapshot is the whole set of records dnsd serves for the mesh. The order
// of the slices does not matter.
type Snapshot struct {
	Endpoints []Endpoint
	Nodes     []NodeRecord
	Guests    []GuestRecord
	Ports     []PortRecord
}

// ErrInvalidRecord is wrapped by the error SetSnapshot returns for records it
// skipped.
var ErrInvalidRecord = errors.New("invalid record")

// nodeLabel is the reserved label under which node names live; no service
// may be named so.
const nodeLabel = "node"

// guestLabel is the reserved label under which guest names live; no service
// may be named so.
const guestLabel = "guest"

// reservedLabel reports whether a service may not be named s.
func reservedLabel(s string) bool {
	return strings.EqualFold(s, nodeLabel) || strings.EqualFold(s, guestLabel)
}

// zone is one immutable snapshot, indexed for lookup. Queries read it
// through an atomic pointer and never lock; SetSnapshot builds a new one.
type zone struct {
	// names maps every existing name (lowercased wire form) to its records;
	// empty non-terminals are present with no records.
	names map[string]*node
	// apexes maps each zone we are authoritative for (the mesh zone and the
	// reverse zones of the cluster prefixes) to its apex.
	apexes map[string]*apex
	// reverse are the cluster prefixes answered locally for PTR.
	reverse []netip.Prefix
	serial  uint32
}

// apex is one zone we answer for.
type apex struct {
	name []byte // lowercased wire form
	soa  []byte // SOA record body (type onwards), owner omitted
}

// node is the set of records at one name. Record bodies start at the TYPE
// field: the owner is written at answer time as a pointer to the question,
// so answers echo the case the client used.
type node struct {
	apex *apex
	// Records by type. A and AAAA are rotated per query.
	a, aaaa, srv, ptr, ns, soa [][]byte
	// glue are whole records (owner included, uncompressed) for the
	// additional section of SRV answers.
	glue [][]byte
	// next rotates A and AAAA answers (round robin).
	next atomic.Uint32
}

func (n *node) empty() bool {
	return len(n.a)+len(n.aaaa)+len(n.srv)+len(n.ptr)+len(n.ns)+len(n.soa) == 0
}

// zoneBuilder accumulates a zone from a snapshot.
type zoneBuilder struct {
	z    *zone
	ttl  uint32
	main *apex
	errs []error
	// names of addresses, for PTR and SRV targets.
	addrNames map[netip.Addr][][]byte
}

// buildZone indexes snap. Records that cannot be served are skipped and
// reported in the returned error (wrapping ErrInvalidRecord); the zone is
// complete for the rest.
func buildZone(cfg *Config, snap *Snapshot, serial uint32) (*zone, error) {
	b := &zoneBuilder{
		z: &zone{
			names:   make(map[string]*node, 2*len(snap.Endpoints)+len(snap.Nodes)+8),
			apexes:  make(map[string]*apex),
			reverse: cfg.reversePrefixes(),
			serial:  serial,
		},
		ttl:       uint32(cfg.TTL.Seconds()),
		addrNames: make(map[netip.Addr][][]byte),
	}
	zoneWire := mustWireName(cfg.Zone)
	b.main = b.addApex(zoneWire, zoneWire)
	for _, a := range []netip.Addr{cfg.Addr, cfg.Addr6} {
		if a.IsValid() {
			b.addAddr(zoneWire, a.Unmap())
		}
	}
	for _, p := range b.z.reverse {
		for _, rz := range reverseZones(p) {
			b.addApex(rz, zoneWire)
		}
	}

	// Endpoints, sorted so that names and rotation are deterministic.
	eps := slices.Clone(snap.Endpoints)
	slices.SortFunc(eps, func(x, y Endpoint) int {
		if c := strings.Compare(x.Service, y.Service); c != 0 {
			return c
		}
		if c := strings.Compare(x.Container, y.Container); c != 0 {
			return c
		}
		if c := x.Addr.Compare(y.Addr); c != 0 {
			return c
		}
		return x.Addr6.Compare(y.Addr6)
	})
	for _, ep := range eps {
		switch {
		case !validLabel(ep.Service):
			b.skip("endpoint %s/%s: service name %q is not a DNS label", ep.Service, ep.Container, ep.Service)
			continue
		case reservedLabel(ep.Service):
			b.skip("endpoint %s/%s: service name %q is reserved (nodes and guests)", ep.Service, ep.Container, ep.Service)
			continue
		case !validLabel(ep.Container):
			b.skip("endpoint %s/%s: container name %q is not a DNS label", ep.Service, ep.Container, ep.Container)
			continue
		}
		addrs := b.addrs(ep.Addr, ep.Addr6, "endpoint %s/%s", ep.Service, ep.Container)
		if len(addrs) == 0 {
			continue
		}
		svc := joinWire(ep.Service, b.main.name)
		ctr := joinWire(ep.Container, svc)
		for _, addr := range addrs {
			b.addAddr(svc, addr)
			b.addAddr(ctr, addr)
			b.addName(addr, ctr)
		}
	}

	var nodes, guests []namedAddr
	for _, nr := range snap.Nodes {
		nodes = append(nodes, namedAddr{nr.Name, nr.Addr, nr.Addr6})
	}
	for _, gr := range snap.Guests {
		guests = append(guests, namedAddr{gr.Name, gr.Addr, gr.Addr6})
	}
	b.addNamed("node", nodeLabel, nodes)
	b.addNamed("guest", guestLabel, guests)

	b.addPorts(snap.Ports)
	b.addPTRs()
	return b.z, errors.Join(b.errs...)
}

func (b *zoneBuilder) skip(format string, args ...any) {
	b.errs = append(b.errs, fmt.Errorf("%w: "+format, append([]any{ErrInvalidRecord}, args...)...))
}

// node returns the node for name, creating it and every ancestor up to its
// apex (empty non-terminals) as needed. name must lie inside an apex.
func (b *zoneBuilder) node(name []byte) *node {
	if n := b.z.names[string(name)]; n != nil {
		return n
	}
	// Find the apex: the longest suffix that is one.
	var ap *apex
	for off := 0; off < len(name); off += 1 + int(name[off]) {
		if a := b.z.apexes[string(name[off:])]; a != nil {
			ap = a
			break
		}
	}
	n := &node{apex: ap}
	b.z.names[string(name)] = n
	if ap != nil && len(name) > len(ap.name) {
		b.node(name[1+int(name[0]):]) // parent
	}
	return n
}

// addApex makes name a zone apex with SOA and NS records; ns is the name of
// the name server (the mesh zone's apex).
func (b *zoneBuilder) addApex(name, ns []byte) *apex {
	hostmaster := joinWire("hostmaster", b.mainName(name))
	rdata := slices.Concat(b.mainName(name), hostmaster)
	rdata = binary.BigEndian.AppendUint32(rdata, b.z.serial)
	rdata = binary.BigEndian.AppendUint32(rdata, 3600)  // refresh
	rdata = binary.BigEndian.AppendUint32(rdata, 600)   // retry
	rdata = binary.BigEndian.AppendUint32(rdata, 86400) // expire
	rdata = binary.BigEndian.AppendUint32(rdata, b.ttl) // minimum: the negative TTL
	a := &apex{name: name, soa: rrBody(typeSOA, b.ttl, rdata)}
	b.z.apexes[string(name)] = a
	n := b.node(name)
	n.soa = append(n.soa, a.soa)
	n.ns = append(n.ns, rrBody(typeNS, b.ttl, ns))
	return a
}

// mainName is the mesh zone's apex, or name while that is being built.
func (b *zoneBuilder) mainName(name []byte) []byte {
	if b.main != nil {
		return b.main.name
	}
	return name
}

// addAddr adds an A or AAAA record for addr at name, once.
func (b *zoneBuilder) addAddr(name []byte, addr netip.Addr) {
	n := b.node(name)
	if addr.Is4() {
		body := rrBody(typeA, b.ttl, addr.AsSlice())
		if !containsBytes(n.a, body) {
			n.a = append(n.a, body)
		}
		return
	}
	body := rrBody(typeAAAA, b.ttl, addr.AsSlice())
	if !containsBytes(n.aaaa, body) {
		n.aaaa = append(n.aaaa, body)
	}
}

// addPorts adds the SRV records, with the targets' addresses as glue.
func (b *zoneBuilder) addPorts(ports []PortRecord) {
	ports = slices.Clone(ports)
	slices.SortFunc(ports, func(x, y PortRecord) int {
		if c := strings.Compare(x.Service, y.Service); c != 0 {
			return c
		}
		if c := strings.Compare(x.Proto, y.Proto); c != 0 {
			return c
		}
		if c := int(x.Port) - int(y.Port); c != 0 {
			return c
		}
		return x.Target.Compare(y.Target)
	})
	for _, p := range ports {
		if !validLabel(p.Service) || reservedLabel(p.Service) {
			b.skip("port %s/%s %d: service name %q is not a usable DNS label", p.Service, p.Proto, p.Port, p.Service)
			continue
		}
		if !validLabel(p.Proto) {
			b.skip("port %s/%s %d: protocol %q is not a DNS label", p.Service, p.Proto, p.Port, p.Proto)
			continue
		}
		if p.Port == 0 {
			b.skip("port %s/%s: port 0", p.Service, p.Proto)
			continue
		}
		svc := joinWire(p.Service, b.main.name)
		var targets [][]byte
		if p.Target.IsValid() {
			targets = b.addrNames[p.Target.Unmap()]
			if len(targets) == 0 {
				b.skip("port %s/%s %d: target %s is no known endpoint or node", p.Service, p.Proto, p.Port, p.Target)
				continue
			}
		} else {
			// Every container of the service.
			if n := b.z.names[string(svc)]; n != nil {
				for ctr, cn := range b.z.names {
					if len(ctr) > len(svc) && strings.HasSuffix(ctr, string(svc)) &&
						1+int(ctr[0])+len(svc) == len(ctr) && len(cn.a)+len(cn.aaaa) > 0 {
						targets = append(targets, []byte(ctr))
					}
				}
				slices.SortFunc(targets, func(x, y []byte) int { return strings.Compare(string(x), string(y)) })
			}
			if len(targets) == 0 {
				b.skip("port %s/%s %d: service has no endpoints", p.Service, p.Proto, p.Port)
				continue
			}
		}
		n := b.node(joinWire("_"+strings.ToLower(p.Proto), svc))
		for _, t := range targets {
			rdata := []byte{0, 0, 0, 0, byte(p.Port >> 8), byte(p.Port)} // priority 0, weight 0
			rdata = append(rdata, t...)
			body := rrBody(typeSRV, b.ttl, rdata)
			if containsBytes(n.srv, body) {
				continue
			}
			n.srv = append(n.srv, body)
			tn := b.z.names[string(t)]
			for _, rr := range slices.Concat(tn.a, tn.aaaa) {
				glue := slices.Concat(t, rr)
				if !containsBytes(n.glue, glue) {
					n.glue = append(n.glue, glue)
				}
			}
		}
	}
}

// addPTRs adds PTR records for every named address inside the cluster
// prefixes.
func (b *zoneBuilder) addPTRs() {
	addrs := make([]netip.Addr, 0, len(b.addrNames))
	for a := range b.addrNames {
		addrs = append(addrs, a)
	}
	slices.SortFunc(addrs, netip.Addr.Compare)
	for _, a := range addrs {
		inside := false
		for _, p := range b.z.reverse {
			inside = inside || p.Contains(a)
		}
		if !inside {
			continue
		}
		n := b.node(reverseName(a))
		for _, name := range b.addrNames[a] {
			n.ptr = append(n.ptr, rrBody(typePTR, b.ttl, name))
		}
	}
}

// rrBody builds a record without its owner: type, class IN, ttl, rdata.
func rrBody(typ uint16, ttl uint32, rdata []byte) []byte {
	b := make([]byte, 0, 10+len(rdata))
	b = binary.BigEndian.AppendUint16(b, typ)
	b = binary.BigEndian.AppendUint16(b, classIN)
	b = binary.BigEndian.AppendUint32(b, ttl)
	b = binary.BigEndian.AppendUint16(b, uint16(len(rdata)))
	return append(b, rdata...)
}

func containsBytes(list [][]byte, b []byte) bool {
	return slices.ContainsFunc(list, func(x []byte) bool { return string(x) == string(b) })
}

// validLabel reports whether s can be one label of a mesh name: 1 to 63
// letters, digits, '-' or '_', not starting with '_' (underscore labels are
// the SRV scheme's).
func validLabel(s string) bool {
	if len(s) == 0 || len(s) > 63 || s[0] == '_' {
		return false
	}
	for i := range len(s) {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

// joinWire prepends label (lowercased) to the wire name parent.
func joinWire(label string, parent []byte) []byte {
	b := make([]byte, 0, 1+len(label)+len(parent))
	b = append(b, byte(len(label)))
	b = append(b, strings.ToLower(label)...)
	return append(b, parent...)
}

// wireName converts a presentation name ("zl." or "zl") to lowercased wire
// form. Escapes are not supported; every label must be 1 to 63 bytes.
func wireName(s string) ([]byte, error) {
	s = strings.TrimSuffix(s, ".")
	if s == "" {
		return []byte{0}, nil
	}
	var b []byte
	for _, l := range strings.Split(strings.ToLower(s), ".") {
		if len(l) == 0 || len(l) > 63 || strings.ContainsAny(l, " \t\\\"();@$") {
			return nil, fmt.Errorf("name %q: bad label %q", s, l)
		}
		b = append(b, byte(len(l)))
		b = append(b, l...)
	}
	b = append(b, 0)
	if len(b) > maxName {
		return nil, fmt.Errorf("name %q: longer than %d bytes", s, maxName)
	}
	return b, nil
}

func mustWireName(s string) []byte {
	b, err := wireName(s)
	if err != nil {
		panic(err) // Config was validated by New
	}
	return b
}

// presentName converts a wire name to presentation form ("web.zl.").
func presentName(b []byte) string {
	var sb strings.Builder
	for len(b) > 0 && b[0] != 0 {
		l := int(b[0])
		sb.Write(b[1 : 1+l])
		sb.WriteByte('.')
		b = b[1+l:]
	}
	if sb.Len() == 0 {
		return "."
	}
	return sb.String()
}

// reverseName is the wire-form in-addr.arpa or ip6.arpa name of a.
func reverseName(a netip.Addr) []byte {
	var b []byte
	if a.Is4() {
		ip := a.As4()
		for i := 3; i >= 0; i-- {
			s := fmt.Sprint(ip[i])
			b = append(b, byte(len(s)))
			b = append(b, s...)
		}
		return append(b, "\x07in-addr\x04arpa\x00"...)
	}
	ip := a.As16()
	const hex = "0123456789abcdef"
	for i := 15; i >= 0; i-- {
		b = append(b, 1, hex[ip[i]&0xF], 1, hex[ip[i]>>4])
	}
	return append(b, "\x03ip6\x04arpa\x00"...)
}

// reverseZones returns the reverse zone apexes that cover p exactly: p's
// length rounded up to a label boundary (8 bits for IPv4, 4 for IPv6), one
// apex per resulting prefix.
func reverseZones(p netip.Prefix) [][]byte {
	step := 8
	if p.Addr().Is6() {
		step = 4
	}
	bits := (p.Bits() + step - 1) / step * step
	n := 1 << (bits - p.Bits())
	zones := make([][]byte, 0, n)
	addr := p.Masked().Addr()
	for range n {
		full := reverseName(addr)
		// Drop the labels beyond bits: one per octet or nibble.
		drop := (addr.BitLen() - bits) / step
		off := 0
		for range drop {
			off += 1 + int(full[off])
		}
		zones = append(zones, full[off:])
		addr = nextPrefixAddr(addr, bits)
	}
	return zones
}

// nextPrefixAddr returns the first address of the prefix of length bits
// that follows the one containing a.
func nextPrefixAddr(a netip.Addr, bits int) netip.Addr {
	b := a.AsSlice()
	// Add 1 at bit position bits-1.
	i := (bits - 1) / 8
	carry := uint16(1) << (7 - uint((bits-1)%8))
	for ; i >= 0 && carry != 0; i-- {
		s := uint16(b[i]) + carry
		b[i] = byte(s)
		carry = s >> 8
	}
	n, _ := netip.AddrFromSlice(b)
	return n
}

// namedAddr is a name with its addresses: a node's or a guest's record.
type namedAddr struct {
	name        string
	addr, addr6 netip.Addr
}

// addNamed gives each entry <name>.<label>.<zone> with its address (and the
// reverse), in name order; entries whose name is not a DNS label or that
// have no address are skipped, naming what (node, guest).
func (b *zoneBuilder) addNamed(what, label string, entries []namedAddr) {
	wire := joinWire(label, b.main.name)
	slices.SortFunc(entries, func(x, y namedAddr) int { return strings.Compare(x.name, y.name) })
	for _, e := range entries {
		if !validLabel(e.name) {
			b.skip("%s %q: name is not a DNS label", what, e.name)
			continue
		}
		name := joinWire(e.name, wire)
		for _, addr := range b.addrs(e.addr, e.addr6, "%s %s", what, e.name) {
			b.addAddr(name, addr)
			b.addName(addr, name)
		}
	}
}

// addrs returns the usable addresses of a record: addr (either family) and
// addr6, which must be IPv6 (an IPv4-mapped address is not). A bad addr6
// is reported and left out, the rest served; a record with no usable
// address is reported and gets none. what and args name the record.
func (b *zoneBuilder) addrs(addr, addr6 netip.Addr, what string, args ...any) []netip.Addr {
	var out []netip.Addr
	if addr.IsValid() {
		out = append(out, addr.Unmap())
	}
	switch {
	case !addr6.IsValid():
	case !addr6.Is6() || addr6.Is4In6():
		b.skip(what+": IPv6 address %s is not IPv6", append(args, addr6)...)
	default:
		out = append(out, addr6)
	}
	if len(out) == 0 && !addr6.IsValid() {
		b.skip(what+": no address", args...)
	}
	return out
}

// addName records name as a name of addr (for PTR and SRV targets), once.
func (b *zoneBuilder) addName(addr netip.Addr, name []byte) {
	if !containsBytes(b.addrNames[addr], name) {
		b.addrNames[addr] = append(b.addrNames[addr], name)
	}
}
