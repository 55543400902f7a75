//go:build linux

package bridge

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// socketTimeout bounds every netlink round-trip.
const socketTimeout = 10 * time.Second

var errClosed = fmt.Errorf("bridge manager is closed: %w", ErrInvalid)

// system is the Linux state of a Manager.
type system struct {
	life struct {
		sync.RWMutex // read-held by every call, write-held by Close
		closed       bool
	}
	host   netns.NsHandle  // the host namespace; netns.None() for the caller's
	hostID NetnsID         // its identity, to refuse attaching into it
	initID NetnsID         // pid 1's namespace (the machine's own), refused too; zero when unreadable
	guard  Guard           // Config.Guard, addresses unmapped
	nl     *netlink.Handle // route socket in the host namespace
	raw    rawSocket       // a second one for the requests nl has no call for
	locks  keyedMutex      // one per bridge name
	fwd    struct {
		sync.Mutex
		v4, v6 bool // forwarding switched on (or found on)
	}
	// hook, when set (tests only), runs before each named step of an
	// attach; an error from it fails the step.
	hook func(step string) error
	// movePeer (tests and benchmarks only) makes attach create the container
	// end in the host and move it with moveRename instead of creating it in
	// place; see attachLocked.
	movePeer bool
	// The reaper (reap_linux.go): delVeth sends to reap; routineReap runs
	// until stopReap is closed and closes reapDone.
	reap     chan *reapRequest
	stopReap chan struct{}
	reapDone chan struct{}
	// reapGroup picks a candidate link group number for batches (tests
	// fix it); the reaper keeps the one in use and when a dump last showed
	// it free (only routineReap touches these two).
	reapGroup    func() uint32
	reapInUse    uint32
	reapVerified time.Time
	log          *slog.Logger
	// known remembers, per bridge, the containers this Manager attached or
	// adopted and has not detached since: while one remains, Detach knows
	// the bridge is not empty without listing its ports (a dump that grows
	// with them). The kernel's list still decides every bridge removal.
	known struct {
		sync.Mutex
		ports map[string]map[string]bool // bridge → containers
	}
}

// notePort records that container is a port of bridge.
func (sys *system) notePort(bridge, container string) {
	sys.known.Lock()
	defer sys.known.Unlock()
	if sys.known.ports == nil {
		sys.known.ports = map[string]map[string]bool{}
	}
	if sys.known.ports[bridge] == nil {
		sys.known.ports[bridge] = map[string]bool{}
	}
	sys.known.ports[bridge][container] = true
}

// forgetPort forgets container as a port of bridge and returns how many
// known ports the bridge has left.
func (sys *system) forgetPort(bridge, container string) int {
	sys.known.Lock()
	defer sys.known.Unlock()
	ports := sys.known.ports[bridge]
	delete(ports, container)
	if len(ports) == 0 {
		delete(sys.known.ports, bridge)
	}
	return len(ports)
}

