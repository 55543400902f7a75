//go:build linux

package bridge

// Deleting a veth costs the kernel RCU grace periods and an rcu_barrier, and
// the kernel runs those one deletion at a time: about 15-20 ms per veth
// whatever the number of callers. One RTM_DELLINK naming a link group
// deletes every link of the group in one unregister_netdevice_many, with one
// set of grace periods for all. The reaper gathers the veth deletions that
// Detach calls make at the same time into such a batch.

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"
)

// reapGroupBase is the top half of the link group numbers batches use
// ("zl"); the bottom half is random. A number is used only while a link dump
// less than reapVerifyEvery old showed no link carrying it.
const reapGroupBase = 0x7a6c0000

// rtextFilterSkipStats is RTEXT_FILTER_SKIP_STATS (linux/rtnetlink.h): leave
// the statistics out of a link dump. x/sys does not define it; kernels that
// do not know it ignore it.
const rtextFilterSkipStats = 1 << 3

// reapRequest is one veth to delete; err is valid once done is closed.
type reapRequest struct {
	name string
	err  error
	done chan struct{}
}

// delVeth deletes the host veth name (its peer goes with it), batched with
// the deletions other goroutines ask for at the same time. Gone is success.
func (sys *system) delVeth(name string) error {
	r := &reapRequest{name: name, done: make(chan struct{})}
	select {
	case sys.reap <- r:
	case <-sys.stopReap:
		return errClosed
	}
	<-r.done
	return r.err
}

// routineReap serves delVeth until stopReap is closed: it takes one request,
// then every other one already waiting, and deletes them as one batch. While
// a batch runs, the next one gathers.
func (sys *system) routineReap() {
	defer close(sys.reapDone)
	var lastEnd time.Time
	for {
		var batch []*reapRequest
		select {
		case r := <-sys.reap:
			batch = append(batch, r)
		case <-sys.stopReap:
			return
		}
		// While detaches stream in (the last batch ended moments ago),
		// wait a little for the others: a deletion holds the kernel's
		// rtnl lock for most of its time, so the callers behind it arrive
		// one by one, and each alone would pay the grace periods again.
		// A lone detach does not wait.
		linger := time.Duration(0)
		if time.Since(lastEnd) < reapStreaming {
			linger = reapLinger
		}
		timer := time.NewTimer(linger)
	gather:
		for {
			select {
			case r := <-sys.reap:
				batch = append(batch, r)
			case <-timer.C:
				break gather
			case <-sys.stopReap:
				timer.Stop()
				for _, r := range batch {
					r.err = errClosed
					close(r.done)
				}
				return
			}
		}
		sys.reapBatch(batch)
		lastEnd = time.Now()
	}
}

// reapLinger is how long a batch waits for more deletions while detaches
// stream in: a detach arriving more than reapStreaming after the previous
// batch ended is alone and goes at once.
const (
	reapLinger    = 2 * time.Millisecond
	reapStreaming = 50 * time.Millisecond
)

// reapBatch deletes the veths of batch and answers every request.
func (sys *system) reapBatch(batch []*reapRequest) {
	defer func() {
		for _, r := range batch {
			close(r.done)
		}
	}()
	if len(batch) == 1 {
		batch[0].err = sys.delLinkByName(batch[0].name)
		return
	}
	group, err := sys.batchGroup()
	if err != nil {
		sys.log.Warn("no free link group for a batch; deleting one by one", "err", err)
		for _, r := range batch {
			r.err = sys.delLinkByName(r.name)
		}
		return
	}
	var mine []*reapRequest
	for _, r := range batch {
		err := sys.raw.setGroup(r.name, group)
		switch {
		case err == nil:
			mine = append(mine, r)
		case gone(err):
		default:
			r.err = fmt.Errorf("delete link %s: set its group: %w", r.name, err)
		}
	}
	if len(mine) == 0 {
		return
	}
	if err := sys.raw.delGroup(group); err == nil || gone(err) {
		return
	}
	// Put ours back in the default group and delete them one by one.
	sys.reapVerified = time.Time{}
	for _, r := range mine {
		sys.raw.setGroup(r.name, 0)
		r.err = sys.delLinkByName(r.name)
	}
}

