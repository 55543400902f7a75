//go:build linux

package natd

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/netip"
	"slices"
	"sync"

	"github.com/google/nftables"
	"github.com/mdlayher/netlink"
	vnl "github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// New opens netlink sockets in the namespace opts.NetNS names, reads zlmesh's table
// if it exists and adopts it: nothing is changed until the first Set, which
// then removes what is stale and adds what is missing. It logs a warning for
// every base chain of another nftables table that drops forwarded packets by
// default (see the package doc).
func New(opts Options) (Table, error) {
	t := &nftTable{
		log:   opts.Logger,
		table: &nftables.Table{Name: opts.TableName, Family: family},
		netns: opts.NetNS,
	}
	if t.log == nil {
		t.log = slog.Default()
	}
	if t.table.Name == "" {
		t.table.Name = DefaultTableName
	}
	t.log = t.log.With("table", t.table.Name)
	if err := checkTableName(t.table.Name); err != nil {
		return nil, err
	}
	if err := t.dial(); err != nil {
		return nil, err
	}
	gc, err := netlink.Dial(unix.NETLINK_NETFILTER, &netlink.Config{NetNS: opts.NetNS})
	if err != nil {
		t.conn.CloseLasting()
		return nil, fmt.Errorf("open nftables netlink socket: %w", err)
	}
	t.gen = gc
	if opts.NetNS != 0 {
		t.ct, err = vnl.NewHandleAt(netns.NsHandle(opts.NetNS), unix.NETLINK_NETFILTER)
	} else {
		t.ct, err = vnl.NewHandle(unix.NETLINK_NETFILTER)
	}
	if err != nil {
		t.conn.CloseLasting()
		t.gen.Close()
		return nil, fmt.Errorf("open conntrack netlink socket: %w", err)
	}
	have, _, _, err := t.currentLocked() // t is not shared yet
	if err != nil {
		t.Close()
		return nil, fmt.Errorf("read nftables table %s: %w", t.table.Name, err)
	}
	if have.Exists {
		t.log.Info("nat table adopted", "ports", have.ports(), "unreadable", have.Unreadable)
	}
	t.warnForwardDrop()
	return t, nil
}

// nftTable implements Table with nftables over netlink.
type nftTable struct {
	log   *slog.Logger
	table *nftables.Table
	netns int

	mu     sync.Mutex // guards everything below
	closed bool
	conn   *nftables.Conn // lasting; its buffered messages are sent by flush
	gen    *netlink.Conn  // for NFT_MSG_GETGEN
	ct     *vnl.Handle    // for conntrack
	// cache is the table's content at ruleset generation cacheGen; nil
	// when unknown. Any commit by anyone moves the generation, so a cache
	// whose generation is current is exact without reading the table.
	cache    *state
	cacheGen uint32
	stats    stats
	// failNext makes the next batch fail in the kernel after zlmesh's
	// changes (tests: batch atomicity).
	failNext bool
}

// stats count what was sent to the kernel (tests and logs).
type stats struct {
	Batches  int // batches committed or tried
	Messages int // messages in them
	Reads    int // full reads of the table
}

func (t *nftTable) dial() error {
	opts := []nftables.ConnOption{nftables.AsLasting(), nftables.WithSockOptions(bigBuffers)}
	if t.netns != 0 {
		opts = append(opts, nftables.WithNetNSFd(t.netns))
	}
	c, err := nftables.New(opts...)
	if err != nil {
		return fmt.Errorf("open nftables netlink socket: %w", err)
	}
	t.conn = c
	return nil
}

// bigBuffers lets one batch carry MaxPorts elements, and the kernel's echo
// of a refused message come back (root may exceed the sysctl limits), and
// asks for the kernel's error text. (NETLINK_CAP_ACK would shorten the
// echo, but mdlayher/netlink cannot parse capped extended acks.)
func bigBuffers(c *netlink.Conn) error {
	_ = c.SetOption(netlink.ExtendedAcknowledge, true)
	rc, err := c.SyscallConn()
	if err != nil {
		return nil
	}
	_ = rc.Control(func(fd uintptr) {
		_ = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, 8<<20)
		_ = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 8<<20)
	})
	return nil
}

