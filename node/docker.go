package node

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/zlmesh/zlmesh/api"
	"github.com/zlmesh/zlmesh/bridge"
	"github.com/zlmesh/zlmesh/dockerplugin"
)

// Docker's network and IPAM driver (package dockerplugin), served on
// Config.DockerPlugin's socket. Every endpoint goes through the node's one
// attach pipeline (attachVia) with two differences: the lease was made by
// IPAM before the endpoint was named (renamed in the pipeline), and the
// plumbing leaves the veth's container end in the host for Docker to move
// (ContainerSpec.HostPeer).

// dockerFile keeps the Docker networks zlmesh serves.
const dockerFile = "docker.json"

// pendingService is the service of a lease Docker's IPAM made and no
// endpoint took yet: not a valid service name, so never a real one.
const pendingService = "-docker-pending"

// Intervals of RoutineDocker.
const (
	dockerExpireEvery    = 30 * time.Second
	dockerReconcileEvery = 30 * time.Second
	// dockerReconcileGrace: an attachment younger than this is not
	// detached for missing in Docker's lists (an endpoint between
	// CreateEndpoint and Join is not listed yet).
	dockerReconcileGrace = time.Minute
)

// dockerServer is the running plugin.
type dockerServer struct {
	plugin *dockerplugin.Plugin
	ln     net.Listener
	srv    *http.Server
}

// startDockerPlugin serves Docker's driver protocols on
// Config.DockerPluginSocket when Config.DockerPlugin is set.
func (n *Node) startDockerPlugin() error {
	if !n.cfg.DockerPlugin {
		return nil
	}
	if n.containers == nil {
		return fmt.Errorf("--docker-plugin: %w", bridge.ErrUnsupported)
	}
	var docker dockerplugin.DockerAPI
	if n.cfg.DockerSocket != "-" {
		docker = dockerplugin.NewEngineAPI(n.cfg.DockerSocket)
	}
	p, err := dockerplugin.New(dockerplugin.Config{
		Node:   dockerNode{n},
		Docker: docker,
		Store:  dockerplugin.FileStore{Path: filepath.Join(n.cfg.StateDir, dockerFile)},
		Logger: n.log.With("component", "docker"),
	})
	if err != nil {
		return err
	}
	path := n.cfg.DockerPluginSocket
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("docker plugin socket: %w", err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("docker plugin socket: remove stale %s: %w", path, err)
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		return fmt.Errorf("docker plugin socket: %w", err)
	}
	d := &dockerServer{plugin: p, ln: ln, srv: &http.Server{Handler: p.Handler(), ReadHeaderTimeout: 10 * time.Second}}
	n.docker = d
	n.undo = append(n.undo, func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		d.srv.Shutdown(ctx)
		cancel()
		os.Remove(path)
	})
	go d.srv.Serve(ln)
	n.goLoop("RoutineDocker", n.routineDocker)
	n.log.Info("docker plugin serving", "socket", path, "driver", dockerplugin.DriverName, "docker_api", n.cfg.DockerSocket)
	return nil
}

// routineDocker releases IPAM leases no endpoint took, and detaches
// endpoints Docker no longer has (a dockerd restart or crash).
func (n *Node) routineDocker() {
	expire := time.NewTicker(dockerExpireEvery)
	defer expire.Stop()
	reconcile := time.NewTicker(dockerReconcileEvery)
	defer reconcile.Stop()
	for {
		select {
		case <-n.stop:
			return
		case <-expire.C:
			n.docker.plugin.ExpirePending()
		case <-reconcile.C:
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			if _, err := n.docker.plugin.Reconcile(ctx, dockerReconcileGrace); err != nil {
				n.log.Debug("docker: reconcile", "err", err) // dockerd down or starting
			}
			cancel()
		}
	}
}

// dockerNode is the node as package dockerplugin uses it.
type dockerNode struct{ n *Node }

var _ dockerplugin.Node = dockerNode{}

func (d dockerNode) Pool(v6 bool) (netip.Prefix, netip.Prefix, bool) {
	c := d.n.pool.Cluster()
	if c.Addr().Is6() != v6 {
		return netip.Prefix{}, netip.Prefix{}, false
	}
	return c, gatewayFor(c.Addr()), true
}

func (d dockerNode) Reserve(key string) (netip.Addr, error) {
	d.n.renumberMu.RLock()
	defer d.n.renumberMu.RUnlock()
	l, err := d.n.allocate(pendingService, key)
	if err != nil {
		return netip.Addr{}, attachError(api.AttachRequest{Service: "(docker ipam)", Container: key}, err)
	}
	return l.Addr, nil
}

