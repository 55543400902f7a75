//go:build windows

package winhcn

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"strings"

	"github.com/Microsoft/hcsshim"
	"github.com/Microsoft/hcsshim/hcn"
	"golang.org/x/sys/windows"
)

// System returns the Host Compute Network service of this machine
// (through github.com/Microsoft/hcsshim/hcn).
//
// Not verified on a real Windows host (there is none in CI): the calls
// follow hcsshim's own tests and the CNI plugins that use hcn; updating a
// live network's subnets (SetNetworkSubnets) uses a Subnet modify request
// that older HNS versions may refuse, in which case the error says so and
// the node must make the network anew.
func System() HCN { return sysHCN{} }

type sysHCN struct{}

// mapErr turns hcn's "not found" and a missing computenetwork.dll (Wine,
// Windows without the Containers feature) into our sentinels.
func mapErr(op string, err error) error {
	switch {
	case err == nil:
		return nil
	case hcn.IsNotFoundError(err):
		return fmt.Errorf("%s: %v: %w", op, err, ErrNotFound)
	case errors.Is(err, windows.ERROR_MOD_NOT_FOUND), errors.Is(err, windows.ERROR_PROC_NOT_FOUND),
		// hcn's errors carry the code in the text only: "failed in
		// Win32: Module not found. (0x7e)" (0x7f: procedure not found).
		strings.HasSuffix(err.Error(), "(0x7e)"), strings.HasSuffix(err.Error(), "(0x7f)"):
		return fmt.Errorf("%s: %v: %w", op, err, ErrUnavailable)
	}
	return fmt.Errorf("%s: %w", op, err)
}

func (sysHCN) Networks() ([]Network, error) {
	ns, err := hcn.ListNetworks()
	if err != nil {
		return nil, mapErr("list hcn networks", err)
	}
	out := make([]Network, 0, len(ns))
	for _, n := range ns {
		out = append(out, fromHCNNetwork(&n))
	}
	return out, nil
}

func fromHCNNetwork(n *hcn.HostComputeNetwork) Network {
	out := Network{ID: n.Id, Name: n.Name, Type: string(n.Type)}
	for _, ip := range n.Ipams {
		for _, s := range ip.Subnets {
			if p, err := netip.ParsePrefix(s.IpAddressPrefix); err == nil {
				out.Subnets = append(out.Subnets, p)
			}
		}
	}
	return out
}

func ipams(subnets []netip.Prefix) []hcn.Ipam {
	ip := hcn.Ipam{Type: "Static"}
	for _, s := range subnets {
		ip.Subnets = append(ip.Subnets, hcn.Subnet{IpAddressPrefix: s.String()})
	}
	return []hcn.Ipam{ip}
}

func (sysHCN) CreateNetwork(n Network) (Network, error) {
	h := &hcn.HostComputeNetwork{
		Name:          n.Name,
		Type:          hcn.NetworkType(n.Type),
		Ipams:         ipams(n.Subnets),
		SchemaVersion: hcn.V2SchemaVersion(),
	}
	made, err := h.Create()
	if err != nil {
		return Network{}, mapErr("create hcn network "+n.Name, err)
	}
	return fromHCNNetwork(made), nil
}

func (sysHCN) SetNetworkSubnets(id string, subnets []netip.Prefix) error {
	n, err := hcn.GetNetworkByID(id)
	if err != nil {
		return mapErr("hcn network "+id, err)
	}
	settings, err := json.Marshal(struct{ Ipams []hcn.Ipam }{ipams(subnets)})
	if err != nil {
		return err
	}
	err = n.ModifyNetworkSettings(&hcn.ModifyNetworkSettingRequest{
		ResourceType: hcn.NetworkResourceType("Subnet"),
		RequestType:  hcn.RequestTypeUpdate,
		Settings:     settings,
	})
	return mapErr("update subnets of hcn network "+id, err)
}

func (sysHCN) DeleteNetwork(id string) error {
	n, err := hcn.GetNetworkByID(id)
	if err != nil {
		return mapErr("hcn network "+id, err)
	}
	return mapErr("delete hcn network "+id, n.Delete())
}

func (sysHCN) Endpoints(networkID string) ([]Endpoint, error) {
	eps, err := hcn.ListEndpointsOfNetwork(networkID)
	if err != nil {
		return nil, mapErr("list endpoints of hcn network "+networkID, err)
	}
	out := make([]Endpoint, 0, len(eps))
	for i := range eps {
		out = append(out, fromHCNEndpoint(&eps[i]))
	}
	return out, nil
}

func fromHCNEndpoint(e *hcn.HostComputeEndpoint) Endpoint {
	out := Endpoint{ID: e.Id, Name: e.Name, NetworkID: e.HostComputeNetwork, NamespaceID: e.HostComputeNamespace, DNSSearch: e.Dns.Search}
	if len(e.IpConfigurations) > 0 {
		if a, err := netip.ParseAddr(e.IpConfigurations[0].IpAddress); err == nil {
			out.Address = netip.PrefixFrom(a, int(e.IpConfigurations[0].PrefixLength))
		}
	}
	for _, r := range e.Routes {
		dst, err1 := netip.ParsePrefix(r.DestinationPrefix)
		nh, err2 := netip.ParseAddr(r.NextHop)
		if err1 == nil && err2 == nil {
			out.Routes = append(out.Routes, Route{Dst: dst, NextHop: nh})
		}
	}
	for _, s := range e.Dns.ServerList {
		if a, err := netip.ParseAddr(s); err == nil {
			out.DNSServers = append(out.DNSServers, a)
		}
	}
	for _, p := range e.Policies {
		switch p.Type {
		case hcn.OutBoundNAT:
			var s hcn.OutboundNatPolicySetting
			if json.Unmarshal(p.Settings, &s) == nil {
				out.NATExceptions = parsePrefixes(s.Exceptions)
			}
		case hcn.ACL:
			var s hcn.AclPolicySetting
			if json.Unmarshal(p.Settings, &s) == nil && s.Direction == hcn.DirectionTypeIn && s.Action == hcn.ActionTypeAllow {
				out.AllowIn = append(out.AllowIn, parsePrefixes(strings.Split(s.RemoteAddresses, ","))...)
			}
		}
	}
	return out
}

