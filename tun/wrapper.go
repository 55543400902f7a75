package tun

import (
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
)

// Direction of a packet, named relative to the network.
type Direction int

const (
	// Outbound packets come from the OS and go to WireGuard. Their hooks
	// run inside Wrapper.Read.
	Outbound Direction = iota
	// Inbound packets come from WireGuard and go to the OS. Their hooks
	// run inside Wrapper.Write.
	Inbound

	numDirections = 2
)

func (d Direction) String() string {
	switch d {
	case Outbound:
		return "outbound"
	case Inbound:
		return "inbound"
	}
	return fmt.Sprintf("Direction(%d)", int(d))
}

// Verdict is what a hook decides about a packet.
type Verdict int

const (
	// Accept passes the packet to the next hook, and after the last one on.
	Accept Verdict = iota
	// Drop discards the packet.
	Drop
	// Consumed means the hook took the packet (and may have injected an
	// answer); it goes no further.
	Consumed
)

func (v Verdict) String() string {
	switch v {
	case Accept:
		return "accept"
	case Drop:
		return "drop"
	case Consumed:
		return "consumed"
	}
	return fmt.Sprintf("Verdict(%d)", int(v))
}

// HookFunc inspects or answers one packet. It runs on the packet path: it
// must not block for long and must not keep p (see Packet). A hook may call
// Wrapper.InjectInbound. Hooks of one direction may run concurrently with
// each other for different packets (Write is called by one goroutine per
// WireGuard peer), so a hook guards its own state. A verdict other than
// Accept, Drop or Consumed counts as Drop.
type HookFunc func(p *Packet) Verdict

// Counters are the packet counts of one direction since the Wrapper was
// made.
type Counters struct {
	// Seen counts packets that entered the direction: read from the
	// device (Outbound) or given to Write (Inbound). Injected packets are
	// not in it.
	Seen uint64
	// Dropped and Consumed count the packets hooks removed.
	Dropped  uint64
	Consumed uint64
	// Injected counts packets injected in this direction
	// (InjectInbound: Inbound).
	Injected uint64
}

// Wrapper is a Device around another one that runs hooks on the packet path:
// the outbound hooks on every packet Read returns, the inbound hooks on
// every packet given to Write. It implements the whole wireguard-go
// tun.Device interface and is what the WireGuard device is given.
//
// The packet path takes no lock: the hooks of each direction are an
// immutable, sorted slice behind an atomic pointer, replaced (copy on write)
// by AddHook and remove. When a direction has no hook, its packets are not
// even parsed.
type Wrapper struct {
	dev Device

	hooks  [numDirections]atomic.Pointer[[]hook]
	hookMu sync.Mutex // serializes AddHook and remove; guards lastID
	lastID uint64

	stats [numDirections]dirStats
	_     [64]byte // keep the reader's scratch off the inbound counters

	// readScratch serves Read, which has one caller in practice
	// (wireguard-go's RoutineReadFromTUN): taking it is one CAS on
	// readBusy, cheaper than the pool. A concurrent Read falls back to the
	// pool.
	readBusy    atomic.Bool
	readScratch scratch

	scratch sync.Pool // *scratch: one per Write batch in flight
	inject  sync.Pool // *injectBuf: one per InjectInbound in flight
}

type hook struct {
	id    uint64
	order int
	name  string
	fn    HookFunc
}

// dirStats is padded to its own cache lines: Read updates one direction,
// the WireGuard receive goroutines the other.
type dirStats struct {
	seen, dropped, consumed, injected atomic.Uint64
	_                                 [128 - 32]byte
}

// scratch is the per-batch state of the hot path, reused (readScratch or
// the pool) so that a batch allocates nothing.
type scratch struct {
	pkt  Packet
	keep [][]byte // Write: the packets that go on
}

// injectBuf holds one injected packet with headroom in front of it.
type injectBuf struct {
	bufs [1][]byte
	data []byte
}

// injectHeadroom is the space InjectInbound leaves in front of a packet.
// Linux TUN with offloads writes a virtio-net header (10 bytes) there;
// 16 is what wireguard-go itself passes to Write
// (device.MessageTransportOffsetContent).
const injectHeadroom = 16

// NewWrapper wraps dev. The Wrapper owns dev from now on: closing the
// Wrapper closes it.
func NewWrapper(dev Device) *Wrapper {
	return &Wrapper{
		dev:     dev,
		scratch: sync.Pool{New: func() any { return new(scratch) }},
		inject:  sync.Pool{New: func() any { return new(injectBuf) }},
	}
}

// Unwrap returns the wrapped device.
func (w *Wrapper) Unwrap() Device { return w.dev }

