//go:build linux

package natd

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"iter"
	"net/netip"
	"sync"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// The shape of zlmesh's table (family inet):
//
//	map ports_any   { type inet_proto . inet_service : ipv4_addr . inet_service }
//	map ports_addr  { type ipv4_addr . inet_proto . inet_service : ipv4_addr . inet_service }
//	map ports6_any  { type inet_proto . inet_service : ipv6_addr . inet_service }
//	map ports6_addr { type ipv6_addr . inet_proto . inet_service : ipv6_addr . inet_service }
//	chain publish {
//		meta nfproto ipv4 dnat ip to ip daddr . meta l4proto . th dport map @ports_addr
//		meta nfproto ipv4 dnat ip to meta l4proto . th dport map @ports_any
//		meta nfproto ipv6 dnat ip6 to ip6 daddr . meta l4proto . th dport map @ports6_addr
//		meta nfproto ipv6 dnat ip6 to meta l4proto . th dport map @ports6_any
//	}
//	chain prerouting  { type nat hook prerouting priority dstnat; policy accept;
//		meta nfproto ipv4 fib daddr type local jump publish
//		meta nfproto ipv6 fib daddr type local jump publish }
//	chain output      { type nat hook output priority -100; policy accept;
//		meta nfproto ipv4 ip daddr != 127.0.0.0/8 fib daddr type local jump publish
//		meta nfproto ipv6 ip6 daddr != ::1 fib daddr type local jump publish }
//	chain postrouting { type nat hook postrouting priority srcnat; policy accept;
//		meta nfproto ipv4 ct status dnat ip saddr <local block> oifname "zlb-*" fib saddr type != local masquerade   (each local block)
//		meta nfproto ipv4 ct status dnat oifname "zl0" ip saddr <local block> accept   (each local block)
//		meta nfproto ipv4 ct status dnat oifname "zl0" snat ip to <overlay>
//		meta nfproto ipv4 ip saddr <local block> ip daddr != <cluster> oifname != "zl0" masquerade  (each local block; Masquerade only)
//		the same with meta nfproto ipv6, ip6 and the IPv6 fields (Cluster6 only; Masquerade6 for the last)
//	}
//
// A published port is one element of ports_any or ports6_any (all local
// addresses) or ports_addr or ports6_addr (one address) per family:
// publishing or unpublishing never touches a rule. The IPv6 maps and the
// rules using them exist whether IPv6 is on or not (then they are empty
// and match nothing), so that switching IPv6 on changes elements and the
// postrouting chain, not the table's shape.
// Every rule carries a comment "zlmesh <what> #<hash of its expressions>";
// the comment is its identity when the table is compared with the wanted
// state (rules cannot be edited in place in nftables, so a rule whose
// comment matches is the rule zlmesh made).
const (
	family        = nftables.TableFamilyINet
	chainPublish  = "publish"
	chainPre      = "prerouting"
	chainOutput   = "output"
	chainPost     = "postrouting"
	setPortsAny   = "ports_any"
	setPortsAddr  = "ports_addr"
	setPorts6Any  = "ports6_any"
	setPorts6Addr = "ports6_addr"
	commentPrefix = "zlmesh "
)

var (
	typeAnyKey   = nftables.MustConcatSetType(nftables.TypeInetProto, nftables.TypeInetService)
	typeAddrKey  = nftables.MustConcatSetType(nftables.TypeIPAddr, nftables.TypeInetProto, nftables.TypeInetService)
	typeTarget   = nftables.MustConcatSetType(nftables.TypeIPAddr, nftables.TypeInetService)
	typeAddr6Key = nftables.MustConcatSetType(nftables.TypeIP6Addr, nftables.TypeInetProto, nftables.TypeInetService)
	typeTarget6  = nftables.MustConcatSetType(nftables.TypeIP6Addr, nftables.TypeInetService)
)

// portSet describes one of the port maps.
type portSet struct {
	six    bool // IPv6 addresses (host address and target)
	byAddr bool // keyed by host address too
	key    nftables.SetDatatype
	data   nftables.SetDatatype
}