func newSystem(cfg Config) (_ *system, err error) {
	sys := &system{host: netns.None(), log: cfg.Logger, reapGroup: randomReapGroup}
	if fd, id, err := openNetns("/proc/1/ns/net"); err == nil {
		unix.Close(fd)
		sys.initID = id
	}
	sys.guard.Links = slices.Clone(cfg.Guard.Links)
	for _, a := range cfg.Guard.Addrs {
		sys.guard.Addrs = append(sys.guard.Addrs, a.Unmap())
	}
	if sys.log == nil {
		sys.log = slog.New(slog.DiscardHandler)
	}
	defer func() {
		if err != nil {
			sys.closeAll()
		}
	}()
	if cfg.HostNetns != "" {
		fd, id, err := openNetns(cfg.HostNetns)
		if err != nil {
			return nil, fmt.Errorf("host netns: %w", err)
		}
		sys.host, sys.hostID = netns.NsHandle(fd), id
	} else {
		cur, err := netns.Get()
		if err != nil {
			return nil, fmt.Errorf("current netns: %w", err)
		}
		sys.hostID, err = checkNetnsFd(int(cur), "current netns")
		cur.Close()
		if err != nil {
			return nil, err
		}
	}
	sys.nl, err = netlink.NewHandleAt(sys.host, unix.NETLINK_ROUTE)
	if err != nil {
		return nil, fmt.Errorf("netlink socket in host netns: %w", err)
	}
	if err := sys.nl.SetSocketTimeout(socketTimeout); err != nil {
		return nil, fmt.Errorf("netlink socket timeout: %w", err)
	}
	s, err := nl.GetNetlinkSocketAt(sys.host, netns.None(), unix.NETLINK_ROUTE)
	if err != nil {
		return nil, fmt.Errorf("raw netlink socket in host netns: %w", err)
	}
	sys.raw.sockets = map[int]*nl.SocketHandle{unix.NETLINK_ROUTE: {Socket: s}}
	tv := unix.NsecToTimeval(socketTimeout.Nanoseconds())
	if err := s.SetSendTimeout(&tv); err != nil {
		return nil, err
	}
	if err := s.SetReceiveTimeout(&tv); err != nil {
		return nil, err
	}
	// Strict checking makes the kernel honour the filters of dump requests
	// (the link index of an address dump): a bridge's addresses are read
	// without dumping every veth's. Kernels before 4.20 lack it; addrs
	// filters again itself.
	unix.SetsockoptInt(s.GetFd(), unix.SOL_NETLINK, unix.NETLINK_GET_STRICT_CHK, 1)
	sys.reap, sys.stopReap, sys.reapDone = make(chan *reapRequest), make(chan struct{}), make(chan struct{})
	go sys.routineReap()
	return sys, nil
}

func (sys *system) closeAll() {
	if sys.stopReap != nil {
		close(sys.stopReap)
		<-sys.reapDone
	}
	if sys.nl != nil {
		sys.nl.Close()
	}
	sys.raw.close()
	if sys.host.IsOpen() {
		sys.host.Close()
	}
}

func (m *Manager) close() error {
	m.sys.life.Lock()
	defer m.sys.life.Unlock()
	if !m.sys.life.closed {
		m.sys.life.closed = true
		m.sys.closeAll()
	}
	return nil
}

// acquire read-holds the Manager open for one call; release with the
// returned func.
func (m *Manager) acquire() (*system, func(), error) {
	m.sys.life.RLock()
	if m.sys.life.closed {
		m.sys.life.RUnlock()
		return nil, nil, errClosed
	}
	return m.sys, m.sys.life.RUnlock, nil
}

// keyedMutex is a set of mutexes by name, each existing while in use.
type keyedMutex struct {
	mu sync.Mutex
	m  map[string]*refMutex
}

type refMutex struct {
	sync.Mutex
	refs int
}

func (k *keyedMutex) lock(key string) (unlock func()) {
	k.mu.Lock()
	if k.m == nil {
		k.m = map[string]*refMutex{}
	}
	rm := k.m[key]
	if rm == nil {
		rm = &refMutex{}
		k.m[key] = rm
	}
	rm.refs++
	k.mu.Unlock()
	rm.Lock()
	return func() {
		rm.Unlock()
		k.mu.Lock()
		if rm.refs--; rm.refs == 0 {
			delete(k.m, key)
		}
		k.mu.Unlock()
	}
}

// target is a container's namespace, pinned by an open fd for as long as
// the call needs it, with a netlink socket inside it.
type target struct {
	path string
	fd   int
	id   NetnsID
	nl   *netlink.Handle
}

// openTarget pins the namespace of s and opens a route socket inside it.
// The host's own namespace is refused, so is pid 1's, and so is one holding
// what Config.Guard names: attaching it would configure the node's (or the
// machine's) namespace.
func (sys *system) openTarget(s Spec) (*target, error) {
	path := s.nsPath()
	fd, id, err := openNetns(path)
	if err != nil {
		if s.PID != 0 && errors.Is(err, ErrNoNamespace) {
			err = fmt.Errorf("process %d: %w", s.PID, err)
		}
		return nil, err
	}
	t := &target{path: path, fd: fd, id: id}
	if id == sys.hostID {
		t.close()
		return nil, fmt.Errorf("netns %s is the host's own namespace: %w", path, ErrInvalid)
	}
	if id == sys.initID {
		// A container never lives in pid 1's namespace: where the node
		// runs in it, it is the host's; where it does not (a node in a
		// namespace of its own), it is still the machine's, and a
		// default route into a bridge would cut the machine off.
		t.close()
		return nil, fmt.Errorf("netns %s is the namespace of pid 1, the machine's own: %w", path, ErrInvalid)
	}
	t.nl, err = netlink.NewHandleAt(netns.NsHandle(fd), unix.NETLINK_ROUTE)
	if err == nil {
		err = t.nl.SetSocketTimeout(socketTimeout)
	}
	if err != nil {
		t.close()
		return nil, fmt.Errorf("netlink socket in netns %s: %w", path, err)
	}
	if err := sys.checkGuard(t); err != nil {
		t.close()
		return nil, err
	}
	return t, nil
}