// AddHook adds a hook for one direction and returns the function that
// removes it. Hooks run in ascending order; hooks of equal order run in the
// order they were added. Safe to call at any time, also while packets flow
// and from inside a hook: batches that already started run with the hooks
// they started with, so a hook may still be called briefly after its
// remove returned. remove may be called more than once. AddHook panics on
// an invalid direction or a nil fn.
func (w *Wrapper) AddHook(dir Direction, order int, name string, fn HookFunc) (remove func()) {
	if dir != Outbound && dir != Inbound {
		panic(fmt.Sprintf("tun: AddHook %q: invalid direction %d", name, int(dir)))
	}
	if fn == nil {
		panic(fmt.Sprintf("tun: AddHook %q: nil hook", name))
	}
	w.hookMu.Lock()
	defer w.hookMu.Unlock()
	w.lastID++
	h := hook{id: w.lastID, order: order, name: name, fn: fn}
	var old []hook
	if p := w.hooks[dir].Load(); p != nil {
		old = *p
	}
	at := len(old)
	for i := range old {
		if old[i].order > order {
			at = i
			break
		}
	}
	hooks := make([]hook, 0, len(old)+1)
	hooks = append(hooks, old[:at]...)
	hooks = append(hooks, h)
	hooks = append(hooks, old[at:]...)
	w.hooks[dir].Store(&hooks)
	return func() { w.removeHook(dir, h.id) }
}

func (w *Wrapper) removeHook(dir Direction, id uint64) {
	w.hookMu.Lock()
	defer w.hookMu.Unlock()
	p := w.hooks[dir].Load()
	if p == nil {
		return
	}
	hooks := make([]hook, 0, len(*p))
	for _, h := range *p {
		if h.id != id {
			hooks = append(hooks, h)
		}
	}
	switch {
	case len(hooks) == len(*p):
		// Already removed.
	case len(hooks) == 0:
		w.hooks[dir].Store(nil)
	default:
		w.hooks[dir].Store(&hooks)
	}
}

// HookNames returns the names of the hooks of dir in the order they run.
func (w *Wrapper) HookNames(dir Direction) []string {
	if dir != Outbound && dir != Inbound {
		return nil
	}
	p := w.hooks[dir].Load()
	if p == nil {
		return nil
	}
	names := make([]string, len(*p))
	for i, h := range *p {
		names[i] = h.name
	}
	return names
}

// Counters returns the packet counts of dir. Cheap (four atomic loads);
// the four values are not one snapshot.
func (w *Wrapper) Counters(dir Direction) Counters {
	if dir != Outbound && dir != Inbound {
		return Counters{}
	}
	s := &w.stats[dir]
	return Counters{
		Seen:     s.seen.Load(),
		Dropped:  s.dropped.Load(),
		Consumed: s.consumed.Load(),
		Injected: s.injected.Load(),
	}
}

// runHooks runs hooks on p until one does not accept.
func runHooks(hooks []hook, p *Packet) Verdict {
	for i := range hooks {
		switch v := hooks[i].fn(p); v {
		case Accept:
		case Consumed:
			return Consumed
		default:
			return Drop
		}
	}
	return Accept
}

// Read reads a batch from the device (see tun.Device.Read) and runs the
// outbound hooks on each packet. The packets hooks drop or consume are
// removed: the ones that go on are moved to the front of bufs and sizes, in
// order, and Read returns their number. The move copies packet bytes
// between the caller's buffers and never swaps the slices in bufs:
// wireguard-go keeps each bufs[i] paired with its own element and would
// mix them up. If hooks remove every packet of a batch, Read reads again
// instead of returning 0, unless the device also returned an error, which
// Read returns with the packets that remain (maybe none).
//
// Read blocks as long as the device's Read does. Concurrent calls are as
// safe as the device makes them.
func (w *Wrapper) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	for {
		n, err := w.dev.Read(bufs, sizes, offset)
		if n <= 0 {
			return n, err
		}
		w.stats[Outbound].seen.Add(uint64(n))
		hp := w.hooks[Outbound].Load()
		if hp == nil {
			return n, err
		}
		kept := w.filterRead(*hp, bufs, sizes[:n], offset)
		if kept > 0 || err != nil {
			return kept, err
		}
	}
}

// filterRead runs hooks on the first len(sizes) packets of bufs and
// compacts the ones accepted to the front; it returns their number.
func (w *Wrapper) filterRead(hooks []hook, bufs [][]byte, sizes []int, offset int) int {
	s := &w.readScratch
	if !w.readBusy.CompareAndSwap(false, true) {
		s = w.scratch.Get().(*scratch)
	}
	p := &s.pkt
	var dropped, consumed uint64
	k := 0
	for i, size := range sizes {
		p.Decode(bufs[i][offset : offset+size : offset+size])
		switch runHooks(hooks, p) {
		case Accept:
			if k != i {
				if len(bufs[k])-offset >= size {
					copy(bufs[k][offset:], bufs[i][offset:offset+size])
				} else {
					// Only for a caller whose buffers differ in
					// size, which wireguard-go's never do.
					bufs[k], bufs[i] = bufs[i], bufs[k]
				}
				sizes[k] = size
			}
			k++
		case Consumed:
			consumed++
		default:
			dropped++
		}
	}
	*p = Packet{} // do not keep the caller's buffers alive
	if s == &w.readScratch {
		w.readBusy.Store(false)
	} else {
		w.scratch.Put(s)
	}
	w.count(Outbound, dropped, consumed)
	return k
}

