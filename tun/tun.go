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
// that direction; a hook returns a Verdict and may inject packets towards the
// OS (a reply) or towards WireGuard.
package tun

import (
	"errors"
	"net/netip"

	wgtun "golang.zx2c4.com/wireguard/tun"
)

// Device is wireguard-go's packet device.
type Device = wgtun.Device

// Defaults.
const (
	DefaultName = "zl0"
	DefaultMTU  = 1420
)

// ErrUnsupported is returned where a device kind does not exist on this
// platform.
var ErrUnsupported = errors.New("not supported on this platform")

// ValidateName reports whether name can be an interface name (1 to 15 bytes,
// no '/', no whitespace, not "." or "..").
func ValidateName(name string) error { panic("unimplemented") }

// Create makes a kernel TUN device with the given name and MTU. The device
// is left down and without addresses; see SetAddress.
func Create(name string, mtu int) (Device, error) { panic("unimplemented") }

// SetAddress makes addr (address and prefix length) the only IPv4 address of
// the interface, and brings it up. Idempotent.
func SetAddress(ifname string, addr netip.Prefix) error { panic("unimplemented") }

// SetRoutes makes routes exactly the set of routes zlmesh owns through the
// interface (marked with zlmesh's route protocol); routes it does not own are
// left alone. Idempotent.
func SetRoutes(ifname string, routes []netip.Prefix) error { panic("unimplemented") }
