package testbed

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"time"

	"github.com/zlmesh/zlmesh/api"
)

// Container is a network namespace standing in for a container on a host:
// lo up, nothing else until zlmesh attaches it. Commands run in it through
// `ip netns exec`, which puts its resolv.conf (the mesh DNS address and
// search domain) in place. Its exported fields are fixed; methods are safe
// for concurrent use.
type Container struct {
	Name      string // "web1"
	Host      *Host
	NetnsName string // "zt-h1-web1"
	Netns     string // "/run/netns/zt-h1-web1", what AttachRequest.Netns takes
	// ResolvConf is /etc/netns/<NetnsName>/resolv.conf:
	// "nameserver <MeshDNS>" and "search <SearchDomain>".
	ResolvConf string

	tb *Testbed
	st *containerState
}

func (c *Container) String() string { return c.Host.Name + "/" + c.Name }

// ID is the container id the testbed attaches it under: its namespace name,
// unique on the machine.
func (c *Container) ID() string { return c.NetnsName }

func (tb *Testbed) newContainer(h *Host, cs *containerState) *Container {
	return &Container{
		Name:       cs.Name,
		Host:       h,
		NetnsName:  cs.Netns,
		Netns:      netnsPath(cs.Netns),
		ResolvConf: filepath.Join("/etc/netns", cs.Netns, "resolv.conf"),
		tb:         tb,
		st:         cs,
	}
}

// AddContainer makes container name on host h: the namespace
// <prefix>-<host>-<name> with lo up and its resolv.conf. name is 1-20
// lowercase letters or digits, starting with a letter, unique on the host.
// It does not attach it (see Attach). On error nothing is left behind.
func (tb *Testbed) AddContainer(ctx context.Context, h *Host, name string) (*Container, error) {
	if h == nil || h.tb != tb {
		return nil, fmt.Errorf("add container %s: host is not part of testbed %s", name, tb.Prefix)
	}
	if !containerRE.MatchString(name) {
		return nil, fmt.Errorf("add container %q on %s: want 1-20 lowercase letters or digits, starting with a letter", name, h.Name)
	}
	tb.mu.Lock()
	defer tb.mu.Unlock()
	if tb.closed {
		return nil, ErrClosed
	}
	ns := tb.Prefix + "-" + h.Name + "-" + name
	for _, c := range tb.containers {
		if c.NetnsName == ns {
			return nil, fmt.Errorf("add container %s on %s: %w", name, h.Name, ErrExists)
		}
	}
	if err := createNetns(ns); err != nil {
		return nil, fmt.Errorf("add container %s on %s: %w", name, h.Name, err)
	}
	etc := filepath.Join("/etc/netns", ns)
	resolv := fmt.Sprintf("# testbed %s: the mesh resolver\nnameserver %s\nsearch %s\n", tb.Prefix, tb.st.MeshDNS, tb.st.SearchDomain)
	mirror := filepath.Join(tb.mirrorDir(), ns)
	err := mirrorNetns(ns, tb.mirrorDir())
	if err == nil {
		err = os.MkdirAll(etc, 0o755)
	}
	if err == nil {
		err = os.WriteFile(filepath.Join(etc, "resolv.conf"), []byte(resolv), 0o644)
	}
	if err != nil {
		os.RemoveAll(etc)
		unmountFile(mirror)
		deleteNetns(ns)
		return nil, fmt.Errorf("add container %s on %s: %w", name, h.Name, err)
	}
	cs := &containerState{Name: name, Host: h.Name, Netns: ns}
	tb.st.Namespaces = append(tb.st.Namespaces, ns)
	tb.st.EtcNetns = append(tb.st.EtcNetns, ns)
	tb.st.Containers = append(tb.st.Containers, cs)
	c := tb.newContainer(h, cs)
	tb.containers = append(tb.containers, c)
	if err := tb.saveLocked(); err != nil {
		return nil, err // recorded in memory: Close removes it
	}
	tb.opts.Logf("testbed %s: container %s on %s (netns %s)", tb.Prefix, name, h.Name, ns)
	return c, nil
}

// Containers returns the containers in the order they were made. The slice
// is the caller's.
func (tb *Testbed) Containers() []*Container {
	tb.mu.Lock()
	defer tb.mu.Unlock()
	return slices.Clone(tb.containers)
}

