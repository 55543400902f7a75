//go:build linux

package e2e

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/zlmesh/zlmesh/api"
	"github.com/zlmesh/zlmesh/testbed"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// A plain WireGuard client joins the mesh as a guest of h1: a namespace on
// the underlay runs a standalone wireguard-go (built from the module version
// zlmesh uses) configured only from the config `guest add` printed. It
// reaches containers on the two other hosts, resolves names through the
// mesh DNS, is reached by name from a container on another host, keeps
// working across a restart of h1, and is cut off by `guest rm`. zlmesh
// never writes the guest's private key, made there or not.
func TestGuests(t *testing.T) {
	tb := cluster(t, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	h1, h2, h3 := tb.Host("h1"), tb.Host("h2"), tb.Host("h3")
	wgBin, err := testbed.BuildWireGuardGo(ctx, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}

	// web1 on h2 (under that id, so it is web1.web.zl), a client on h3.
	webNS, err := tb.AddContainer(ctx, h2, "web1")
	if err != nil {
		t.Fatal(err)
	}
	web1, err := h2.Client().Attach(ctx, api.AttachRequest{Service: "web", Container: "web1", Netns: webNS.Netns})
	if err != nil {
		t.Fatal(err)
	}
	c3 := attach(t, ctx, tb, h3, "c3", "cli")

	// The guest, with a key pair made by h1.
	g, err := h1.Client().AddGuest(ctx, api.GuestRequest{Name: "laptop"})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("guest add answered:\n%s", g.Config)
	priv, err := wgtypes.ParseKey(g.PrivateKey)
	if err != nil || priv.PublicKey().String() != g.PublicKey {
		t.Fatalf("private key %q in the answer does not match public key %s (%v)", g.PrivateKey, g.PublicKey, err)
	}
	st1 := status(t, h1)
	if g.Address6 != twin(testbed.Twins(st1), g.Address) {
		t.Errorf("guest address6 %q, want the twin of %s", g.Address6, g.Address)
	}
	for _, want := range []string{
		"PrivateKey = " + g.PrivateKey, "Address = " + g.Address + "/32, " + g.Address6 + "/128", "DNS = " + meshDNS + ", " + st1.MeshDNS6 + ", zl",
		"PublicKey = " + st1.PublicKey, "Endpoint = " + h1.Underlay.String() + ":51820",
		"AllowedIPs = " + st1.ClusterCIDR + ", " + st1.ClusterCIDR6, "PersistentKeepalive = 25",
	} {
		if !strings.Contains(g.Config, want+"\n") {
			t.Errorf("config lacks %q", want)
		}
	}
	if g.DNSName != "laptop.guest.zl" {
		t.Errorf("dns name %q", g.DNSName)
	}
	guest, err := tb.AddGuest(ctx, "laptop")
	if err != nil {
		t.Fatal(err)
	}
	wg, err := guest.RunWireGuard(ctx, wgBin, g.Config)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			b, _ := os.ReadFile(wg.Log)
			t.Logf("guest's wireguard-go log:\n%s", b)
		}
	})

	reach := func(what string, timeout time.Duration) {
		t.Helper()
		start := time.Now()
		eventually(t, timeout, func() error {
			for _, a := range []string{web1.Address, c3.addr} {
				if err := guest.Ping(ctx, a); err != nil {
					return fmt.Errorf("%s: guest pings %s: %v", what, a, err)
				}
			}
			return nil
		})
		t.Logf("%s: the guest reaches containers on h2 and h3 after %v", what, time.Since(start).Round(time.Millisecond))
	}
	reach("first contact", 30*time.Second)

	t.Run("names through the mesh DNS", func(t *testing.T) {
		eventually(t, 10*time.Second, func() error {
			out, err := guest.Exec(ctx, "dig", "+short", "+time=2", "+tries=2", "@"+meshDNS, "web1.web.zl")
			if got := strings.Fields(string(out)); err != nil || !slices.Equal(got, []string{web1.Address}) {
				return fmt.Errorf("dig @%s web1.web.zl in the guest: %q, want %s (%v)", meshDNS, out, web1.Address, err)
			}
			return nil
		})
	})

	t.Run("a container on another host reaches it by name", func(t *testing.T) {
		eventually(t, 15*time.Second, func() error {
			if got := digShort(ctx, c3.c, "laptop.guest.zl"); !slices.Equal(got, []string{g.Address}) {
				return fmt.Errorf("laptop.guest.zl from h3: %v, want %s", got, g.Address)
			}
			_, err := c3.c.Exec(ctx, "ping", "-c", "1", "-W", "2", "laptop.guest.zl")
			return err
		})
		if got := digShort(ctx, c3.c, "-x", g.Address); !slices.Equal(got, []string{"laptop.guest.zl."}) {
			t.Errorf("PTR of %s from h3: %v", g.Address, got)
		}
	})

	t.Run("IPv6: the guest's twin reaches and is reached", func(t *testing.T) {
		eventually(t, 15*time.Second, func() error {
			if err := guest.Ping(ctx, web1.Address6); err != nil {
				return fmt.Errorf("guest pings web1 at %s: %v", web1.Address6, err)
			}
			if got := digShort(ctx, c3.c, "laptop.guest.zl", "AAAA"); !slices.Equal(got, []string{g.Address6}) {
				return fmt.Errorf("laptop.guest.zl AAAA from h3: %v, want %s", got, g.Address6)
			}
			return c3.c.Ping(ctx, g.Address6)
		})
	})

	t.Run("list, metrics and events", func(t *testing.T) {
		eventually(t, 10*time.Second, func() error {
			list, err := h1.Client().Guests(ctx)
			if err != nil {
				return err
			}
			if len(list) != 1 || list[0].State != api.GuestConnected || !strings.HasPrefix(list[0].Endpoint, guest.Addr.String()+":") ||
				list[0].RxBytes == 0 || list[0].TxBytes == 0 || list[0].PrivateKey != "" || strings.Contains(list[0].Config, g.PrivateKey) {
				return fmt.Errorf("guest list %+v", list)
			}
			return nil
		})
		m, err := scrape(ctx, h1)
		if err != nil {
			t.Fatal(err)
		}
		if m["zlmesh_guests"] != 1 || m[`zlmesh_guest_receive_bytes_total{guest="laptop"}`] == 0 || m["zlmesh_guest_add_duration_seconds_count"] != 1 {
			t.Errorf("metrics: guests %v, rx %v, adds %v", m["zlmesh_guests"], m[`zlmesh_guest_receive_bytes_total{guest="laptop"}`], m["zlmesh_guest_add_duration_seconds_count"])
		}
	})

	// A guest that keeps its private key: the answer has none, and no file
	// of h1 holds either guest's private key.
	own, err := wgtypes.GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	g2, err := h1.Client().AddGuest(ctx, api.GuestRequest{Name: "vm2", PublicKey: own.PublicKey().String(), Endpoint: "vpn.example.test:51820"})
	if err != nil {
		t.Fatal(err)
	}
	if g2.PrivateKey != "" || strings.Contains(g2.Config, "\nPrivateKey") || !strings.Contains(g2.Config, "Endpoint = vpn.example.test:51820\n") {
		t.Errorf("guest with its own key: private key %q, config:\n%s", g2.PrivateKey, g2.Config)
	}
	for _, k := range []wgtypes.Key{priv, own} {
		if f := fileHolding(t, h1.Dir, k); f != "" {
			t.Errorf("%s holds a guest's private key", f)
		}
	}

	t.Run("bad input", func(t *testing.T) {
		for _, tc := range []struct {
			name string
			req  api.GuestRequest
			code string
		}{
			{"duplicate name", api.GuestRequest{Name: "laptop"}, api.CodeAlreadyExists},
			{"duplicate key", api.GuestRequest{Name: "other", PublicKey: g.PublicKey}, api.CodeAlreadyExists},
			{"a node's key", api.GuestRequest{Name: "other", PublicKey: status(t, h2).PublicKey}, api.CodeAlreadyExists},
			{"malformed key", api.GuestRequest{Name: "other", PublicKey: "bm90IGEga2V5"}, api.CodeBadRequest},
			{"not a DNS label", api.GuestRequest{Name: "my_laptop"}, api.CodeBadRequest},
		} {
			_, err := h1.Client().AddGuest(ctx, tc.req)
			var ae *api.Error
			if !errors.As(err, &ae) || ae.Code != tc.code || ae.Status != api.StatusOf(tc.code) {
				t.Errorf("%s: %v, want %s", tc.name, err, tc.code)
			}
		}
		if list, _ := h1.Client().Guests(ctx); len(list) != 2 {
			t.Errorf("after bad input: %d guests, want 2", len(list))
		}
		st, body, err := rawRequest(ctx, h1, http.MethodDelete, "/v1/guests/nobody", nil)
		if err != nil || st != http.StatusNotFound || !bytes.Contains(body, []byte(api.CodeNotFound)) {
			t.Errorf("rm of an unknown guest: %d %s %v", st, body, err)
		}
	})

	t.Run("roaming", func(t *testing.T) {
		// The guest moves to another underlay address: h1 follows it
		// (WireGuard roaming) and the list shows where it is now.
		moved := testbed.GuestAddr(40)
		for _, argv := range [][]string{
			{"ip", "address", "flush", "dev", "eth0"},
			{"ip", "address", "add", moved.String() + "/24", "dev", "eth0"},
			{"ip", "route", "add", "default", "via", testbed.SwitchAddr.String()},
		} {
			if out, err := guest.Exec(ctx, argv...); err != nil {
				t.Fatalf("%v: %v %s", argv, err, out)
			}
		}
		eventually(t, 20*time.Second, func() error {
			if err := guest.Ping(ctx, web1.Address); err != nil {
				return fmt.Errorf("after roaming: %v", err)
			}
			list, err := h1.Client().Guests(ctx)
			if err != nil || len(list) == 0 || !strings.HasPrefix(list[0].Endpoint, moved.String()+":") {
				return fmt.Errorf("guest list after roaming: %+v %v", list, err)
			}
			return nil
		})
		time.Sleep(3 * time.Second) // RoutineGuests records the new endpoint
	})

	if err := h1.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	if err := h1.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	reach("after a restart of h1", 45*time.Second)
	if list, err := h1.Client().Guests(ctx); err != nil || len(list) != 2 || list[0].Address != g.Address || list[0].PublicKey != g.PublicKey || list[0].Renumbered {
		t.Errorf("guests after the restart: %+v, %v", list, err)
	}

	if err := h1.Client().RemoveGuest(ctx, "laptop"); err != nil {
		t.Fatal(err)
	}
	for _, a := range []string{web1.Address, c3.addr} {
		for range 3 {
			if err := guest.Ping(ctx, a); err == nil {
				t.Fatalf("the removed guest still pings %s", a)
			}
		}
	}
	eventually(t, 15*time.Second, func() error {
		if r := digE(ctx, c3.c, "laptop.guest.zl"); r.Status != "NXDOMAIN" {
			return fmt.Errorf("laptop.guest.zl after rm: %s %v", r.Status, r.Answer)
		}
		return nil
	})
	if err := h1.Client().RemoveGuest(ctx, "vm2"); err != nil {
		t.Fatal(err)
	}
}