var portSets = map[string]portSet{
	setPortsAny:   {six: false, byAddr: false, key: typeAnyKey, data: typeTarget},
	setPortsAddr:  {six: false, byAddr: true, key: typeAddrKey, data: typeTarget},
	setPorts6Any:  {six: true, byAddr: false, key: typeAnyKey, data: typeTarget6},
	setPorts6Addr: {six: true, byAddr: true, key: typeAddr6Key, data: typeTarget6},
}

// addrLen is the length of the set's addresses.
func (p portSet) addrLen() int {
	if p.six {
		return 16
	}
	return 4
}

// perMessage is how many elements of the set one netlink message may
// carry: a message's elements sit in one nested attribute, whose length is
// 16 bits, and each takes 20 bytes of headers besides its key and value;
// the kernel would silently take only the first ones past 64 KiB. Kept
// under 48 KiB.
func (p portSet) perMessage() int {
	return 48 << 10 / (20 + int(p.key.Bytes) + int(p.data.Bytes))
}

// chainSpec is what identifies a chain besides its name. A zero Type is a
// regular chain.
type chainSpec struct {
	Type     nftables.ChainType
	Hook     nftables.ChainHook
	Priority nftables.ChainPriority
	Policy   nftables.ChainPolicy
}

// setSpec is what identifies a set besides its name.
type setSpec struct {
	Flags    uint32 // NFT_SET_* flags that matter: map, interval, timeout, ...
	KeyType  uint32
	KeyLen   uint32
	DataType uint32
	DataLen  uint32
}

// ruleSpec is one rule: its comment, and (only for wanted rules) its
// expressions.
type ruleSpec struct {
	Tag   string
	Exprs []expr.Any
}

// state is the content of zlmesh's table: wanted (rendered from a Plan) or
// read from the kernel.
type state struct {
	Exists bool
	// Unreadable: the table exists but could not be parsed; it is rebuilt.
	Unreadable bool
	Chains     map[string]chainSpec
	Rules      map[string][]ruleSpec
	Sets       map[string]setSpec
	Elems      map[string]map[elemKey]elemVal   // the IPv4 maps
	Elems6     map[string]map[elemKey6]elemVal6 // the IPv6 maps
}

// ports counts the elements of all port maps.
func (s *state) ports() int {
	n := 0
	for _, e := range s.Elems {
		n += len(e)
	}
	for _, e := range s.Elems6 {
		n += len(e)
	}
	return n
}

var wantChains = map[string]chainSpec{
	chainPublish: {},
	chainPre:     {Type: nftables.ChainTypeNAT, Hook: *nftables.ChainHookPrerouting, Priority: *nftables.ChainPriorityNATDest, Policy: nftables.ChainPolicyAccept},
	chainOutput:  {Type: nftables.ChainTypeNAT, Hook: *nftables.ChainHookOutput, Priority: *nftables.ChainPriorityNATDest, Policy: nftables.ChainPolicyAccept},
	chainPost:    {Type: nftables.ChainTypeNAT, Hook: *nftables.ChainHookPostrouting, Priority: *nftables.ChainPriorityNATSource, Policy: nftables.ChainPolicyAccept},
}

// chainOrder is the order chains are created in: the regular chain first,
// so that the jumps to it can be added.
var chainOrder = []string{chainPublish, chainPre, chainOutput, chainPost}

var wantSets = func() map[string]setSpec {
	m := make(map[string]setSpec, len(portSets))
	for name, p := range portSets {
		m[name] = setSpec{Flags: unix.NFT_SET_MAP, KeyType: p.key.GetNFTMagic(), KeyLen: p.key.Bytes, DataType: p.data.GetNFTMagic(), DataLen: p.data.Bytes}
	}
	return m
}()

var setOrder = []string{setPortsAny, setPortsAddr, setPorts6Any, setPorts6Addr}

// nftSet returns the library's description of one of zlmesh's sets.
func nftSet(t *nftables.Table, name string) *nftables.Set {
	p := portSets[name]
	return &nftables.Set{Table: t, Name: name, IsMap: true, KeyType: p.key, DataType: p.data}
}