func (t *nftTable) Set(cfg Config) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return ErrClosed
	}
	if err := cfg.Validate(); err != nil {
		return err
	}
	n6 := 0
	if cfg.Cluster6.IsValid() {
		n6 = len(cfg.Ports)
	}
	return t.convergeLocked(render(rulesOf(cfg), len(cfg.Ports), n6))
}

func (t *nftTable) Purge() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return ErrClosed
	}
	return t.convergeLocked(&state{})
}

func (t *nftTable) Close() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return nil
	}
	t.closed = true
	err := t.conn.CloseLasting()
	if gerr := t.gen.Close(); err == nil {
		err = gerr
	}
	t.ct.Close()
	return err
}

// convergeLocked makes the table hold want (want.Exists false: no table).
// It sends at most one batch per attempt; it tries again only when someone
// else committed a change around its own, to leave the table as wanted.
func (t *nftTable) convergeLocked(want *state) error {
	for attempt := 1; ; attempt++ {
		have, gen, exact, err := t.currentLocked()
		if err != nil {
			return fmt.Errorf("read nftables table %s: %w", t.table.Name, err)
		}
		ops, stale, sum := t.diff(have, want)
		if len(ops) == 0 {
			return nil
		}
		if err := t.applyLocked(ops); err != nil {
			if !exact && attempt < 3 {
				// Built on a view the ruleset moved under; the kernel
				// refused it whole. Read again.
				continue
			}
			return fmt.Errorf("update nftables table %s (%s): %w", t.table.Name, sum, err)
		}
		t.forgetUDP(stale)
		after, err := t.genID()
		if err != nil {
			t.cache = nil
			return fmt.Errorf("read nftables generation: %w", err)
		}
		if exact && after == nextGen(gen) {
			// Ours was the only commit: the table now is what we wanted.
			t.cache, t.cacheGen = want, after
			t.log.Info("nat table updated", "change", sum, "messages", len(ops))
			return nil
		}
		// Someone else committed around our batch: read back and check.
		t.cache = nil
		t.log.Info("nat table updated while others changed the ruleset; checking", "change", sum, "attempt", attempt)
		if attempt == 3 {
			// Our batches went in; the table is read back on the next Set.
			t.log.Warn("ruleset kept changing while natd updated it; it will be checked again on the next Set")
			return nil
		}
	}
}

// nextGen is the ruleset generation after one commit (the kernel skips 0).
func nextGen(g uint32) uint32 {
	if g+1 == 0 {
		return 1
	}
	return g + 1
}

// applyLocked sends ops as one batch. On error the kernel applied none of
// it; the cache is dropped and the connection (which may hold unread
// replies) is replaced.
func (t *nftTable) applyLocked(ops []op) error {
	if t.failNext {
		t.failNext = false
		ops = append(ops, func(c *nftables.Conn) error {
			c.DelSet(&nftables.Set{Table: t.table, Name: "zlmesh-injected-failure"})
			return nil
		})
	}
	t.stats.Batches++
	t.stats.Messages += len(ops)
	var err error
	for _, o := range ops {
		if err = o(t.conn); err != nil {
			break
		}
	}
	if err == nil {
		err = t.conn.Flush()
	}
	if err != nil {
		t.cache = nil
		t.conn.CloseLasting()
		if derr := t.dial(); derr != nil {
			return errors.Join(err, derr)
		}
	}
	return err
}

// currentLocked returns the table's content and the generation it belongs
// to: the cache when the generation did not move, else a fresh read. exact
// is false when the ruleset kept changing during every read (others commit
// all the time): then s is the last read, not cached, and gen meaningless.
func (t *nftTable) currentLocked() (s *state, gen uint32, exact bool, err error) {
	gen, err = t.genID()
	if err != nil {
		return nil, 0, false, fmt.Errorf("read nftables generation: %w", err)
	}
	if t.cache != nil && t.cacheGen == gen {
		return t.cache, gen, true, nil
	}
	t.cache = nil
	for range 3 {
		s, err = t.read()
		if err != nil {
			return nil, 0, false, err
		}
		again, err := t.genID()
		if err != nil {
			return nil, 0, false, fmt.Errorf("read nftables generation: %w", err)
		}
		if again == gen {
			t.cache, t.cacheGen = s, gen
			return s, gen, true, nil
		}
		gen = again // changed while we read: read again
	}
	return s, 0, false, nil
}