// Container returns container name on host ("h1"), or nil.
func (tb *Testbed) Container(host, name string) *Container {
	tb.mu.Lock()
	defer tb.mu.Unlock()
	for _, c := range tb.containers {
		if c.Host.Name == host && c.Name == name {
			return c
		}
	}
	return nil
}

// Attach asks the container's host to attach it to service (through the
// host's control socket), under the id ID().
func (c *Container) Attach(ctx context.Context, service string) (api.Attachment, error) {
	return c.Host.Client().Attach(ctx, api.AttachRequest{Service: service, Container: c.ID(), Netns: c.Netns})
}

// Cmd returns a command that runs argv in the container, for callers that
// wire its input and output themselves.
func (c *Container) Cmd(ctx context.Context, argv ...string) *exec.Cmd {
	return command(ctx, containerArgv(c.NetnsName, argv))
}

// Exec runs argv in the container and returns its combined output; a
// non-zero exit is an error that carries the output.
func (c *Container) Exec(ctx context.Context, argv ...string) ([]byte, error) {
	if len(argv) == 0 {
		return nil, fmt.Errorf("exec in %s: empty command", c)
	}
	return run(c.Cmd(ctx, argv...), c.String(), argv)
}

// Ping sends one ICMP echo request from the container to addr (an IPv4 or IPv6
// address) and waits for the reply up to PingTimeout or until ctx ends. It
// uses a raw socket opened inside the container's network namespace, no ping
// binary.
func (c *Container) Ping(ctx context.Context, addr string) error {
	_, err := ping(ctx, c.NetnsName, addr)
	return err
}

// PingRTT is Ping that also returns the round-trip time.
func (c *Container) PingRTT(ctx context.Context, addr string) (time.Duration, error) {
	return ping(ctx, c.NetnsName, addr)
}

// StartProcess starts argv in the background in the container. It runs until
// Process.Stop, Remove or Close.
func (c *Container) StartProcess(ctx context.Context, argv ...string) (*Process, error) {
	return c.tb.startBackground(containerArgv(c.NetnsName, argv), argv, c.NetnsName)
}

// Remove kills the container's processes and deletes its namespace (which
// takes the veth zlmesh put in it along) and resolv.conf. It does not detach
// it from zlmesh. Removing a removed container succeeds.
func (c *Container) Remove() error {
	tb := c.tb
	tb.mu.Lock()
	defer tb.mu.Unlock()
	if tb.closed {
		return ErrClosed
	}
	if !slices.Contains(tb.containers, c) {
		return nil
	}
	var errs []error
	// Its recorded processes first: one just started may not have entered
	// the namespace yet.
	for _, p := range tb.st.Background {
		if p.Where == c.NetnsName {
			if err := killProc(p); err != nil {
				errs = append(errs, err)
			}
		}
	}
	if err := killNetnsProcs(c.NetnsName); err != nil {
		errs = append(errs, err)
	}
	if err := unmountFile(filepath.Join(tb.mirrorDir(), c.NetnsName)); err != nil {
		errs = append(errs, err)
	}
	if err := deleteNetns(c.NetnsName); err != nil {
		errs = append(errs, err)
	}
	if err := os.RemoveAll(filepath.Join("/etc/netns", c.NetnsName)); err != nil {
		errs = append(errs, err)
	}
	if len(errs) > 0 {
		return fmt.Errorf("remove container %s: %w", c, errors.Join(errs...))
	}
	tb.containers = slices.DeleteFunc(tb.containers, func(x *Container) bool { return x == c })
	tb.st.Containers = slices.DeleteFunc(tb.st.Containers, func(x *containerState) bool { return x == c.st })
	tb.st.Namespaces = slices.DeleteFunc(tb.st.Namespaces, func(n string) bool { return n == c.NetnsName })
	tb.st.EtcNetns = slices.DeleteFunc(tb.st.EtcNetns, func(n string) bool { return n == c.NetnsName })
	tb.st.Background = slices.DeleteFunc(tb.st.Background, func(p *procState) bool { return p.Where == c.NetnsName })
	tb.opts.Logf("testbed %s: container %s removed", tb.Prefix, c)
	return tb.saveLocked()
}
