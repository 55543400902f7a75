package bridge

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// The HostPeer form (Spec.HostPeer): the veth's container end is made in
// the host and left for the container's runtime (Docker) to move. It runs
// the same ensure-steps as the namespace form, minus the container side:
//
//  3. ensure the bridge (ensureBridge);
//  4. create the veth pair in the host, both ends with the MTU: the host end
//     VethName(Container), the peer HostPeer (ErrExists when either name
//     is taken);
//  7. the host routes of Address and Address6 (if any) to the bridge
//     (ensureHostRoute), which holds both gateways; the runtime puts the
//     addresses, the gateways' routes and the default routes into the
//     container (Docker: from the driver's CreateEndpoint and Join
//     answers);
//  8. the host end a port of the bridge, up, hairpin on (ensureHostEnd);
//  9. the forwarding switches.
//
// Each step is undone if a later one fails.

func (m *Manager) attachHostPeer(ctx context.Context, s Spec) (_ Attached, err error) {
	if err := s.validate(); err != nil {
		return Attached{}, fmt.Errorf("attach: %w", err)
	}
	sys, release, err := m.acquire()
	if err != nil {
		return Attached{}, err
	}
	defer release()
	brName, vethName := BridgeName(s.Service), VethName(s.Container)
	unlock := sys.locks.lock(brName)
	defer unlock()
	start := time.Now()
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

	// 4. The veth pair, both ends in the host.
	if err := sys.step(ctx, stepVeth); err != nil {
		return Attached{}, err
	}
	la := netlink.NewLinkAttrs()
	la.Name, la.MTU = vethName, s.MTU
	veth := &netlink.Veth{LinkAttrs: la, PeerName: s.HostPeer, PeerTxQLen: -1}
	if err := sys.nl.LinkAdd(veth); err != nil {
		if errors.Is(err, unix.EEXIST) {
			return Attached{}, fmt.Errorf("create veth %s with peer %s: a link of one of these names exists (detach or adopt container %s first): %w", vethName, s.HostPeer, s.Container, ErrExists)
		}
		return Attached{}, fmt.Errorf("create veth %s with peer %s: %w", vethName, s.HostPeer, err)
	}
	host := netlink.Link(veth)
	if veth.Index == 0 {
		undo.push("create veth "+vethName, func() error { return sys.delLinkByName(vethName) })
		return Attached{}, fmt.Errorf("look up new veth %s: not found", vethName)
	}
	undo.push("create veth "+vethName, func() error { return sys.delLink(host) }) // the peer goes with it

	// 7-9. The host route, the host end, forwarding.
	if err := m.finishHostSide(ctx, sys, s, host, br, &undo); err != nil {
		return Attached{}, err
	}
	sys.notePort(brName, s.Container)
	m.log.Info("attached", "container", s.Container, "service", s.Service, "bridge", brName,
		"veth", vethName, "host_peer", s.HostPeer, "addr", s.Address, "gateway", s.Gateway, "took", time.Since(start))
	return Attached{Bridge: brName, HostVeth: vethName}, nil
}

// aliveHostPeer: the host veth exists. It dies with its peer, so with the
// container's namespace once the runtime moved the peer there.
func (m *Manager) aliveHostPeer(s Spec) (bool, error) {
	if err := s.validateNames(); err != nil {
		return false, fmt.Errorf("alive: %w", err)
	}
	sys, release, err := m.acquire()
	if err != nil {
		return false, err
	}
	defer release()
	if _, err := sys.nl.LinkByName(VethName(s.Container)); err != nil {
		if gone(err) {
			return false, nil
		}
		return false, fmt.Errorf("alive %s: %w", s.Container, err)
	}
	return true, nil
}

// adoptHostPeer repairs the host side of a HostPeer attachment: the bridge,
// the host route and the host end. A missing host veth is ErrNoNamespace
// (its container is gone; nothing can be re-made for it).
func (m *Manager) adoptHostPeer(ctx context.Context, s Spec) (Attached, error) {
	if err := s.validate(); err != nil {
		return Attached{}, fmt.Errorf("adopt: %w", err)
	}
	sys, release, err := m.acquire()
	if err != nil {
		return Attached{}, err
	}
	defer release()
	brName, vethName := BridgeName(s.Service), VethName(s.Container)
	unlock := sys.locks.lock(brName)
	defer unlock()
	if err := ctx.Err(); err != nil {
		return Attached{}, fmt.Errorf("adopt %s: %w", s.Container, err)
	}
	host, err := sys.nl.LinkByName(vethName)
	if err != nil {
		if gone(err) {
			return Attached{}, fmt.Errorf("adopt %s: host veth %s is gone, and its container's interface with it: %w", s.Container, vethName, ErrNoNamespace)
		}
		return Attached{}, fmt.Errorf("adopt %s: look up %s: %w", s.Container, vethName, err)
	}
	br, _, repairs, err := sys.ensureBridge(s.Service, s.gateways(), s.MTU)
	if err != nil {
		return Attached{}, fmt.Errorf("adopt %s: %w", s.Container, err)
	}
	for _, a := range s.addrs() {
		fix, _, err := sys.ensureHostRoute(a.addr, br)
		if err != nil {
			return Attached{}, fmt.Errorf("adopt %s: %w", s.Container, err)
		}
		if fix != "" {
			repairs = append(repairs, fix)
		}
	}
	more, err := sys.ensureHostEnd(host, br, s, false)
	repairs = append(repairs, more...)
	if err != nil {
		return Attached{}, fmt.Errorf("adopt %s: %w", s.Container, err)
	}
	if err := m.forwarding(sys, s); err != nil {
		return Attached{}, fmt.Errorf("adopt %s: %w", s.Container, err)
	}
	sys.notePort(brName, s.Container)
	return Attached{Bridge: brName, HostVeth: vethName, Repairs: repairs}, nil
}