// genID asks the kernel for the ruleset generation (NFT_MSG_GETGEN).
func (t *nftTable) genID() (uint32, error) {
	msgs, err := t.gen.Execute(netlink.Message{
		Header: netlink.Header{
			Type:  netlink.HeaderType(unix.NFNL_SUBSYS_NFTABLES<<8 | unix.NFT_MSG_GETGEN),
			Flags: netlink.Request,
		},
		Data: []byte{unix.AF_UNSPEC, unix.NFNETLINK_V0, 0, 0},
	})
	if err != nil {
		return 0, err
	}
	for _, m := range msgs {
		if len(m.Data) < 4 {
			continue
		}
		ad, err := netlink.NewAttributeDecoder(m.Data[4:])
		if err != nil {
			return 0, err
		}
		ad.ByteOrder = binary.BigEndian
		for ad.Next() {
			if ad.Type() == unix.NFTA_GEN_ID {
				return ad.Uint32(), nil
			}
		}
	}
	return 0, errors.New("no generation in NFT_MSG_NEWGEN reply")
}

// read dumps zlmesh's table. A table whose content cannot be parsed (made
// by something else, or by a zlmesh that rendered differently) is returned
// as Unreadable and will be rebuilt.
func (t *nftTable) read() (*state, error) {
	t.stats.Reads++
	tables, err := t.conn.ListTablesOfFamily(family)
	if err != nil {
		return nil, fmt.Errorf("list tables: %w", err)
	}
	s := &state{}
	for _, tb := range tables {
		if tb.Name == t.table.Name {
			s.Exists = true
		}
	}
	if !s.Exists {
		return s, nil
	}
	if err := t.readContent(s); err != nil {
		t.log.Warn("nat table unreadable; it will be rebuilt", "err", err)
		*s = state{Exists: true, Unreadable: true}
	}
	return s, nil
}

func (t *nftTable) readContent(s *state) error {
	s.Chains = map[string]chainSpec{}
	s.Rules = map[string][]ruleSpec{}
	s.Sets = map[string]setSpec{}
	s.Elems = map[string]map[elemKey]elemVal{}
	s.Elems6 = map[string]map[elemKey6]elemVal6{}
	chains, err := t.conn.ListChainsOfTableFamily(family)
	if err != nil {
		return fmt.Errorf("list chains: %w", err)
	}
	for _, c := range chains {
		if c.Table == nil || c.Table.Name != t.table.Name {
			continue
		}
		var cs chainSpec
		if c.Hooknum != nil {
			cs.Type, cs.Hook = c.Type, *c.Hooknum
			if c.Priority != nil {
				cs.Priority = *c.Priority
			}
			if c.Policy != nil {
				cs.Policy = *c.Policy
			}
		}
		s.Chains[c.Name] = cs
		rules, err := t.conn.GetRules(t.table, &nftables.Chain{Name: c.Name, Table: t.table})
		if err != nil {
			return fmt.Errorf("list rules of chain %s: %w", c.Name, err)
		}
		rs := make([]ruleSpec, 0, len(rules))
		for _, r := range rules {
			rs = append(rs, ruleSpec{Tag: comment(r.UserData)})
		}
		s.Rules[c.Name] = rs
	}
	sets, err := t.conn.GetSets(t.table)
	if err != nil {
		return fmt.Errorf("list sets: %w", err)
	}
	for _, set := range sets {
		ss := setSpec{KeyType: set.KeyType.GetNFTMagic(), KeyLen: set.KeyType.Bytes, DataType: set.DataType.GetNFTMagic(), DataLen: set.DataType.Bytes}
		for _, f := range []struct {
			on   bool
			flag uint32
		}{{set.IsMap, unix.NFT_SET_MAP}, {set.Interval, unix.NFT_SET_INTERVAL}, {set.HasTimeout, unix.NFT_SET_TIMEOUT},
			{set.Constant, unix.NFT_SET_CONSTANT}, {set.Anonymous, unix.NFT_SET_ANONYMOUS}, {set.Dynamic, unix.NFT_SET_EVAL}} {
			if f.on {
				ss.Flags |= f.flag
			}
		}
		s.Sets[set.Name] = ss
		if want, ok := wantSets[set.Name]; !ok || want != ss {
			continue // will be rebuilt: its elements do not matter
		}
		elems, err := t.conn.GetSetElements(set)
		if err != nil {
			return fmt.Errorf("list elements of %s: %w", set.Name, err)
		}
		if err := readElems(set.Name, elems, s); err != nil {
			return err
		}
	}
	return nil
}