func (t *target) close() {
	if t.nl != nil {
		t.nl.Close()
	}
	unix.Close(t.fd)
}

// undoList collects the undo of each step done so far.
type undoList struct {
	steps []undoStep
}

type undoStep struct {
	what string
	fn   func() error
}

func (u *undoList) push(what string, fn func() error) { u.steps = append(u.steps, undoStep{what, fn}) }

// run undoes every step in reverse and returns what failed to undo.
func (u *undoList) run() error {
	var errs []error
	for i := len(u.steps) - 1; i >= 0; i-- {
		if err := u.steps[i].fn(); err != nil {
			errs = append(errs, fmt.Errorf("undo %s: %w", u.steps[i].what, err))
		}
	}
	u.steps = nil
	return errors.Join(errs...)
}

// step is called before each attach step: it stops on a cancelled ctx and
// lets tests inject a failure.
func (sys *system) step(ctx context.Context, name string) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("before %s: %w", name, err)
	}
	if sys.hook != nil {
		if err := sys.hook(name); err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
	}
	return nil
}

// Step names, in attach order (also the points where tests inject failures).
const (
	stepIfname    = "check-ifname"
	stepBridge    = "ensure-bridge"
	stepVeth      = "create-veth"
	stepMove      = "move-peer"
	stepInside    = "configure-container"
	stepRoute     = "container-routes"
	stepHostRoute = "host-route"
	stepHostSide  = "configure-host-veth"
	stepForward   = "forwarding"
)

var attachSteps = []string{stepIfname, stepBridge, stepVeth, stepMove, stepInside, stepRoute, stepHostRoute, stepHostSide, stepForward}

// finishHostSide is the end of both attach forms, once the fresh veth's
// host end exists: 7. the host route to s.Address via br, before the host
// end comes up; 8. the host end a port of br, up; 9. the forwarding
// switches. Each change is pushed on undo.
func (m *Manager) finishHostSide(ctx context.Context, sys *system, s Spec, host, br netlink.Link, undo *undoList) error {
	if err := sys.step(ctx, stepHostRoute); err != nil {
		return err
	}
	for _, a := range s.addrs() {
		_, undoRoute, err := sys.ensureHostRoute(a.addr, br)
		if err != nil {
			return err
		}
		if undoRoute != nil {
			undo.push("host route "+a.addr.String(), undoRoute)
		}
	}
	if err := sys.step(ctx, stepHostSide); err != nil {
		return err
	}
	if _, err := sys.ensureHostEnd(host, br, s, true); err != nil {
		return err
	}
	if err := sys.step(ctx, stepForward); err != nil {
		return err
	}
	return m.forwarding(sys, s)
}

// forwarding sets the forwarding switches of s's families, if
// Config.Forwarding.
func (m *Manager) forwarding(sys *system, s Spec) error {
	if !m.cfg.Forwarding {
		return nil
	}
	for _, a := range s.addrs() {
		if err := sys.forwarding(a.addr.Addr().Is6()); err != nil {
			return err
		}
	}
	return nil
}