// render turns the rules of a Plan (in any order; about n4 IPv4 and n6
// IPv6 of them KindPublish on all addresses, size hints) into the wanted
// table content.
func render(rules iter.Seq[Rule], n4, n6 int) *state {
	s := &state{
		Exists: true,
		Chains: wantChains,
		Sets:   wantSets,
		Rules:  make(map[string][]ruleSpec, len(wantChains)),
		Elems:  map[string]map[elemKey]elemVal{setPortsAny: make(map[elemKey]elemVal, n4), setPortsAddr: {}},
		Elems6: map[string]map[elemKey6]elemVal6{setPorts6Any: make(map[elemKey6]elemVal6, n6), setPorts6Addr: {}},
	}
	s.Rules[chainPublish] = publishRules
	s.Rules[chainPre] = preroutingRules
	s.Rules[chainOutput] = outputRules
	var post []ruleSpec
	for r := range rules {
		switch r.Kind {
		case KindPublish:
			if r.Is6() {
				set, k, v := portElem6(r)
				s.Elems6[set][k] = v
			} else {
				set, k, v := portElem(r)
				s.Elems[set][k] = v
			}
		case KindHairpin, KindOverlayKeep, KindOverlaySNAT, KindMasquerade:
			post = append(post, postroutingRule(r))
		}
	}
	s.Rules[chainPost] = post
	return s
}

// postroutingRule renders a source-NAT rule, remembering the last few (they
// change only with the node's addresses, and rendering one costs a hash).
func postroutingRule(r Rule) ruleSpec {
	rendered.Lock()
	defer rendered.Unlock()
	if rs, ok := rendered.m[r]; ok {
		return rs
	}
	var e []expr.Any
	switch r.Kind {
	case KindHairpin:
		e = hairpinExprs(r)
	case KindOverlayKeep:
		e = overlayKeepExprs(r)
	case KindOverlaySNAT:
		e = overlaySNATExprs(r)
	case KindMasquerade:
		e = masqueradeExprs(r)
	}
	if len(rendered.m) >= 64 {
		clear(rendered.m)
	}
	rs := tagged(r.String(), e)
	rendered.m[r] = rs
	return rs
}

var rendered = struct {
	sync.Mutex
	m map[Rule]ruleSpec
}{m: map[Rule]ruleSpec{}}

// tagged names exprs by what and a hash of their netlink encoding, so a
// change in how zlmesh renders a rule is noticed in tables it made before.
func tagged(what string, exprs []expr.Any) ruleSpec {
	h := sha256.New()
	for _, e := range exprs {
		b, err := expr.Marshal(byte(family), e)
		if err != nil {
			panic("natd: marshal " + what + ": " + err.Error()) // static expressions: a bug
		}
		h.Write(b)
	}
	return ruleSpec{Tag: commentPrefix + what + " #" + hex.EncodeToString(h.Sum(nil)[:6]), Exprs: exprs}
}