func parsePrefixes(ss []string) []netip.Prefix {
	var out []netip.Prefix
	for _, s := range ss {
		if p, err := netip.ParsePrefix(strings.TrimSpace(s)); err == nil {
			out = append(out, p)
		}
	}
	return out
}

func prefixStrings(ps []netip.Prefix) []string {
	out := make([]string, len(ps))
	for i, p := range ps {
		out[i] = p.String()
	}
	return out
}

func (sysHCN) CreateEndpoint(e Endpoint) (Endpoint, error) {
	h := &hcn.HostComputeEndpoint{
		Name:               e.Name,
		HostComputeNetwork: e.NetworkID,
		IpConfigurations:   []hcn.IpConfig{{IpAddress: e.Address.Addr().String(), PrefixLength: uint8(e.Address.Bits())}},
		Dns:                hcn.Dns{Search: e.DNSSearch},
		SchemaVersion:      hcn.V2SchemaVersion(),
	}
	for _, s := range e.DNSServers {
		h.Dns.ServerList = append(h.Dns.ServerList, s.String())
	}
	for _, r := range e.Routes {
		h.Routes = append(h.Routes, hcn.Route{DestinationPrefix: r.Dst.String(), NextHop: r.NextHop.String()})
	}
	if len(e.NATExceptions) > 0 {
		s, _ := json.Marshal(hcn.OutboundNatPolicySetting{Exceptions: prefixStrings(e.NATExceptions)})
		h.Policies = append(h.Policies, hcn.EndpointPolicy{Type: hcn.OutBoundNAT, Settings: s})
	}
	if len(e.AllowIn) > 0 {
		s, _ := json.Marshal(hcn.AclPolicySetting{
			Action:          hcn.ActionTypeAllow,
			Direction:       hcn.DirectionTypeIn,
			RemoteAddresses: strings.Join(prefixStrings(e.AllowIn), ","),
			RuleType:        hcn.RuleTypeSwitch,
			Priority:        200,
		})
		h.Policies = append(h.Policies, hcn.EndpointPolicy{Type: hcn.ACL, Settings: s})
	}
	made, err := h.Create()
	if err != nil {
		return Endpoint{}, mapErr("create hcn endpoint "+e.Name, err)
	}
	return fromHCNEndpoint(made), nil
}

func (sysHCN) DeleteEndpoint(id string) error {
	e, err := hcn.GetEndpointByID(id)
	if err != nil {
		return mapErr("hcn endpoint "+id, err)
	}
	// An endpoint hot-added into a running container (AttachContainer)
	// is taken out of it first; a container gone meanwhile is no error.
	if v1, err := hcsshim.GetHNSEndpointByID(id); err == nil {
		for _, c := range v1.SharedContainers {
			hcsshim.HotDetachEndpoint(c, id)
		}
	}
	return mapErr("delete hcn endpoint "+id, e.Delete())
}

func (sysHCN) CreateNamespace() (string, error) {
	ns, err := hcn.NewNamespace(hcn.NamespaceTypeHost).Create()
	if err != nil {
		return "", mapErr("create hcn namespace", err)
	}
	return ns.Id, nil
}

func (sysHCN) AttachNamespace(endpointID, namespaceID string) error {
	return mapErr("add endpoint "+endpointID+" to hcn namespace "+namespaceID,
		hcn.AddNamespaceEndpoint(namespaceID, endpointID))
}

func (sysHCN) NamespaceExists(id string) (bool, error) {
	_, err := hcn.GetNamespaceByID(id)
	if err == nil {
		return true, nil
	}
	if err := mapErr("hcn namespace "+id, err); errors.Is(err, ErrNotFound) {
		return false, nil
	} else {
		return false, err
	}
}

func (sysHCN) DeleteNamespace(id string) error {
	ns, err := hcn.GetNamespaceByID(id)
	if err != nil {
		return mapErr("hcn namespace "+id, err)
	}
	return mapErr("delete hcn namespace "+id, ns.Delete())
}

// ContainerExists asks the host compute service (vmcompute) for the
// compute system of this id.
func (sysHCN) ContainerExists(id string) (bool, error) {
	cs, err := hcsshim.GetContainers(hcsshim.ComputeSystemQuery{IDs: []string{id}})
	if err != nil {
		return false, mapErr("look up compute system "+id, err)
	}
	for _, c := range cs {
		if strings.EqualFold(c.ID, id) {
			return true, nil
		}
	}
	return false, nil
}

// AttachContainer hot-adds the endpoint to the running container
// (hcsshim.HotAttachEndpoint, which is a no-op when it is attached
// already). Not verified on a Windows host.
func (sysHCN) AttachContainer(containerID, endpointID string) error {
	return mapErr("attach hcn endpoint "+endpointID+" to container "+containerID,
		hcsshim.HotAttachEndpoint(containerID, endpointID))
}
