package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"regexp"
	"strings"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/zlmesh/zlmesh/api"
)

// netConf is the plugin's configuration (stdin):
//
//	{"cniVersion": "1.0.0", "name": "zlmesh", "type": "zlmesh",
//	 "socket": "/run/zlmesh/zlmesh.sock", "service": "web",
//	 "capabilities": {"aliases": true}}
//
// Socket defaults to api.DefaultSocket, Service to the network's name (both
// must then be a DNS label: a-z, 0-9, '-', at most 63).
type netConf struct {
	types.PluginConf
	Socket  string `json:"socket,omitempty"`
	Service string `json:"service,omitempty"`
	// RuntimeConfig carries the capabilities the runtime fills; the plugin
	// reads "aliases" (network name → names of the container on it).
	RuntimeConfig struct {
		Aliases map[string][]string `json:"aliases,omitempty"`
	} `json:"runtimeConfig,omitempty"`
}

var dnsLabelRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)

// containerRE is the node's rule for a container id (bridge.ValidateContainer):
// 1 to 128 characters of [A-Za-z0-9_.-].
var containerRE = regexp.MustCompile(`^[A-Za-z0-9_.-]{1,128}$`)

// parseConf decodes and checks the configuration and fills its defaults.
func parseConf(stdin []byte) (*netConf, error) {
	c := &netConf{}
	if err := json.Unmarshal(stdin, c); err != nil {
		return nil, types.NewError(types.ErrDecodingFailure, "decode network configuration: "+err.Error(), "")
	}
	if c.Socket == "" {
		c.Socket = api.DefaultSocket
	}
	if c.Service == "" {
		c.Service = c.Name
	}
	if !dnsLabelRE.MatchString(c.Service) {
		return nil, types.NewError(types.ErrInvalidNetworkConfig,
			fmt.Sprintf("service %q is not a valid service name (a DNS label: 1 to 63 of a-z, 0-9 and '-', not starting or ending with '-'); set \"service\" in the configuration", c.Service), "")
	}
	return c, nil
}

// cniArg returns the value of key in CNI_ARGS ("K1=V1;K2=V2"), "" when absent.
func cniArg(args, key string) string {
	for _, kv := range strings.Split(args, ";") {
		if k, v, ok := strings.Cut(kv, "="); ok && k == key {
			return v
		}
	}
	return ""
}

// meshName is the container id to attach under, which is its name in the
// mesh's DNS (<name>.<service>.zl): the name the runtime knows the container
// by (K8S_POD_NAME in CNI_ARGS, as Podman and Kubernetes pass it, else the
// first alias the runtime gave for this network), or containerID when there
// is none. A name that is not a valid container id falls back to
// containerID too, and note says why.
func meshName(c *netConf, args, containerID string) (name, note string) {
	name = cniArg(args, "K8S_POD_NAME")
	if name == "" {
		if a := c.RuntimeConfig.Aliases[c.Name]; len(a) > 0 {
			name = a[0]
		}
	}
	if name == "" {
		return containerID, ""
	}
	if !containerRE.MatchString(name) {
		return containerID, fmt.Sprintf("the runtime's name %q is not a valid zlmesh container id (1 to 128 of A-Z, a-z, 0-9, '_', '.', '-'); attached as %s", name, containerID)
	}
	return name, ""
}

// origin is how the plugin marks, and finds again, its attachments.
func origin(c *netConf, containerID, ifname, netns string) *api.Origin {
	return &api.Origin{Kind: api.OriginCNI, Network: c.Name, ContainerID: containerID, Ifname: ifname, Netns: netns}
}

// ours reports whether a was made by this plugin for network. containerID
// and ifname "" match any.
func ours(a api.Attachment, network, containerID, ifname string) bool {
	o := a.Origin
	return o != nil && o.Kind == api.OriginCNI && o.Network == network &&
		(containerID == "" || o.ContainerID == containerID) && (ifname == "" || o.Ifname == ifname)
}

// buildResult is the ADD result for attachment a: the interface in the
// sandbox, its address with the prefix length and gateway the node gave,
// the default route via the gateway, the same for its IPv6 address when it
// has one, and the mesh DNS's addresses.
func buildResult(a api.Attachment, ifname, sandbox, mac string) (*current.Result, error) {
	ip := net.ParseIP(a.Address)
	gw := net.ParseIP(a.Gateway)
	if ip == nil || gw == nil {
		return nil, fmt.Errorf("node answered address %q gateway %q", a.Address, a.Gateway)
	}
	bits, dflt := 32, "0.0.0.0/0"
	if ip.To4() == nil {
		bits, dflt = 128, "::/0"
	} else {
		ip, gw = ip.To4(), gw.To4()
	}
	if a.Prefix < 0 || a.Prefix > bits || (gw.To4() == nil) != (bits == 128) {
		return nil, fmt.Errorf("node answered address %s/%d gateway %s", a.Address, a.Prefix, a.Gateway)
	}
	_, dst, _ := net.ParseCIDR(dflt)
	r := &current.Result{
		CNIVersion: current.ImplementedSpecVersion,
		Interfaces: []*current.Interface{{Name: ifname, Mac: mac, Sandbox: sandbox}},
		IPs: []*current.IPConfig{{
			Interface: current.Int(0),
			Address:   net.IPNet{IP: ip, Mask: net.CIDRMask(a.Prefix, bits)},
			Gateway:   gw,
		}},
		Routes: []*types.Route{{Dst: *dst, GW: gw}},
	}
	if a.Address6 != "" {
		ip6, gw6 := net.ParseIP(a.Address6), net.ParseIP(a.Gateway6)
		if ip6 == nil || ip6.To4() != nil || gw6 == nil || gw6.To4() != nil {
			return nil, fmt.Errorf("node answered address6 %q gateway6 %q", a.Address6, a.Gateway6)
		}
		_, dst6, _ := net.ParseCIDR("::/0")
		r.IPs = append(r.IPs, &current.IPConfig{
			Interface: current.Int(0),
			Address:   net.IPNet{IP: ip6, Mask: net.CIDRMask(128, 128)},
			Gateway:   gw6,
		})
		r.Routes = append(r.Routes, &types.Route{Dst: *dst6, GW: gw6})
	}
	for _, ns := range []string{a.DNS, a.DNS6} {
		if ns != "" {
			r.DNS.Nameservers = append(r.DNS.Nameservers, ns)
		}
	}
	if a.SearchDomain != "" {
		r.DNS.Search = []string{a.SearchDomain}
	}
	return r, nil
}

// errNoNode marks failures to reach the node at all.
var errNoNode = errors.New("no zlmesh node answers")