var (
	publishRules = []ruleSpec{
		tagged("publish on one address", append(ipv4Only(),
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 16, Len: 4},
			&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 9},
			&expr.Payload{DestRegister: 10, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
			&expr.Lookup{SourceRegister: 1, DestRegister: 1, IsDestRegSet: true, SetName: setPortsAddr},
			&expr.NAT{Type: expr.NATTypeDestNAT, Family: unix.NFPROTO_IPV4, RegAddrMin: 1, RegProtoMin: 9},
		)),
		tagged("publish on all addresses", append(ipv4Only(),
			&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
			&expr.Payload{DestRegister: 9, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
			&expr.Lookup{SourceRegister: 1, DestRegister: 1, IsDestRegSet: true, SetName: setPortsAny},
			&expr.NAT{Type: expr.NATTypeDestNAT, Family: unix.NFPROTO_IPV4, RegAddrMin: 1, RegProtoMin: 9},
		)),
		// IPv6: the 16-byte address fills register 1 (the 32-bit
		// registers 8 to 11), so the protocol and port follow in 12 and 13
		// for the key, and the target's port lands in 12.
		tagged("publish on one ipv6 address", append(familyOnly(true),
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 24, Len: 16},
			&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 12},
			&expr.Payload{DestRegister: 13, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
			&expr.Lookup{SourceRegister: 1, DestRegister: 1, IsDestRegSet: true, SetName: setPorts6Addr},
			&expr.NAT{Type: expr.NATTypeDestNAT, Family: unix.NFPROTO_IPV6, RegAddrMin: 1, RegProtoMin: 12},
		)),
		tagged("publish on all ipv6 addresses", append(familyOnly(true),
			&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
			&expr.Payload{DestRegister: 9, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
			&expr.Lookup{SourceRegister: 1, DestRegister: 1, IsDestRegSet: true, SetName: setPorts6Any},
			&expr.NAT{Type: expr.NATTypeDestNAT, Family: unix.NFPROTO_IPV6, RegAddrMin: 1, RegProtoMin: 12},
		)),
	}
	preroutingRules = []ruleSpec{
		tagged("published ports from the network", append(ipv4Only(), append(localDaddr(),
			&expr.Verdict{Kind: expr.VerdictJump, Chain: chainPublish})...)),
		tagged("published ipv6 ports from the network", append(familyOnly(true), append(localDaddr(),
			&expr.Verdict{Kind: expr.VerdictJump, Chain: chainPublish})...)),
	}
	outputRules = []ruleSpec{
		tagged("published ports from this host", append(append(ipv4Only(),
			prefixMatch(16, netip.MustParsePrefix("127.0.0.0/8"), expr.CmpOpNeq)...), append(localDaddr(),
			&expr.Verdict{Kind: expr.VerdictJump, Chain: chainPublish})...)),
		tagged("published ipv6 ports from this host", append(append(familyOnly(true),
			addrMatch(false, netip.IPv6Loopback(), expr.CmpOpNeq)...), append(localDaddr(),
			&expr.Verdict{Kind: expr.VerdictJump, Chain: chainPublish})...)),
	}
)

// hairpinExprs match on addresses, not on the input interface: where
// br_netfilter is active (bridge-nf-call-iptables=1) a connection translated
// to a target on the client's own bridge is bridged, not routed, and its
// postrouting pass has no input interface; the output is the bridge.
func hairpinExprs(r Rule) []expr.Any {
	six := r.Is6()
	e := append(append(familyOnly(six), ctDNAT()...), addrPrefix(true, r.Source, expr.CmpOpEq)...)
	return append(e,
		&expr.Meta{Key: expr.MetaKeyOIFNAME, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte(r.Iface)},
		&expr.Fib{Register: 1, FlagSADDR: true, ResultADDRTYPE: true},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: binaryutil.NativeEndian.PutUint32(unix.RTN_LOCAL)},
		&expr.Masq{},
	)
}

func overlayKeepExprs(r Rule) []expr.Any {
	e := append(append(familyOnly(r.Is6()), ctDNAT()...),
		&expr.Meta{Key: expr.MetaKeyOIFNAME, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: ifname(r.Iface)},
	)
	e = append(e, addrPrefix(true, r.Source, expr.CmpOpEq)...)
	return append(e, &expr.Verdict{Kind: expr.VerdictAccept})
}

func overlaySNATExprs(r Rule) []expr.Any {
	fam := uint32(unix.NFPROTO_IPV4)
	if r.Is6() {
		fam = unix.NFPROTO_IPV6
	}
	e := append(append(familyOnly(r.Is6()), ctDNAT()...),
		&expr.Meta{Key: expr.MetaKeyOIFNAME, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: ifname(r.Iface)},
	)
	return append(e,
		&expr.Immediate{Register: 1, Data: r.To.AsSlice()},
		&expr.NAT{Type: expr.NATTypeSourceNAT, Family: fam, RegAddrMin: 1},
	)
}

func masqueradeExprs(r Rule) []expr.Any {
	e := familyOnly(r.Is6())
	e = append(e, addrPrefix(true, r.Source, expr.CmpOpEq)...)
	e = append(e, addrPrefix(false, r.Except, expr.CmpOpNeq)...)
	return append(e,
		&expr.Meta{Key: expr.MetaKeyOIFNAME, Register: 1},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: ifname(r.Iface)},
		&expr.Masq{},
	)
}