// reapVerifyEvery is how long a dump showing the batch group number free is
// trusted: a link someone else puts into that group (a random number among
// 65535 that no tool uses) within that time after the dump would go with the
// next batch. Verifying before every batch would cost a dump of every link
// in the host per batch.
const reapVerifyEvery = 2 * time.Second

// batchGroup returns the link group number for a batch: the one in use while
// a dump showed it free less than reapVerifyEvery ago, else a candidate a
// fresh dump shows free (up to three tries).
func (sys *system) batchGroup() (uint32, error) {
	if sys.reapInUse != 0 && time.Since(sys.reapVerified) < reapVerifyEvery {
		return sys.reapInUse, nil
	}
	candidate := sys.reapInUse
	for try := 0; try < 3; try++ {
		if candidate == 0 || try > 0 {
			candidate = sys.reapGroup()
		}
		holders, err := sys.raw.groupMembers(candidate)
		if err != nil {
			return 0, fmt.Errorf("list links of group %#x: %w", candidate, err)
		}
		if len(holders) == 0 {
			sys.reapInUse, sys.reapVerified = candidate, time.Now()
			return candidate, nil
		}
		sys.log.Warn("link group taken by other links; picking another", "group", candidate, "links", holders)
	}
	sys.reapInUse = 0
	return 0, errors.New("three link group numbers in a row are taken")
}

// randomReapGroup returns a link group number for a batch: reapGroupBase
// and 16 random bits, never 0.
func randomReapGroup() uint32 {
	var rnd [2]byte
	rand.Read(rnd[:])
	return reapGroupBase | uint32(binary.BigEndian.Uint16(rnd[:])|1)
}

// setGroup puts link name into link group group (IFLA_GROUP).
func (r *rawSocket) setGroup(name string, group uint32) error {
	req := r.request(unix.RTM_NEWLINK, unix.NLM_F_ACK)
	req.AddData(nl.NewIfInfomsg(unix.AF_UNSPEC))
	req.AddData(nl.NewRtAttr(unix.IFLA_IFNAME, nl.ZeroTerminated(name)))
	req.AddData(nl.NewRtAttr(unix.IFLA_GROUP, nl.Uint32Attr(group)))
	_, err := req.Execute(unix.NETLINK_ROUTE, 0)
	return err
}

// groupMembers lists the names of the links in group, from a link dump
// without statistics.
func (r *rawSocket) groupMembers(group uint32) ([]string, error) {
	return retryDump(func() ([]string, error) {
		req := r.request(unix.RTM_GETLINK, unix.NLM_F_DUMP)
		req.AddData(nl.NewIfInfomsg(unix.AF_UNSPEC))
		req.AddData(nl.NewRtAttr(unix.IFLA_EXT_MASK, nl.Uint32Attr(rtextFilterSkipStats)))
		msgs, err := req.Execute(unix.NETLINK_ROUTE, unix.RTM_NEWLINK)
		if err != nil {
			return nil, err
		}
		var names []string
		for _, m := range msgs {
			if len(m) < unix.SizeofIfInfomsg {
				return nil, errors.New("short link message")
			}
			attrs, err := nl.ParseRouteAttr(m[unix.SizeofIfInfomsg:])
			if err != nil {
				return nil, fmt.Errorf("parse link message: %w", err)
			}
			if g := findAttr(attrs, unix.IFLA_GROUP); len(g) >= 4 && nl.NativeEndian().Uint32(g) == group {
				names = append(names, unix.ByteSliceToString(findAttr(attrs, unix.IFLA_IFNAME)))
			}
		}
		return names, nil
	})
}

// delGroup deletes every link of group in one RTM_DELLINK (the kernel's
// rtnl_group_dellink): one unregister_netdevice_many for all of them.
func (r *rawSocket) delGroup(group uint32) error {
	req := r.request(unix.RTM_DELLINK, unix.NLM_F_ACK)
	req.AddData(nl.NewIfInfomsg(unix.AF_UNSPEC))
	req.AddData(nl.NewRtAttr(unix.IFLA_GROUP, nl.Uint32Attr(group)))
	_, err := req.Execute(unix.NETLINK_ROUTE, 0)
	return err
}
