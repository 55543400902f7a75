// Package tun creates the node's packet device and owns the packet path.
//
// Devices: a Linux kernel TUN (Create, configured through netlink with
// SetAddress and SetRoutes), Wintun on Windows, and a gVisor netstack where
// there is no TUN or no root (CreateNetstack). All of them are wireguard-go
// tun.Device values.
//
// The packet path: Wrapper is a tun.Device around any of them that runs
// ordered hooks on every packet. Outbound packets come from the OS and go to
// WireGuard (towards the network); inbound packets come from WireGuard and go
// to the OS. Each packet is parsed once into a Packet shared by all hooks of
// that direction; a hook returns a Verdict and may answer a packet by
// injecting a reply towards the OS (Wrapper.InjectInbound, UDPReply).
package tun

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/zlmesh/zlmesh/tun/winip"
	wgtun "golang.zx2c4.com/wireguard/tun"
)

// Device is wireguard-go's packet device.
type Device = wgtun.Device

// Event is a device event (wireguard-go's tun.Event).
type Event = wgtun.Event

// Defaults.
const (
	DefaultName = "zl0"
	DefaultMTU  = 1420
)

// MTU bounds accepted by Create and CreateNetstack: the smallest MTU an IPv4
// interface may have and the largest a TUN device takes.
const (
	MinMTU = 68
	MaxMTU = 65535
)

// RouteProtocol is the rtm_protocol value (see /etc/iproute2/rt_protos) that
// marks the routes zlmesh owns: SetRoutes only ever replaces or deletes
// routes through its interface that carry this number. 0x5a (90) is not
// assigned to any routing daemon; `ip route show proto 90` lists ours.
const RouteProtocol = 0x5a

// RouteMetric is the metric (priority) of the routes SetRoutes installs. It
// is not 0 so that a route of ours never has the same key (table,
// destination, metric) as the kernel's connected route for the interface's
// own prefix: both can exist, and replacing ours never replaces the
// kernel's.
const RouteMetric = 90

// Sentinel errors callers may branch on with errors.Is. The errors returned
// wrap them with the operation and the object.
var (
	// ErrUnsupported is returned where a device kind or an operation does
	// not exist on this platform.
	ErrUnsupported = errors.New("not supported on this platform")
	// ErrInvalidName is returned for a name that cannot be an interface
	// name (see ValidateName).
	ErrInvalidName = errors.New("invalid interface name")
	// ErrNameInUse is returned by Create when an interface of that name
	// exists and cannot be taken: another process holds the TUN device, or
	// the name belongs to an interface that is not a TUN device.
	ErrNameInUse = errors.New("interface name in use")
	// ErrNoTUN is returned by Create when the kernel offers no TUN device
	// (/dev/net/tun is missing: the tun module is not loaded, or a container
	// was started without the device), or on Windows when wintun.dll cannot
	// be loaded.
	ErrNoTUN = errors.New("no TUN support")
	// ErrLinkNotFound is returned by SetAddress and SetRoutes when no
	// interface has the given name (in the caller's network namespace).
	// It is winip's sentinel too (the Windows side).
	ErrLinkNotFound = winip.ErrLinkNotFound
	// ErrRouteConflict is returned by SetRoutes when a route it must
	// install has the same destination and metric as a route zlmesh does
	// not own; that route is left alone and nothing is changed.
	ErrRouteConflict = errors.New("route conflicts with a route zlmesh does not own")
)

// maxNameLen is IFNAMSIZ-1: the kernel's limit on interface names.
const maxNameLen = 15

// ValidateName reports whether name can be an interface name: 1 to 15 bytes
// of valid UTF-8, no '/', ':' or '%', no whitespace or NUL, not "." or "..".
// The error wraps ErrInvalidName and names the name and the problem.
func ValidateName(name string) error {
	problem := ""
	switch {
	case name == "":
		problem = "empty"
	case len(name) > maxNameLen:
		problem = fmt.Sprintf("%d bytes, longer than %d", len(name), maxNameLen)
	case name == "." || name == "..":
		problem = "reserved"
	case strings.ContainsRune(name, '/'):
		problem = "contains '/'"
	case strings.ContainsRune(name, 0):
		problem = "contains NUL"
	case !utf8.ValidString(name):
		problem = "not valid UTF-8"
	case strings.ContainsFunc(name, unicode.IsSpace):
		problem = "contains whitespace"
	case strings.ContainsRune(name, ':'):
		problem = "contains ':'" // the kernel refuses it (address labels)
	case strings.ContainsRune(name, '%'):
		// "zl%d" would make the kernel pick the name.
		problem = "contains '%'"
	default:
		return nil
	}
	return fmt.Errorf("interface name %q: %s: %w", name, problem, ErrInvalidName)
}

