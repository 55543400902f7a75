package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/zlmesh/zlmesh/testbed"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// The baseline: a standalone wireguard-go beside zlmesh on every host
// (interface zlwg0, UDP 51821, 10.99.0.<host index>/24), configured
// statically with `wg` and `ip`. For a joining host the others are given its
// peer entry BEFORE the clock starts (a static configuration knows every
// key in advance); the clock then runs from starting wireguard-go on the
// new host (it daemonizes once its TUN exists), through its `wg set` and
// `ip` configuration, until every other host got an answer from its
// address. That is the floor under any join: process start, TUN, one
// handshake per peer.
const (
	staticIf   = "zlwg0"
	staticPort = 51821
)

type static struct {
	tb   *testbed.Testbed
	bin  string
	keys map[string]wgtypes.Key // host name → private key
}

func staticAddr(h *testbed.Host) string { return fmt.Sprintf("10.99.0.%d", h.Index) }

func wgEndpoint(h *testbed.Host) string { return fmt.Sprintf("%s:%d", h.Underlay, staticPort) }

// newStatic starts the baseline on hosts, each peered with all the others.
func newStatic(ctx context.Context, tb *testbed.Testbed, bin string, hosts []*testbed.Host) (*static, error) {
	s := &static{tb: tb, bin: bin, keys: map[string]wgtypes.Key{}}
	for _, h := range hosts {
		if err := s.newKey(h); err != nil {
			return nil, err
		}
	}
	for _, h := range hosts {
		if _, err := h.Exec(ctx, "sh", "-c", s.upScript(h, hosts)); err != nil {
			return nil, fmt.Errorf("static wireguard-go on %s: %w", h, err)
		}
	}
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for _, h := range hosts {
		var others []*testbed.Host
		for _, o := range hosts {
			if o != h {
				others = append(others, o)
			}
		}
		if _, err := pingAllUntil(wctx, others, staticAddr(h), time.Now()); err != nil {
			return nil, fmt.Errorf("static wireguard-go mesh: %w", err)
		}
	}
	return s, nil
}

// newKey makes h's key and writes it to <h.Dir>/zlwg0.key (mode 0600),
// where `wg set … private-key` inside the host reads it.
func (s *static) newKey(h *testbed.Host) error {
	k, err := wgtypes.GeneratePrivateKey()
	if err != nil {
		return err
	}
	s.keys[h.Name] = k
	return os.WriteFile(s.keyFile(h), []byte(k.String()+"\n"), 0o600)
}

func (s *static) keyFile(h *testbed.Host) string { return filepath.Join(h.Dir, staticIf+".key") }

// upScript starts wireguard-go on h (in a session of its own, like the
// testbed's zlmesh) and configures it with peers.
func (s *static) upScript(h *testbed.Host, peers []*testbed.Host) string {
	var b strings.Builder
	fmt.Fprintf(&b, "set -e; setsid %s %s; wg set %s listen-port %d private-key %s",
		s.bin, staticIf, staticIf, staticPort, s.keyFile(h))
	for _, p := range peers {
		if p == h {
			continue
		}
		fmt.Fprintf(&b, " peer %s allowed-ips %s/32 endpoint %s", s.keys[p.Name].PublicKey(), staticAddr(p), wgEndpoint(p))
	}
	fmt.Fprintf(&b, "; ip addr add %s/24 dev %s; ip link set %s mtu 1420 up", staticAddr(h), staticIf, staticIf)
	return b.String()
}

// join measures the static join of the fresh host h (see the comment at
// the top).
func (s *static) join(ctx context.Context, h *testbed.Host, others []*testbed.Host, timeout time.Duration) (time.Duration, error) {
	if err := s.newKey(h); err != nil {
		return 0, err
	}
	for _, o := range others {
		if _, err := o.Exec(ctx, "wg", "set", staticIf, "peer", s.keys[h.Name].PublicKey().String(),
			"allowed-ips", staticAddr(h)+"/32", "endpoint", wgEndpoint(h)); err != nil {
			return 0, fmt.Errorf("add %s to %s: %w", h, o, err)
		}
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	begin := time.Now()
	if _, err := h.Exec(ctx, "sh", "-c", s.upScript(h, append([]*testbed.Host{h}, others...))); err != nil {
		return 0, fmt.Errorf("static wireguard-go on %s: %w", h, err)
	}
	got, err := pingAllUntil(ctx, others, staticAddr(h), begin)
	if err != nil {
		return 0, err
	}
	return maxOf(got), nil
}

// leave removes h from the baseline: its TUN (wireguard-go exits with it)
// and its peer entry on the others.
func (s *static) leave(ctx context.Context, h *testbed.Host) error {
	if _, err := h.Exec(ctx, "ip", "link", "del", staticIf); err != nil {
		return fmt.Errorf("remove %s from %s: %w", staticIf, h, err)
	}
	k, ok := s.keys[h.Name]
	if !ok {
		return nil
	}
	for _, o := range s.peersOf(h) {
		if _, err := o.Exec(ctx, "wg", "set", staticIf, "peer", k.PublicKey().String(), "remove"); err != nil {
			return fmt.Errorf("remove %s from %s: %w", h, o, err)
		}
	}
	delete(s.keys, h.Name)
	return nil
}

// peersOf returns the running hosts other than h (the baseline runs on
// the hosts whose zlmesh runs).
func (s *static) peersOf(h *testbed.Host) []*testbed.Host {
	var out []*testbed.Host
	for _, o := range s.tb.Hosts() {
		if _, ok := s.keys[o.Name]; ok && o != h && o.Running() {
			out = append(out, o)
		}
	}
	return out
}

func maxOf(d []time.Duration) time.Duration {
	m := d[0]
	for _, x := range d[1:] {
		m = max(m, x)
	}
	return m
}