func (m *Manager) attach(ctx context.Context, s Spec) (Attached, error) {
	if s.HostPeer != "" {
		return m.attachHostPeer(ctx, s)
	}
	if err := s.validate(); err != nil {
		return Attached{}, fmt.Errorf("attach: %w", err)
	}
	sys, release, err := m.acquire()
	if err != nil {
		return Attached{}, err
	}
	defer release()
	t, err := sys.openTarget(s)
	if err != nil {
		return Attached{}, fmt.Errorf("attach %s: %w", s.Container, err)
	}
	defer t.close()
	unlock := sys.locks.lock(BridgeName(s.Service))
	defer unlock()
	start := time.Now()
	a, err := m.attachLocked(ctx, sys, s, t)
	if err != nil {
		return Attached{}, err
	}
	sys.notePort(a.Bridge, s.Container)
	m.log.Info("attached", "container", s.Container, "service", s.Service, "bridge", a.Bridge,
		"veth", a.HostVeth, "ifname", s.ifname(), "addr", s.Address, "addr6", s.Address6, "gateway", s.Gateway,
		"netns", t.path, "took", time.Since(start))
	return a, nil
}

// attachLocked runs steps 2 to 9 of Attach (see its doc) with the
// namespace pinned and the bridge's lock held.
func (m *Manager) attachLocked(ctx context.Context, sys *system, s Spec, t *target) (_ Attached, err error) {
	ifname, brName, vethName := s.ifname(), BridgeName(s.Service), VethName(s.Container)
	var undo undoList
	defer func() {
		if err != nil {
			if uerr := undo.run(); uerr != nil {
				m.log.Error("attach rollback incomplete", "container", s.Container, "err", uerr)
				err = errors.Join(err, uerr)
			}
			err = fmt.Errorf("attach %s to %s: %w", s.Container, brName, err)
		}
	}()

	// 2. Ifname must be free inside the namespace.
	if err := sys.step(ctx, stepIfname); err != nil {
		return Attached{}, err
	}
	if _, err := t.nl.LinkByName(ifname); err == nil {
		return Attached{}, fmt.Errorf("%s already exists in netns %s: %w", ifname, t.path, ErrIfnameTaken)
	} else if !gone(err) {
		return Attached{}, fmt.Errorf("look up %s in netns %s: %w", ifname, t.path, err)
	}

	// 3. The service bridge.
	if err := sys.step(ctx, stepBridge); err != nil {
		return Attached{}, err
	}
	br, created, _, err := sys.ensureBridge(s.Service, s.gateways(), s.MTU)
	if created {
		undo.push("create bridge "+brName, func() error { return sys.delLink(br) })
	}
	if err != nil {
		return Attached{}, err
	}

	// 4+5. The veth pair. By default the container end is created inside
	// the namespace under its final name, in the same request as the host
	// end (VETH_INFO_PEER carries IFLA_NET_NS_FD and IFLA_IFNAME): it never
	// exists in the host or under another name, and no link ever changes
	// namespace. Moving a link between namespaces costs the kernel an RCU
	// grace period under the rtnl lock (15-25 ms here, most of an attach);
	// creating it in place costs none. sys.movePeer selects the other form:
	// peer created in the host under a temporary name, then moved and renamed
	// in one request (moveRename).
	if err := sys.step(ctx, stepVeth); err != nil {
		return Attached{}, err
	}
	la := netlink.NewLinkAttrs()
	la.Name, la.MTU = vethName, s.MTU // the alias is set in step 8
	veth := &netlink.Veth{LinkAttrs: la, PeerName: ifname, PeerTxQLen: -1, PeerNamespace: netlink.NsFd(t.fd)}
	tmp := ""
	if sys.movePeer {
		var rnd [4]byte
		rand.Read(rnd[:])
		tmp = PeerPrefix + hex.EncodeToString(rnd[:])
		veth.PeerName, veth.PeerNamespace = tmp, nil
	}
	if err := sys.nl.LinkAdd(veth); err != nil {
		if errors.Is(err, unix.EEXIST) {
			if _, lerr := sys.nl.LinkByName(vethName); lerr == nil {
				return Attached{}, fmt.Errorf("create veth %s: a link of that name exists (detach or adopt container %s first): %w", vethName, s.Container, ErrExists)
			}
			if tmp == "" {
				return Attached{}, fmt.Errorf("create veth %s: %s appeared in netns %s meanwhile: %w", vethName, ifname, t.path, ErrIfnameTaken)
			}
		}
		return Attached{}, fmt.Errorf("create veth %s with peer %s: %w", vethName, veth.PeerName, err)
	}
	host := netlink.Link(veth) // LinkAdd looked up its index
	if veth.Index == 0 {
		// Created but not found: delete by name, best effort.
		undo.push("create veth "+vethName, func() error { return sys.delLinkByName(vethName) })
		return Attached{}, fmt.Errorf("look up new veth %s: not found", vethName)
	}
	undo.push("create veth "+vethName, func() error { return sys.delLink(host) }) // takes the peer along, wherever it is
	if tmp != "" {
		if err := sys.step(ctx, stepMove); err != nil {
			return Attached{}, err
		}
		peer, err := sys.nl.LinkByName(tmp)
		if err != nil {
			return Attached{}, fmt.Errorf("look up veth peer %s: %w", tmp, err)
		}
		if err := sys.raw.moveRename(peer.Attrs().Index, t.fd, ifname); err != nil {
			if errors.Is(err, unix.EEXIST) {
				err = fmt.Errorf("%s appeared in netns %s meanwhile: %w", ifname, t.path, ErrIfnameTaken)
			}
			return Attached{}, fmt.Errorf("move veth peer %s into netns %s as %s: %w", tmp, t.path, ifname, err)
		}
	}

	// 6. Inside the namespace. Address and routes go with the link if a
	// later step fails; lo is put back down if it was brought up.
	inner, err := t.nl.LinkByName(ifname)
	if err != nil {
		return Attached{}, fmt.Errorf("look up %s in netns %s: %w", ifname, t.path, err)
	}
	if _, err := sys.ensureContainerSide(ctx, t, s, inner, true, &undo); err != nil {
		return Attached{}, err
	}

	// 7-9. The host route, the host end, forwarding.
	if err := m.finishHostSide(ctx, sys, s, host, br, &undo); err != nil {
		return Attached{}, err
	}
	return Attached{Bridge: brName, HostVeth: vethName, NetnsID: t.id}, nil
}