// op adds one message to a batch.
type op func(*nftables.Conn) error

// diff returns the messages that turn have into want, and a summary for
// logs. Chains and sets are fixed: if they differ in any way the table is
// deleted and made again in the same batch (an atomic swap). Otherwise each
// chain whose rule list differs is flushed and refilled (a few rules at
// most), and the port maps get exactly the elements that changed.
func (t *nftTable) diff(have, want *state) ([]op, []staleUDP, string) {
	var ops []op
	if !want.Exists {
		if have.Exists {
			ops = append(ops, func(c *nftables.Conn) error { c.DelTable(t.table); return nil })
			return ops, staleAll(have, want), "table deleted"
		}
		return nil, nil, ""
	}
	if !have.Exists || have.Unreadable || !maps.Equal(have.Chains, want.Chains) || !maps.Equal(have.Sets, want.Sets) {
		what := "table created"
		if have.Exists {
			what = "table rebuilt"
			ops = append(ops, func(c *nftables.Conn) error { c.DelTable(t.table); return nil })
		}
		ops = append(ops, t.createOps(want)...)
		return ops, staleAll(have, want), fmt.Sprintf("%s, %d ports", what, want.ports())
	}
	var rewritten []string
	for _, name := range chainOrder {
		if slices.EqualFunc(have.Rules[name], want.Rules[name], func(a, b ruleSpec) bool { return a.Tag == b.Tag }) {
			continue
		}
		rewritten = append(rewritten, name)
		chain := &nftables.Chain{Name: name, Table: t.table}
		ops = append(ops, func(c *nftables.Conn) error { c.FlushChain(chain); return nil })
		ops = append(ops, ruleOps(t.table, chain, want.Rules[name])...)
	}
	added, removed := 0, 0
	var stale []staleUDP
	for _, name := range setOrder {
		del, add, st := setDiff(name, have, want)
		stale = append(stale, st...)
		added += len(add)
		removed += len(del)
		set, per := nftSet(t.table, name), portSets[name].perMessage()
		for chunk := range slices.Chunk(del, per) {
			ops = append(ops, func(c *nftables.Conn) error { return c.SetDeleteElements(set, chunk) })
		}
		for chunk := range slices.Chunk(add, per) {
			ops = append(ops, func(c *nftables.Conn) error { return c.SetAddElements(set, chunk) })
		}
	}
	return ops, stale, fmt.Sprintf("ports +%d -%d, chains rewritten %v", added, removed, rewritten)
}

// staleUDP is a published UDP port that was removed or sent elsewhere: the
// conntrack entries it made still carry the old translation.
type staleUDP struct {
	hostAddr netip.Addr // zero: any
	hostPort uint16
	target   netip.AddrPort
}

// forgetUDP deletes the conntrack entries of stale UDP ports. A UDP "flow"
// whose client keeps sending never times out, so without this a port
// retargeted to a new container (or unpublished) would keep feeding the
// old one. TCP connections are left alone: an established connection keeps
// its target until it ends. It costs a walk of the conntrack table, only
// when a UDP port went away; failures are logged, not returned (the rules
// are already in place).
func (t *nftTable) forgetUDP(stale []staleUDP) {
	if len(stale) == 0 {
		return
	}
	// One walk per family that has stale ports: the conntrack dump is
	// per family.
	var v4, v6 udpFlows
	for _, u := range stale {
		if u.target.Addr().Is6() {
			v6 = append(v6, u)
		} else {
			v4 = append(v4, u)
		}
	}
	for _, f := range []struct {
		family vnl.InetFamily
		flows  udpFlows
	}{{unix.AF_INET, v4}, {unix.AF_INET6, v6}} {
		if len(f.flows) == 0 {
			continue
		}
		n, err := t.ct.ConntrackDeleteFilters(vnl.ConntrackTable, f.family, f.flows)
		if err != nil {
			t.log.Warn("forget conntrack entries of unpublished udp ports", "ports", len(f.flows), "family", f.family, "err", err)
			continue
		}
		if n > 0 {
			t.log.Info("forgot conntrack entries of unpublished udp ports", "ports", len(f.flows), "family", f.family, "entries", n)
		}
	}
}

