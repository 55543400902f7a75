//go:build linux

// Command zlmesh-cni is zlmesh's CNI plugin: it turns the CNI commands of a
// container runtime (Podman, containerd and nerdctl, Kubernetes, Nomad,
// CRI-O) into calls on the local node's control socket, through package api.
// Install it as <cni bin dir>/zlmesh (`zlmesh cni install` does), so that a
// network configuration with "type": "zlmesh" runs it.
//
//	ADD     attach CNI_NETNS as <name>.<service>; the result carries the
//	        interface, address, gateway, default route and mesh DNS
//	DEL     detach what ADD made for (network, CNI_CONTAINERID, CNI_IFNAME);
//	        nothing to detach, no namespace or no node is success
//	CHECK   the attachment exists and its address and default route are on
//	        the interface in the namespace
//	STATUS  the node answers on its socket
//	GC      detach this network's CNI attachments that are not in
//	        cni.dev/valid-attachments, and nothing else
//
// The namespace is handed to the node as /proc/<plugin pid>/fd/<fd>, held
// open while the node attaches it, so the node need not see the runtime's
// namespace path (see api.AttachRequest). Every attachment carries an
// api.Origin of kind "cni" naming the network, the runtime's container id and
// the interface, by which DEL, CHECK and GC find it.
package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"time"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"github.com/zlmesh/zlmesh/api"
)

// callTimeout bounds the plugin's whole conversation with the node.
const callTimeout = time.Minute

var log = slog.New(slog.NewTextHandler(os.Stderr, nil)).With("plugin", "zlmesh-cni")

func main() {
	skel.PluginMainFuncs(skel.CNIFuncs{Add: cmdAdd, Del: cmdDel, Check: cmdCheck, Status: cmdStatus, GC: cmdGC},
		version.PluginSupports("0.4.0", "1.0.0", "1.1.0"), "zlmesh CNI plugin (zlmesh-cni)")
}

func client(c *netConf) (*api.Client, context.Context, context.CancelFunc) {
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	return api.NewClient(c.Socket), ctx, cancel
}

func cmdAdd(args *skel.CmdArgs) error {
	c, err := parseConf(args.StdinData)
	if err != nil {
		return err
	}
	name, note := meshName(c, args.Args, args.ContainerID)
	if note != "" {
		log.Warn(note, "container_id", args.ContainerID)
	}
	ns, err := os.Open(args.Netns)
	if err != nil {
		return types.NewError(types.ErrInvalidNetNS, fmt.Sprintf("open namespace %s: %v", args.Netns, err), "")
	}
	defer ns.Close()
	if own, err := netns.Get(); err == nil {
		same := own.Equal(netns.NsHandle(ns.Fd()))
		own.Close()
		if same {
			return types.NewError(types.ErrInvalidNetNS, fmt.Sprintf("namespace %s is the plugin's own", args.Netns), "")
		}
	}
	handle := fmt.Sprintf("/proc/%d/fd/%d", os.Getpid(), ns.Fd())
	cl, ctx, cancel := client(c)
	defer cancel()
	defer cl.Close()
	a, err := cl.Attach(ctx, api.AttachRequest{
		Service:   c.Service,
		Container: name,
		Netns:     handle,
		Ifname:    args.IfName,
		Origin:    origin(c, args.ContainerID, args.IfName, args.Netns),
	})
	if err != nil {
		return cniError(c, fmt.Sprintf("attach %s (%s) to service %s", name, args.ContainerID, c.Service), err)
	}
	mac := ""
	if h, err := netlink.NewHandleAt(netns.NsHandle(ns.Fd())); err == nil {
		if l, err := h.LinkByName(args.IfName); err == nil {
			mac = l.Attrs().HardwareAddr.String()
		}
		h.Close()
	}
	r, err := buildResult(a, args.IfName, args.Netns, mac)
	if err != nil {
		return types.NewError(types.ErrInternal, err.Error(), "")
	}
	log.Info("attached", "container", name, "service", c.Service, "address", a.Address, "container_id", args.ContainerID)
	return types.PrintResult(r, c.CNIVersion)
}

func cmdDel(args *skel.CmdArgs) error {
	c, err := parseConf(args.StdinData)
	if err != nil {
		return err
	}
	return detachWhere(c, func(a api.Attachment) bool { return ours(a, c.Name, args.ContainerID, args.IfName) })
}

func cmdGC(args *skel.CmdArgs) error {
	c, err := parseConf(args.StdinData)
	if err != nil {
		return err
	}
	valid := map[types.GCAttachment]bool{}
	for _, v := range c.ValidAttachments {
		valid[v] = true
	}
	return detachWhere(c, func(a api.Attachment) bool {
		return ours(a, c.Name, "", "") && !valid[types.GCAttachment{ContainerID: a.Origin.ContainerID, IfName: a.Origin.Ifname}]
	})
}

// detachWhere detaches this node's attachments for which match is true. A
// node that does not answer is success: there is nothing it could detach,
// and a namespace that goes away while it is down takes its veth along.
func detachWhere(c *netConf, match func(api.Attachment) bool) error {
	cl, ctx, cancel := client(c)
	defer cancel()
	defer cl.Close()
	list, err := cl.Attachments(ctx)
	if err != nil {
		if errors.Is(mapDial(err), errNoNode) {
			log.Warn("no zlmesh node answers; nothing to detach", "socket", c.Socket, "err", err)
			return nil
		}
		return cniError(c, "list attachments", err)
	}
	for _, a := range list {
		if !match(a) {
			continue
		}
		if err := cl.Detach(ctx, a.Container); err != nil {
			return cniError(c, "detach "+a.Container, err)
		}
		log.Info("detached", "container", a.Container, "service", a.Service, "container_id", a.Origin.ContainerID)
	}
	return nil
}