// fileHolding returns a file under dir that holds k (raw, base64 or hex),
// or "".
func fileHolding(t *testing.T, dir string, k wgtypes.Key) string {
	t.Helper()
	var found string
	forms := [][]byte{k[:], []byte(k.String()), []byte(hex.EncodeToString(k[:]))}
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		for _, f := range forms {
			if bytes.Contains(b, f) {
				found = p
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("read %s: %v", dir, err)
	}
	return found
}

// A guest whose block moves (its node lost a block conflict) gets a new
// address: a guest_moved event, `guest list` flags it and shows the new
// config, and with that config the guest reaches the mesh again.
func TestGuestsRenumbered(t *testing.T) {
	tb := cluster(t, 2, forgetFast...)
	h1, h2 := tb.Host("h1"), tb.Host("h2")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	wgBin, err := testbed.BuildWireGuardGo(ctx, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	contested := "10.200.78.0/26"
	a, b := contestSubnet(t, ctx, tb, contested, []*testbed.Host{h1}, []*testbed.Host{h2})
	peer := attach(t, ctx, tb, a, "peer", "web")
	own, err := wgtypes.GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	g, err := b.Client().AddGuest(ctx, api.GuestRequest{Name: "vm", PublicKey: own.PublicKey().String()})
	if err != nil {
		t.Fatal(err)
	}
	if !mustPrefix(t, contested).Contains(netip.MustParseAddr(g.Address)) {
		t.Fatalf("guest address %s is not in %s", g.Address, contested)
	}
	events := watchEvents(t, ctx, b)
	if err := tb.Heal(); err != nil {
		t.Fatal(err)
	}
	waitWhole(t, tb, tb.Hosts(), 90*time.Second)

	var moved api.Guest
	eventually(t, 30*time.Second, func() error {
		list, err := b.Client().Guests(ctx)
		if err != nil || len(list) != 1 {
			return fmt.Errorf("guests of %s: %+v %v", b.Name, list, err)
		}
		moved = list[0]
		if !moved.Renumbered || moved.OldAddress != g.Address || moved.Address == g.Address || !strings.Contains(moved.Config, "Address = "+moved.Address+"/32, "+moved.Address6+"/128\n") {
			return fmt.Errorf("guest after the conflict: %+v", moved)
		}
		return nil
	})
	eventually(t, 10*time.Second, func() error {
		for _, ev := range events() {
			if ev.Type == api.EventGuestMove && ev.Guest == "vm" && ev.OldAddress == g.Address && ev.Address == moved.Address {
				return nil
			}
		}
		return fmt.Errorf("no %s event for vm from %s to %s", api.EventGuestMove, g.Address, moved.Address)
	})
	t.Logf("guest renumbered from %s to %s", g.Address, moved.Address)

	// The new config, with the guest's own private key put in.
	conf := strings.Replace(moved.Config, "# PrivateKey = <the private key of "+own.PublicKey().String()+">", "PrivateKey = "+own.String(), 1)
	guest, err := tb.AddGuest(ctx, "vm")
	if err != nil {
		t.Fatal(err)
	}
	wg, err := guest.RunWireGuard(ctx, wgBin, conf)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			b, _ := os.ReadFile(wg.Log)
			t.Logf("guest's wireguard-go log:\n%s", b)
		}
	})
	eventually(t, 30*time.Second, func() error { return guest.Ping(ctx, peer.addr) })
	eventually(t, 15*time.Second, func() error {
		if got := digShort(ctx, peer.c, "vm.guest.zl"); !slices.Equal(got, []string{moved.Address}) {
			return fmt.Errorf("vm.guest.zl from %s: %v, want %s", a.Name, got, moved.Address)
		}
		return nil
	})
}