// udpFlows matches conntrack entries made by any of its ports: UDP to the
// host port (on the host address, if set), answered by the target.
type udpFlows []staleUDP

func (u udpFlows) MatchConntrackFlow(f *vnl.ConntrackFlow) bool {
	if f.Forward.Protocol != unix.IPPROTO_UDP {
		return false
	}
	for _, s := range u {
		if f.Forward.DstPort != s.hostPort || f.Reverse.SrcPort != s.target.Port() {
			continue
		}
		if rs, ok := netip.AddrFromSlice(f.Reverse.SrcIP); !ok || rs.Unmap() != s.target.Addr() {
			continue
		}
		if s.hostAddr.IsValid() {
			if d, ok := netip.AddrFromSlice(f.Forward.DstIP); !ok || d.Unmap() != s.hostAddr {
				continue
			}
		}
		return true
	}
	return false
}

func (t *nftTable) createOps(want *state) []op {
	tbl := t.table
	ops := []op{func(c *nftables.Conn) error { c.AddTable(tbl); return nil }}
	for _, name := range setOrder {
		set := nftSet(tbl, name)
		ops = append(ops, func(c *nftables.Conn) error { return c.AddSet(set, nil) })
		for chunk := range slices.Chunk(setElems(name, want), portSets[name].perMessage()) {
			ops = append(ops, func(c *nftables.Conn) error { return c.SetAddElements(set, chunk) })
		}
	}
	chains := map[string]*nftables.Chain{}
	for _, name := range chainOrder {
		cs := want.Chains[name]
		ch := &nftables.Chain{Name: name, Table: tbl}
		if cs.Type != "" {
			hook, prio, policy := cs.Hook, cs.Priority, cs.Policy
			ch.Type, ch.Hooknum, ch.Priority, ch.Policy = cs.Type, &hook, &prio, &policy
		}
		chains[name] = ch
		ops = append(ops, func(c *nftables.Conn) error { c.AddChain(ch); return nil })
	}
	for _, name := range chainOrder {
		ops = append(ops, ruleOps(tbl, chains[name], want.Rules[name])...)
	}
	return ops
}

func ruleOps(tbl *nftables.Table, chain *nftables.Chain, rules []ruleSpec) []op {
	ops := make([]op, 0, len(rules))
	for _, r := range rules {
		rule := &nftables.Rule{Table: tbl, Chain: chain, Exprs: r.Exprs, UserData: commentData(r.Tag)}
		ops = append(ops, func(c *nftables.Conn) error { c.AddRule(rule); return nil })
	}
	return ops
}

// warnForwardDrop logs every base chain of another nftables table that
// drops forwarded IPv4 or IPv6 packets by default: zlmesh's forwarding cannot pass
// it unless that table accepts it (see the package doc).
func (t *nftTable) warnForwardDrop() {
	for _, fam := range []nftables.TableFamily{nftables.TableFamilyIPv4, nftables.TableFamilyIPv6, nftables.TableFamilyINet} {
		chains, err := t.conn.ListChainsOfTableFamily(fam)
		if err != nil {
			continue
		}
		for _, c := range chains {
			if c.Hooknum == nil || *c.Hooknum != *nftables.ChainHookForward || c.Policy == nil || *c.Policy != nftables.ChainPolicyDrop {
				continue
			}
			if c.Table != nil && c.Table.Name == t.table.Name && fam == family {
				continue
			}
			t.log.Warn("another nftables table drops forwarded packets by default; zlmesh's bridges, overlay and published ports need an accept there",
				"other_table", c.Table.Name, "family", familyName(fam), "chain", c.Name)
		}
	}
}

func familyName(f nftables.TableFamily) string {
	switch f {
	case nftables.TableFamilyINet:
		return "inet"
	case nftables.TableFamilyIPv6:
		return "ip6"
	}
	return "ip"
}

// checkTableName accepts 1 to 255 bytes without NUL (NFT_NAME_MAXLEN 256).
func checkTableName(name string) error {
	if len(name) == 0 || len(name) > 255 || bytes.IndexByte([]byte(name), 0) >= 0 {
		return fmt.Errorf("%w: table name %q", ErrInvalid, name)
	}
	return nil
}