// Create makes a kernel TUN device with the given name and MTU (mtu <= 0
// means DefaultMTU; otherwise MinMTU..MaxMTU). The device is left down and
// without addresses; see SetAddress.
//
// Linux: the device is made by wireguard-go's kernel TUN code (with its
// virtio-net offloads: TSO/USO batches on Read, GRO on Write, BatchSize > 1
// when the kernel supports it). It is created in the network namespace of
// the calling OS thread, and MTU() keeps answering for that namespace. A
// caller that wants it in another namespace locks the goroutine to its
// thread (runtime.LockOSThread), enters the namespace (setns), calls Create
// and returns to its own namespace before unlocking; the device stays in
// the namespace it was made in. The name must be free or belong to an idle
// persistent TUN device; otherwise the error wraps ErrNameInUse. A missing
// /dev/net/tun gives ErrNoTUN.
//
// Windows: a Wintun adapter through wireguard-go (wintun.dll must be next to
// the executable or on the DLL search path), with the MTU set on its IPv4
// and IPv6 interfaces and duplicate address detection and router discovery
// off (package winip). Closing it also takes zlmesh's routes and addresses
// off the adapter first.
//
// Elsewhere: ErrUnsupported; use CreateNetstack.
//
// The caller owns the device: it must drain Events() (wireguard-go's device
// does) and Close it. Closing it removes the interface and its addresses and
// routes.
func Create(name string, mtu int) (Device, error) {
	if err := ValidateName(name); err != nil {
		return nil, fmt.Errorf("create tun: %w", err)
	}
	mtu, err := checkMTU(mtu)
	if err != nil {
		return nil, fmt.Errorf("create tun %s: %w", name, err)
	}
	return create(name, mtu)
}

// SetAddress makes addr (address and prefix length) the only address of its
// family on the interface (other addresses of that family are removed; IPv6
// link-local addresses, which the kernel manages, are left alone), and
// brings the interface up. Idempotent: calling it again with the same
// arguments changes nothing.
//
// Linux: through netlink, in the network namespace of the calling OS thread
// (see Create). Windows: through the IP Helper API (package winip); the
// Wintun adapter is up while zlmesh holds it. Elsewhere: ErrUnsupported.
func SetAddress(ifname string, addr netip.Prefix) error {
	if err := checkAddress(addr); err != nil {
		return fmt.Errorf("set address %s on %s: %w", addr, ifname, err)
	}
	return setAddress(ifname, addr)
}

// SetRoutes makes routes exactly the set of routes zlmesh owns through the
// interface. zlmesh's routes are those through the interface that carry
// RouteProtocol; they are installed in the main table with RouteMetric, as
// direct (link-scope) routes. Wanted routes that are missing are added,
// owned routes that are not wanted are deleted, and routes zlmesh does not
// own (the kernel's connected route, anything an operator added) are never
// touched. Idempotent; SetRoutes(ifname, nil) removes all of zlmesh's routes
// through the interface.
//
// Every prefix must be valid and canonical (no host bits set: 10.1.0.0/16,
// not 10.1.2.3/16); duplicates are ignored. All checks, including
// ErrRouteConflict, happen before anything is changed. The interface must be
// up (SetAddress brings it up).
//
// Linux: through netlink, in the network namespace of the calling OS thread
// (see Create). Windows: through the IP Helper API (package winip), where
// the routes carry RouteMetric and every static route through the Wintun
// adapter (zlmesh's own, gone when zlmesh closes it) is zlmesh's, so
// ErrRouteConflict does not happen; a wanted prefix that is the adapter's
// own connected route is left to Windows. Elsewhere: ErrUnsupported.
func SetRoutes(ifname string, routes []netip.Prefix) error {
	want, err := checkRoutes(routes)
	if err != nil {
		return fmt.Errorf("set routes on %s: %w", ifname, err)
	}
	return setRoutes(ifname, want)
}

// checkMTU applies the default and the bounds.
func checkMTU(mtu int) (int, error) {
	if mtu <= 0 {
		return DefaultMTU, nil
	}
	if mtu < MinMTU || mtu > MaxMTU {
		return 0, fmt.Errorf("mtu %d out of range %d..%d", mtu, MinMTU, MaxMTU)
	}
	return mtu, nil
}

// checkAddress rejects what cannot be an interface address.
func checkAddress(addr netip.Prefix) error {
	a := addr.Addr()
	switch {
	case !addr.IsValid():
		return errors.New("invalid prefix")
	case a.Is4In6():
		return errors.New("IPv4-mapped IPv6 address; use the IPv4 form")
	case a.Zone() != "":
		return errors.New("address has a zone")
	case a.IsUnspecified() || a.IsMulticast():
		return errors.New("not a unicast address")
	case a.Is6() && a.IsLinkLocalUnicast():
		return errors.New("IPv6 link-local addresses are the kernel's")
	}
	return nil
}

// checkRoutes validates routes and returns them without duplicates, in
// their original order.
func checkRoutes(routes []netip.Prefix) ([]netip.Prefix, error) {
	want := make([]netip.Prefix, 0, len(routes))
	seen := make(map[netip.Prefix]bool, len(routes))
	for _, r := range routes {
		switch {
		case !r.IsValid():
			return nil, fmt.Errorf("route %s: invalid prefix", r)
		case r.Addr().Is4In6():
			return nil, fmt.Errorf("route %s: IPv4-mapped IPv6 prefix; use the IPv4 form", r)
		case r != r.Masked():
			return nil, fmt.Errorf("route %s has host bits set (want %s)", r, r.Masked())
		}
		if !seen[r] {
			seen[r] = true
			want = append(want, r)
		}
	}
	return want, nil
}