func (w *Wrapper) count(dir Direction, dropped, consumed uint64) {
	if dropped > 0 {
		w.stats[dir].dropped.Add(dropped)
	}
	if consumed > 0 {
		w.stats[dir].consumed.Add(consumed)
	}
}

// Write runs the inbound hooks on each packet (bufs[i][offset:]) and writes
// the ones they accept to the device in one call, with the same offset. It
// reports len(bufs) on success, also when hooks removed packets or all of
// them (then the device is not called). On error it returns 0 and the
// error; some packets may have been written. Write does not modify bufs
// itself; the device may write into the headroom before offset (Linux TUN
// with offloads does) and coalesce packets in place.
//
// Write may be called concurrently (wireguard-go calls it from one
// goroutine per peer); the device serializes its own writes.
func (w *Wrapper) Write(bufs [][]byte, offset int) (int, error) {
	w.stats[Inbound].seen.Add(uint64(len(bufs)))
	hp := w.hooks[Inbound].Load()
	if hp == nil {
		if _, err := w.dev.Write(bufs, offset); err != nil {
			return 0, err
		}
		return len(bufs), nil
	}
	hooks := *hp
	s := w.scratch.Get().(*scratch)
	p := &s.pkt
	keep := s.keep[:0]
	var dropped, consumed uint64
	for _, b := range bufs {
		p.Decode(b[offset:])
		switch runHooks(hooks, p) {
		case Accept:
			keep = append(keep, b)
		case Consumed:
			consumed++
		default:
			dropped++
		}
	}
	*p = Packet{}
	w.count(Inbound, dropped, consumed)
	var err error
	switch {
	case len(keep) == len(bufs):
		_, err = w.dev.Write(bufs, offset)
	case len(keep) > 0:
		_, err = w.dev.Write(keep, offset)
	}
	clear(keep)
	s.keep = keep[:0]
	w.scratch.Put(s)
	if err != nil {
		return 0, err
	}
	return len(bufs), nil
}

// oneWriter is a device that writes a single packet more cheaply than
// Device.Write of a batch of one (the Linux kernel TUN). writeOne writes
// buf[offset:] and may overwrite the offset bytes in front of it; it has
// Write's concurrency.
type oneWriter interface {
	writeOne(buf []byte, offset int) error
}

// errBadPacket is wrapped by InjectInbound for what is not an IP packet.
var errBadPacket = errors.New("not an IP packet")

// InjectInbound writes one whole IP packet towards the OS through the
// device, bypassing the inbound hooks. It copies pkt (with the headroom the
// device needs in front of it) before writing, so the caller keeps pkt and
// may reuse it at once. It may be called from any goroutine, concurrently
// with Read, Write and itself, and from inside a hook of either direction.
// It returns an error for an empty, non-IP or over-long (more than 65535
// bytes) packet, and the device's error (os.ErrClosed after Close).
func (w *Wrapper) InjectInbound(pkt []byte) error {
	if err := checkInject(pkt); err != nil {
		return fmt.Errorf("inject inbound packet of %d bytes: %w", len(pkt), err)
	}
	ib := w.inject.Get().(*injectBuf)
	need := injectHeadroom + len(pkt)
	if cap(ib.data) < need {
		ib.data = make([]byte, need, max(need, 2048))
	}
	data := ib.data[:need]
	clear(data[:injectHeadroom])
	copy(data[injectHeadroom:], pkt)
	var err error
	if ow, ok := w.dev.(oneWriter); ok {
		err = ow.writeOne(data, injectHeadroom)
	} else {
		ib.bufs[0] = data
		_, err = w.dev.Write(ib.bufs[:], injectHeadroom)
		ib.bufs[0] = nil
	}
	w.inject.Put(ib)
	if err != nil {
		return fmt.Errorf("inject inbound packet of %d bytes: %w", len(pkt), err)
	}
	w.stats[Inbound].injected.Add(1)
	return nil
}

func checkInject(pkt []byte) error {
	switch {
	case len(pkt) == 0:
		return fmt.Errorf("empty: %w", errBadPacket)
	case len(pkt) > 0xffff:
		return errors.New("longer than 65535 bytes")
	case pkt[0]>>4 == 4 && len(pkt) >= ipv4HeaderLen:
	case pkt[0]>>4 == 6 && len(pkt) >= ipv6HeaderLen:
	default:
		return errBadPacket
	}
	return nil
}

// File returns the device's file (nil for devices without one).
func (w *Wrapper) File() *os.File { return w.dev.File() }

// MTU returns the device's MTU.
func (w *Wrapper) MTU() (int, error) { return w.dev.MTU() }

// Name returns the device's name.
func (w *Wrapper) Name() (string, error) { return w.dev.Name() }

// Events returns the device's event channel.
func (w *Wrapper) Events() <-chan Event { return w.dev.Events() }

// BatchSize returns the device's batch size.
func (w *Wrapper) BatchSize() int { return w.dev.BatchSize() }

// Close closes the device. A Read blocked in the device returns its error;
// Write and InjectInbound then fail with the device's error. Hooks stay
// registered but are no longer called.
func (w *Wrapper) Close() error { return w.dev.Close() }
