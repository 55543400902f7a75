//go:build windows

package winip

import (
	"errors"
	"fmt"
	"net/netip"

	"golang.org/x/sys/windows"
	"golang.zx2c4.com/wireguard/windows/tunnel/winipcfg"
)

// System returns the IP Helper API of this machine (through winipcfg).
func System() IPHelper { return sysHelper{} }

type sysHelper struct{}

func (sysHelper) LUID(name string) (LUID, error) {
	rows, err := winipcfg.GetIfTable2Ex(winipcfg.MibIfEntryNormal)
	if err != nil {
		return 0, fmt.Errorf("list interfaces: %w", err)
	}
	for i := range rows {
		if rows[i].Alias() == name {
			return LUID(rows[i].InterfaceLUID), nil
		}
	}
	return 0, fmt.Errorf("interface %q: %w", name, ErrLinkNotFound)
}

func (sysHelper) Addresses(luid LUID) ([]netip.Prefix, error) {
	rows, err := winipcfg.GetUnicastIPAddressTable(windows.AF_UNSPEC)
	if err != nil {
		return nil, fmt.Errorf("list unicast addresses: %w", err)
	}
	var out []netip.Prefix
	for i := range rows {
		if LUID(rows[i].InterfaceLUID) != luid {
			continue
		}
		a := rows[i].Address.Addr()
		if !a.IsValid() {
			continue
		}
		out = append(out, netip.PrefixFrom(a.WithZone(""), int(rows[i].OnLinkPrefixLength)))
	}
	return out, nil
}

func (sysHelper) AddAddress(luid LUID, addr netip.Prefix) error {
	// winipcfg sets DadStatePreferred and infinite lifetimes.
	return winipcfg.LUID(luid).AddIPAddress(addr)
}

func (sysHelper) DeleteAddress(luid LUID, addr netip.Prefix) error {
	return winipcfg.LUID(luid).DeleteIPAddress(addr)
}

func (sysHelper) Routes(luid LUID) ([]Route, error) {
	rows, err := winipcfg.GetIPForwardTable2(windows.AF_UNSPEC)
	if err != nil {
		return nil, fmt.Errorf("list routes: %w", err)
	}
	var out []Route
	for i := range rows {
		r := &rows[i]
		if LUID(r.InterfaceLUID) != luid {
			continue
		}
		out = append(out, Route{
			Dst:     r.DestinationPrefix.Prefix(),
			NextHop: r.NextHop.Addr(),
			Metric:  r.Metric,
			Static:  r.Protocol == winipcfg.RouteProtocolNetMgmt,
		})
	}
	return out, nil
}

func (sysHelper) AddRoute(luid LUID, r Route) error {
	nh := r.NextHop
	if !nh.IsValid() {
		nh = netip.IPv4Unspecified()
		if r.Dst.Addr().Is6() {
			nh = netip.IPv6Unspecified()
		}
	}
	return winipcfg.LUID(luid).AddRoute(r.Dst, nh, r.Metric)
}

func (sysHelper) DeleteRoute(luid LUID, r Route) error {
	nh := r.NextHop
	if !nh.IsValid() {
		nh = netip.IPv4Unspecified()
		if r.Dst.Addr().Is6() {
			nh = netip.IPv6Unspecified()
		}
	}
	return winipcfg.LUID(luid).DeleteRoute(r.Dst, nh)
}

func (sysHelper) SetInterface(luid LUID, ipv6 bool, mtu int) error {
	family := winipcfg.AddressFamily(windows.AF_INET)
	if ipv6 {
		family = windows.AF_INET6
	}
	row, err := winipcfg.LUID(luid).IPInterface(family)
	if err != nil {
		if errors.Is(err, windows.ERROR_NOT_FOUND) {
			return fmt.Errorf("ip interface: %v: %w", err, ErrFamilyUnavailable)
		}
		return fmt.Errorf("ip interface: %w", err)
	}
	if row.NLMTU == uint32(mtu) && row.DadTransmits == 0 && row.RouterDiscoveryBehavior == winipcfg.RouterDiscoveryDisabled {
		return nil
	}
	row.NLMTU = uint32(mtu)
	row.DadTransmits = 0
	row.RouterDiscoveryBehavior = winipcfg.RouterDiscoveryDisabled
	// SetIpInterfaceEntry refuses a row that carries the read-only
	// SitePrefixLength of an IPv4 interface.
	if !ipv6 {
		row.SitePrefixLength = 0
	}
	return row.Set()
}