func cmdCheck(args *skel.CmdArgs) error {
	c, err := parseConf(args.StdinData)
	if err != nil {
		return err
	}
	cl, ctx, cancel := client(c)
	defer cancel()
	defer cl.Close()
	list, err := cl.Attachments(ctx)
	if err != nil {
		return cniError(c, "list attachments", err)
	}
	var a *api.Attachment
	for i := range list {
		if ours(list[i], c.Name, args.ContainerID, args.IfName) {
			a = &list[i]
		}
	}
	if a == nil {
		return types.NewError(types.ErrUnknownContainer, fmt.Sprintf("no zlmesh attachment for container %s interface %s on network %s", args.ContainerID, args.IfName, c.Name), "")
	}
	want, err := buildResult(*a, args.IfName, args.Netns, "")
	if err != nil {
		return types.NewError(types.ErrInternal, err.Error(), "")
	}
	if c.RawPrevResult != nil {
		if err := version.ParsePrevResult(&c.PluginConf); err != nil {
			return types.NewError(types.ErrDecodingFailure, "prevResult: "+err.Error(), "")
		}
		prev, err := current.NewResultFromResult(c.PrevResult)
		if err != nil {
			return types.NewError(types.ErrDecodingFailure, "prevResult: "+err.Error(), "")
		}
		found := false
		for _, ip := range prev.IPs {
			found = found || ip.Address.String() == want.IPs[0].Address.String()
		}
		if !found {
			return types.NewError(types.ErrInternal, fmt.Sprintf("the previous result does not hold the attachment's address %s", want.IPs[0].Address.String()), "")
		}
	}
	ns, err := netns.GetFromPath(args.Netns)
	if err != nil {
		return types.NewError(types.ErrInvalidNetNS, fmt.Sprintf("open namespace %s: %v", args.Netns, err), "")
	}
	defer ns.Close()
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		return types.NewError(types.ErrInternal, fmt.Sprintf("netlink in %s: %v", args.Netns, err), "")
	}
	defer h.Close()
	return checkInterface(h, args.IfName, want)
}

// checkInterface verifies inside the namespace that ifname holds the
// result's address and that a default route via its gateway exists.
func checkInterface(h *netlink.Handle, ifname string, want *current.Result) error {
	fail := func(format string, args ...any) error {
		return types.NewError(types.ErrInternal, "check: "+fmt.Sprintf(format, args...), "")
	}
	l, err := h.LinkByName(ifname)
	if err != nil {
		return fail("interface %s: %v", ifname, err)
	}
	ip := want.IPs[0]
	family := netlink.FAMILY_V4
	if ip.Address.IP.To4() == nil {
		family = netlink.FAMILY_V6
	}
	addrs, err := h.AddrList(l, family)
	if err != nil {
		return fail("addresses of %s: %v", ifname, err)
	}
	found := false
	for _, a := range addrs {
		found = found || a.IPNet.String() == ip.Address.String()
	}
	if !found {
		return fail("%s does not hold %s", ifname, ip.Address.String())
	}
	routes, err := h.RouteList(nil, family)
	if err != nil {
		return fail("routes: %v", err)
	}
	for _, r := range routes {
		isDefault := r.Dst == nil || (r.Dst.IP.IsUnspecified() && func() bool { o, _ := r.Dst.Mask.Size(); return o == 0 }())
		if isDefault && r.Gw.Equal(ip.Gateway) {
			return nil
		}
	}
	return fail("no default route via %s", ip.Gateway)
}

func cmdStatus(args *skel.CmdArgs) error {
	c, err := parseConf(args.StdinData)
	if err != nil {
		return err
	}
	cl, ctx, cancel := client(c)
	defer cancel()
	defer cl.Close()
	if _, err := cl.Status(ctx); err != nil {
		return types.NewError(types.ErrPluginNotAvailable, fmt.Sprintf("zlmesh node on %s is not ready: %v", c.Socket, err), "")
	}
	return nil
}

// mapDial wraps errNoNode around an error that says nothing listens on the
// socket (missing, refused), and returns other errors as they are.
func mapDial(err error) error {
	var op *net.OpError
	if errors.As(err, &op) && op.Op == "dial" {
		return fmt.Errorf("%w: %w", errNoNode, err)
	}
	return err
}

// cniError turns a control-socket failure into a CNI error: no node, or a
// node starting or stopping, is 11 "try again later" naming the socket; a
// namespace the node cannot use is 8; a bad request is 7; anything else 999.
func cniError(c *netConf, what string, err error) error {
	var ae *api.Error
	switch {
	case errors.Is(mapDial(err), errNoNode):
		return types.NewError(types.ErrTryAgainLater, fmt.Sprintf("%s: no zlmesh node answers on %s (is `zlmesh up` running?)", what, c.Socket), err.Error())
	case errors.As(err, &ae) && ae.Code == api.CodeNotReady:
		return types.NewError(types.ErrTryAgainLater, fmt.Sprintf("%s: the zlmesh node on %s is not ready", what, c.Socket), ae.Message)
	case errors.As(err, &ae) && ae.Code == api.CodeNoNamespace:
		return types.NewError(types.ErrInvalidNetNS, what+": "+ae.Message, "")
	case errors.As(err, &ae) && ae.Code == api.CodeBadRequest:
		return types.NewError(types.ErrInvalidNetworkConfig, what+": "+ae.Message, "")
	}
	return types.NewError(types.ErrInternal, what+": "+err.Error(), "")
}