// ipv4Only matches IPv4 packets (in an inet table, before any ip header field).
func ipv4Only() []expr.Any { return familyOnly(false) }

// familyOnly matches IPv6 packets (six) or IPv4 packets, as ipv4Only.
func familyOnly(six bool) []expr.Any {
	fam := byte(unix.NFPROTO_IPV4)
	if six {
		fam = unix.NFPROTO_IPV6
	}
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{fam}},
	}
}

// localDaddr matches packets to a local address of the host
// (fib daddr type local).
func localDaddr() []expr.Any {
	return []expr.Any{
		&expr.Fib{Register: 1, FlagDADDR: true, ResultADDRTYPE: true},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.NativeEndian.PutUint32(unix.RTN_LOCAL)},
	}
}

// ipsDstNAT is the conntrack status bit of a destination-NATed connection
// (IPS_DST_NAT in linux/netfilter/nf_conntrack_common.h).
const ipsDstNAT = 1 << 5

// ctDNAT matches connections whose destination was translated
// (ct status dnat).
func ctDNAT() []expr.Any {
	return []expr.Any{
		&expr.Ct{Key: expr.CtKeySTATUS, Register: 1},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4,
			Mask: binaryutil.NativeEndian.PutUint32(ipsDstNAT), Xor: make([]byte, 4)},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: make([]byte, 4)},
	}
}

// prefixMatch compares the IPv4 address at offset off of the network header
// with p.
func prefixMatch(off uint32, p netip.Prefix, op expr.CmpOp) []expr.Any {
	var m [4]byte
	binary.BigEndian.PutUint32(m[:], ^uint32(0)<<(32-p.Bits()))
	a := p.Masked().Addr().As4()
	return []expr.Any{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: off, Len: 4},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: m[:], Xor: make([]byte, 4)},
		&expr.Cmp{Op: op, Register: 1, Data: a[:]},
	}
}

// addrPrefix compares the source (src) or destination address of the
// packet, of p's family (IPv4 exactly as prefixMatch), with p.
func addrPrefix(src bool, p netip.Prefix, op expr.CmpOp) []expr.Any {
	if p.Addr().Is4() {
		off := uint32(16)
		if src {
			off = 12
		}
		return prefixMatch(off, p, op)
	}
	off := uint32(24)
	if src {
		off = 8
	}
	var m [16]byte
	for i := range p.Bits() {
		m[i/8] |= 0x80 >> (i % 8)
	}
	a := p.Masked().Addr().As16()
	return []expr.Any{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: off, Len: 16},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 16, Mask: m[:], Xor: make([]byte, 16)},
		&expr.Cmp{Op: op, Register: 1, Data: a[:]},
	}
}

// addrMatch compares the source (src) or destination IPv6 address of the
// packet with a.
func addrMatch(src bool, a netip.Addr, op expr.CmpOp) []expr.Any {
	off := uint32(24)
	if src {
		off = 8
	}
	return []expr.Any{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: off, Len: 16},
		&expr.Cmp{Op: op, Register: 1, Data: a.AsSlice()},
	}
}

// ifname is an interface name as the kernel compares it for an exact match:
// NUL-padded to IFNAMSIZ.
func ifname(name string) []byte {
	b := make([]byte, unix.IFNAMSIZ)
	copy(b, name)
	return b
}

// comment is the rule comment (libnftnl user data type 0) in ud, or "".
// It tolerates malformed user data (the library's parser would panic).
func comment(ud []byte) string {
	for len(ud) >= 2 {
		typ, n := ud[0], int(ud[1])
		if len(ud) < 2+n {
			return ""
		}
		if typ == 0 {
			v := ud[2 : 2+n]
			for len(v) > 0 && v[len(v)-1] == 0 {
				v = v[:len(v)-1]
			}
			return string(v)
		}
		ud = ud[2+n:]
	}
	return ""
}

// commentData is the user data carrying comment c.
func commentData(c string) []byte {
	return append([]byte{0, byte(len(c) + 1)}, append([]byte(c), 0)...)
}