// delLink deletes link; gone is success.
func (sys *system) delLink(l netlink.Link) error {
	if err := sys.nl.LinkDel(l); err != nil && !gone(err) {
		return fmt.Errorf("delete link %s: %w", l.Attrs().Name, err)
	}
	return nil
}

// delLinkByName deletes the link name; gone is success.
func (sys *system) delLinkByName(name string) error {
	l, err := sys.nl.LinkByName(name)
	if err != nil {
		if gone(err) {
			return nil
		}
		return fmt.Errorf("look up link %s: %w", name, err)
	}
	return sys.delLink(l)
}

func (m *Manager) detach(ctx context.Context, s Spec) error {
	if err := s.validateNames(); err != nil {
		return fmt.Errorf("detach: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("detach %s: %w", s.Container, err)
	}
	sys, release, err := m.acquire()
	if err != nil {
		return err
	}
	defer release()
	brName, vethName := BridgeName(s.Service), VethName(s.Container)
	// The veth goes without the service's lock, batched with the other
	// detaches under way (delVeth): deleting links costs the kernel RCU
	// grace periods, which one batch pays once. The route's and the
	// bridge's removal, which must not race an attach to the service, take
	// the lock.
	if err := sys.delVeth(vethName); err != nil {
		return fmt.Errorf("detach %s from %s: %w", s.Container, brName, err)
	}
	unlock := sys.locks.lock(brName)
	defer unlock()
	if s.Address.IsValid() {
		// Routes of ours to this bridge only; the bridge's removal below
		// would take them along, but the bridge may stay.
		br, err := sys.nl.LinkByName(brName)
		switch {
		case err == nil:
			for _, a := range s.addrs() {
				dst := netip.PrefixFrom(a.addr.Addr(), a.addr.Addr().BitLen())
				if err := sys.delHostRoute(dst, br.Attrs().Index); err != nil {
					return fmt.Errorf("detach %s from %s: %w", s.Container, brName, err)
				}
			}
		case !gone(err):
			return fmt.Errorf("detach %s: look up bridge %s: %w", s.Container, brName, err)
		}
	}
	removed := false
	if sys.forgetPort(brName, s.Container) == 0 && !m.keep.has(brName) {
		if removed, err = m.removeBridgeIfEmptyLocked(sys, brName); err != nil {
			return fmt.Errorf("detach %s from %s: %w", s.Container, brName, err)
		}
	}
	m.log.Info("detached", "container", s.Container, "service", s.Service, "veth", vethName, "bridge", brName, "bridge_removed", removed)
	return nil
}

func (m *Manager) removeBridgeIfEmpty(name string) (bool, error) {
	if !strings.HasPrefix(name, BridgePrefix) {
		return false, fmt.Errorf("remove bridge %q: not a zlmesh bridge name (%s*): %w", name, BridgePrefix, ErrInvalid)
	}
	sys, release, err := m.acquire()
	if err != nil {
		return false, err
	}
	defer release()
	unlock := sys.locks.lock(name)
	defer unlock()
	return m.removeBridgeIfEmptyLocked(sys, name)
}

func (m *Manager) removeBridgeIfEmptyLocked(sys *system, name string) (bool, error) {
	br, err := sys.nl.LinkByName(name)
	if err != nil {
		if gone(err) {
			return false, nil
		}
		return false, fmt.Errorf("look up bridge %s: %w", name, err)
	}
	if br.Type() != "bridge" {
		return false, fmt.Errorf("remove bridge %s: link is a %s: %w", name, br.Type(), ErrInvalid)
	}
	ports, err := sys.raw.ports(br.Attrs().Index)
	if err != nil {
		return false, fmt.Errorf("list ports of bridge %s: %w", name, err)
	}
	if len(ports) > 0 {
		return false, nil
	}
	if err := sys.delLink(br); err != nil {
		return false, err
	}
	m.log.Info("bridge removed", "bridge", name)
	return true, nil
}

func (m *Manager) removeLink(name string) error {
	if !ownedName(name) {
		return fmt.Errorf("remove link %q: not a zlmesh link name (%s*, %s*, %s*): %w", name, BridgePrefix, VethPrefix, PeerPrefix, ErrInvalid)
	}
	sys, release, err := m.acquire()
	if err != nil {
		return err
	}
	defer release()
	if strings.HasPrefix(name, BridgePrefix) {
		unlock := sys.locks.lock(name)
		defer unlock()
	}
	if err := sys.delLinkByName(name); err != nil {
		return fmt.Errorf("remove link: %w", err)
	}
	m.log.Info("link removed", "link", name)
	return nil
}

func (m *Manager) alive(s Spec, id NetnsID) (bool, error) {
	if s.HostPeer != "" {
		return m.aliveHostPeer(s)
	}
	if id.IsZero() {
		return false, fmt.Errorf("alive %s: netns id is zero: %w", s.Container, ErrInvalid)
	}
	if err := s.validateNamespace(); err != nil {
		return false, fmt.Errorf("alive: %w", err)
	}
	now, ok, err := statNetns(s.nsPath())
	if err != nil {
		return false, fmt.Errorf("alive %s: %w", s.Container, err)
	}
	return ok && now == id, nil
}

func (m *Manager) readdress(ctx context.Context, s Spec, newAddr, newAddr6 netip.Prefix) (err error) {
	if s.HostPeer != "" {
		return fmt.Errorf("readdress %s: its interface was moved by its runtime, into a namespace the node was not given: %w", s.Container, ErrUnsupported)
	}
	if err := s.validate(); err != nil {
		return fmt.Errorf("readdress: %w", err)
	}
	moved := s
	moved.Address, moved.Address6 = newAddr, newAddr6
	if s.Address6.IsValid() != newAddr6.IsValid() {
		return fmt.Errorf("readdress %s: address6 %s to %s: give a new IPv6 address exactly when there is an old one: %w", s.Container, s.Address6, newAddr6, ErrInvalid)
	}
	if err := moved.validate(); err != nil {
		return fmt.Errorf("readdress: %w", err)
	}
	sys, release, err := m.acquire()
	if err != nil {
		return err
	}
	defer release()
	t, err := sys.openTarget(s)
	if err != nil {
		return fmt.Errorf("readdress %s: %w", s.Container, err)
	}
	defer t.close()
	brName, ifname := BridgeName(s.Service), s.ifname()
	unlock := sys.locks.lock(brName)
	defer unlock()
	defer func() {
		if err != nil {
			err = fmt.Errorf("readdress %s from %s to %s: %w", s.Container, s.Address, newAddr, err)
		}
	}()
	if err := ctx.Err(); err != nil {
		return err
	}
	br, err := sys.nl.LinkByName(brName)
	if err != nil {
		if gone(err) {
			err = fmt.Errorf("bridge %s is missing (adopt first): %w", brName, ErrMismatch)
		}
		return err
	}
	inner, err := t.nl.LinkByName(ifname)
	if err != nil {
		if gone(err) {
			err = fmt.Errorf("%s is missing in netns %s (adopt first): %w", ifname, t.path, ErrMismatch)
		}
		return err
	}

	// 1. The new host routes.
	for _, a := range moved.addrs() {
		if _, _, err := sys.ensureHostRoute(a.addr, br); err != nil {
			return err
		}
	}
	// 2. The container.
	if _, err := sys.ensureContainerSide(ctx, t, moved, inner, false, nil); err != nil {
		return err
	}
	// 3. The old host routes.
	for i, a := range s.addrs() {
		if a.addr != moved.addrs()[i].addr {
			if err := sys.delHostRoute(a.addr, br.Attrs().Index); err != nil {
				return err
			}
		}
	}
	m.log.Info("readdressed", "container", s.Container, "service", s.Service, "from", s.Address, "to", newAddr, "from6", s.Address6, "to6", newAddr6)
	return nil
}

func (m *Manager) adopt(ctx context.Context, s Spec) (_ Attached, err error) {
	if s.HostPeer != "" {
		return m.adoptHostPeer(ctx, s)
	}
	if err := s.validate(); err != nil {
		return Attached{}, fmt.Errorf("adopt: %w", err)
	}
	sys, release, err := m.acquire()
	if err != nil {
		return Attached{}, err
	}
	defer release()
	t, err := sys.openTarget(s)
	if err != nil {
		return Attached{}, fmt.Errorf("adopt %s: %w", s.Container, err)
	}
	defer t.close()
	brName, vethName, ifname := BridgeName(s.Service), VethName(s.Container), s.ifname()
	unlock := sys.locks.lock(brName)
	defer unlock()

	var repairs []string
	afresh := false // attachLocked's errors name the operation already
	attachAfresh := func(why string) (Attached, error) {
		afresh = true
		a, err := m.attachLocked(ctx, sys, s, t)
		if err != nil {
			return Attached{}, fmt.Errorf("adopt %s (%s): %w", s.Container, why, err)
		}
		sys.notePort(a.Bridge, s.Container)
		a.Repairs = append(repairs, why+": attached afresh")
		m.log.Warn("adopted", "container", s.Container, "service", s.Service, "repairs", a.Repairs)
		return a, nil
	}
	defer func() {
		if err != nil && !afresh {
			err = fmt.Errorf("adopt %s on %s: %w", s.Container, brName, err)
		}
	}()

	// The bridge.
	br, created, fixed, err := sys.ensureBridge(s.Service, s.gateways(), s.MTU)
	if err != nil {
		return Attached{}, err
	}
	if created {
		repairs = append(repairs, fmt.Sprintf("bridge %s was missing: created", brName))
	}
	repairs = append(repairs, fixed...)

	// The host veth and its peer.
	host, err := sys.nl.LinkByName(vethName)
	if gone(err) {
		return attachAfresh(fmt.Sprintf("host veth %s was missing", vethName))
	}
	if err != nil {
		return Attached{}, fmt.Errorf("look up %s: %w", vethName, err)
	}
	if host.Type() != "veth" {
		return Attached{}, fmt.Errorf("link %s is a %s, not a veth: %w", vethName, host.Type(), ErrMismatch)
	}
	inner, err := t.nl.LinkByName(ifname)
	if gone(err) {
		if err := sys.delLink(host); err != nil {
			return Attached{}, err
		}
		return attachAfresh(fmt.Sprintf("host veth %s led to another namespace, %s was missing in %s", vethName, ifname, t.path))
	}
	if err != nil {
		return Attached{}, fmt.Errorf("look up %s in netns %s: %w", ifname, t.path, err)
	}
	if inner.Type() != "veth" || inner.Attrs().ParentIndex != host.Attrs().Index || host.Attrs().ParentIndex != inner.Attrs().Index {
		return Attached{}, fmt.Errorf("%s in netns %s is not the peer of host veth %s: %w", ifname, t.path, vethName, ErrMismatch)
	}

	// The same steps as an attach, reading first.
	fixed, err = sys.ensureContainerSide(ctx, t, s, inner, false, nil)
	repairs = append(repairs, fixed...)
	if err != nil {
		return Attached{}, err
	}
	for _, a := range s.addrs() {
		change, _, err := sys.ensureHostRoute(a.addr, br)
		if err != nil {
			return Attached{}, err
		}
		if change != "" {
			repairs = append(repairs, change)
		}
	}
	fixed, err = sys.ensureHostEnd(host, br, s, false)
	repairs = append(repairs, fixed...)
	if err != nil {
		return Attached{}, err
	}
	if err := m.forwarding(sys, s); err != nil {
		return Attached{}, err
	}
	a := Attached{Bridge: brName, HostVeth: vethName, NetnsID: t.id, Repairs: repairs}
	sys.notePort(brName, s.Container)
	if len(repairs) > 0 {
		m.log.Warn("adopted", "container", s.Container, "service", s.Service, "repairs", repairs)
	} else {
		m.log.Info("adopted", "container", s.Container, "service", s.Service)
	}
	return a, nil
}

func (m *Manager) inventory() (Inventory, error) {
	sys, release, err := m.acquire()
	if err != nil {
		return Inventory{}, err
	}
	defer release()
	links, err := retryDump(sys.nl.LinkList)
	if err != nil {
		return Inventory{}, fmt.Errorf("inventory: list links: %w", err)
	}
	addrs, err := retryDump(func() ([]netlink.Addr, error) { return sys.nl.AddrList(nil, netlink.FAMILY_ALL) })
	if err != nil {
		return Inventory{}, fmt.Errorf("inventory: list addresses: %w", err)
	}
	names := map[int]string{}
	var inv Inventory
	var brIndex []int // index of each entry of inv.Bridges
	for _, l := range links {
		a := l.Attrs()
		names[a.Index] = a.Name
		if strings.HasPrefix(a.Name, BridgePrefix) && l.Type() == "bridge" {
			b := BridgeInfo{Name: a.Name, Up: a.Flags&net.FlagUp != 0}
			if strings.HasPrefix(a.Alias, serviceAliasPrefix) {
				b.Service = strings.TrimPrefix(a.Alias, serviceAliasPrefix)
			}
			inv.Bridges = append(inv.Bridges, b)
			brIndex = append(brIndex, a.Index)
		}
	}
	bridges := map[int]*BridgeInfo{} // pointers into the now complete slice
	for i, idx := range brIndex {
		bridges[idx] = &inv.Bridges[i]
	}
	for _, l := range links {
		a := l.Attrs()
		if b := bridges[a.MasterIndex]; b != nil && a.MasterIndex != 0 {
			b.Ports = append(b.Ports, a.Name)
		}
		stray := strings.HasPrefix(a.Name, PeerPrefix)
		if (strings.HasPrefix(a.Name, VethPrefix) || stray) && l.Type() == "veth" {
			v := VethInfo{Name: a.Name, Up: a.Flags&net.FlagUp != 0, Stray: stray}
			if strings.HasPrefix(a.Alias, containerAliasPrefix) {
				v.Container = strings.TrimPrefix(a.Alias, containerAliasPrefix)
			}
			if a.MasterIndex != 0 {
				v.Master = names[a.MasterIndex]
			}
			inv.Veths = append(inv.Veths, v)
		}
	}
	for _, a := range addrs {
		if b := bridges[a.LinkIndex]; b != nil {
			b.Addrs = append(b.Addrs, fromNLAddr(a))
		}
	}
	if inv.Routes, err = sys.hostRoutes(names); err != nil {
		return Inventory{}, fmt.Errorf("inventory: %w", err)
	}
	for i := range inv.Bridges {
		slices.Sort(inv.Bridges[i].Ports)
	}
	slices.SortFunc(inv.Bridges, func(a, b BridgeInfo) int { return strings.Compare(a.Name, b.Name) })
	slices.SortFunc(inv.Veths, func(a, b VethInfo) int { return strings.Compare(a.Name, b.Name) })
	return inv, nil
}