func (d dockerNode) Unreserve(key string) error {
	if _, ok := d.n.attach.get(key); ok {
		return nil
	}
	if _, _, err := d.n.alloc.Release(key); err != nil {
		return fmt.Errorf("release docker ipam lease %s: %w", key, err)
	}
	return nil
}

func (d dockerNode) Attach(ctx context.Context, ep dockerplugin.Endpoint) (dockerplugin.Attachment, error) {
	req := api.AttachRequest{Service: ep.Service, Container: ep.Container}
	if _, err := d.n.attachVia(ctx, req, attachHow{reserved: ep.Reserved, hostPeer: bridge.HostPeerName(ep.Container), mtu: ep.MTU}); err != nil {
		return dockerplugin.Attachment{}, err
	}
	at, _ := d.Attachment(ep.Container)
	return at, nil
}

func (d dockerNode) Attachment(container string) (dockerplugin.Attachment, bool) {
	at, ok := d.n.attach.get(container)
	if !ok {
		return dockerplugin.Attachment{}, false
	}
	return dockerAttachment(at), true
}

func dockerAttachment(at attachment) dockerplugin.Attachment {
	return dockerplugin.Attachment{
		Container: at.Spec.Container,
		Service:   at.Spec.Service,
		Address:   at.Spec.Address,
		Gateway:   at.Spec.Gateway,
		Address6:  at.Spec.Address6,
		Gateway6:  gatewayFor6(at.Spec.Address6),
		Peer:      at.Spec.HostPeer,
		HostVeth:  at.Attached.HostVeth,
		Created:   at.CreatedAt,
	}
}

func (d dockerNode) Attachments() []dockerplugin.Attachment {
	var out []dockerplugin.Attachment
	for _, at := range d.n.attach.list() {
		if at.Spec.HostPeer != "" && strings.HasPrefix(at.Spec.Container, dockerplugin.ContainerPrefix) {
			out = append(out, dockerAttachment(at))
		}
	}
	return out
}

func (d dockerNode) Detach(ctx context.Context, container string) error {
	return d.n.Detach(ctx, container, "docker endpoint deleted")
}

func (d dockerNode) Publish(container string, p dockerplugin.Port) error {
	_, err := d.n.Publish(api.PublishRequest{Container: container, Protocol: p.Proto, HostPort: p.HostPort,
		ContainerPort: p.ContainerPort, HostAddress: p.HostAddress})
	return err
}

// bridgeKeeper is the optional part of Containers that keeps the bridges
// of services with no container (bridgeContainers, over
// bridge.Manager.KeepBridges).
type bridgeKeeper interface {
	KeepBridges(services []string) []string
}

// KeepBridges keeps the bridges of the services of Docker's networks, and
// removes those no longer kept that have no port left.
func (d dockerNode) KeepBridges(services []string) {
	d.n.keepBridges(services)
}

func (n *Node) keepBridges(services []string) {
	k, ok := n.containers.(bridgeKeeper)
	if !ok {
		return
	}
	for _, br := range k.KeepBridges(services) {
		if removed, err := n.containers.RemoveBridgeIfEmpty(br); err != nil {
			n.log.Warn("docker: remove the bridge of a service no network keeps", "bridge", br, "err", err)
		} else if removed {
			n.log.Info("docker: removed the bridge of a service no network keeps", "bridge", br)
		}
	}
}

// keepDockerBridges runs at start, before adoption: the services of the
// saved Docker networks keep their bridges (the plugin, started later,
// tells the same set again). It returns their bridge names.
func (n *Node) keepDockerBridges() map[string]bool {
	kept := map[string]bool{}
	if !n.cfg.DockerPlugin {
		return kept
	}
	st, err := dockerplugin.FileStore{Path: filepath.Join(n.cfg.StateDir, dockerFile)}.Load()
	if err != nil {
		n.log.Warn("docker: saved networks unreadable; their bridges are not kept", "err", err)
		return kept
	}
	var services []string
	for _, nw := range st.Networks {
		if nw.Service != "" {
			services = append(services, nw.Service)
			kept[bridge.BridgeName(nw.Service)] = true
		}
	}
	if k, ok := n.containers.(bridgeKeeper); ok {
		k.KeepBridges(services)
	}
	return kept
}

func (d dockerNode) UnpublishAll(container string) error {
	d.n.unpublishContainer(container)
	return nil
}

// gatewayFor6 is the IPv6 gateway of a container holding addr6; the zero
// Prefix when it has no IPv6 address.
func gatewayFor6(addr6 netip.Prefix) netip.Prefix {
	if !addr6.IsValid() {
		return netip.Prefix{}
	}
	return gatewayFor(addr6.Addr())
}
