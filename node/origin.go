package node

// Attachments made for another program (the CNI plugin): their origin, and
// namespaces handed over as a file descriptor of the caller's.

import (
	"regexp"
	"unicode"
	"unicode/utf8"

	"github.com/zlmesh/zlmesh/api"
)

// maxOriginField bounds every field of an api.Origin but Kind.
const maxOriginField = 256

var originKindRE = regexp.MustCompile(`^[a-z0-9-]{1,32}$`)

// validateOrigin checks an attach request's origin (nil is fine) against
// the rules in api.Origin.
func validateOrigin(o *api.Origin) error {
	if o == nil {
		return nil
	}
	if !originKindRE.MatchString(o.Kind) {
		return api.Errorf(api.CodeBadRequest, "origin kind %q: want 1 to 32 characters of a-z, 0-9 and '-'", o.Kind)
	}
	for _, f := range []struct{ name, v string }{
		{"network", o.Network}, {"container_id", o.ContainerID}, {"ifname", o.Ifname}, {"netns", o.Netns},
	} {
		if len(f.v) > maxOriginField {
			return api.Errorf(api.CodeBadRequest, "origin %s is %d bytes, more than %d", f.name, len(f.v), maxOriginField)
		}
		if !utf8.ValidString(f.v) {
			return api.Errorf(api.CodeBadRequest, "origin %s is not UTF-8", f.name)
		}
		for _, r := range f.v {
			if unicode.IsControl(r) {
				return api.Errorf(api.CodeBadRequest, "origin %s %q has a control character", f.name, f.v)
			}
		}
	}
	return nil
}

// handlePathRE matches a namespace path that is a file descriptor of some
// process (/proc/<pid>/fd/<n>, /proc/self/fd/<n>, /dev/fd/<n>): good while
// that process keeps it open, meaningless (or another namespace, once the
// pid or fd number is reused) afterwards.
var handlePathRE = regexp.MustCompile(`^(/proc/([0-9]+|self|thread-self)(/task/[0-9]+)?/fd|/dev/fd)/[0-9]+$`)

// isHandlePath reports whether path names a namespace through a process's
// file descriptor (see handlePathRE).
func isHandlePath(path string) bool { return handlePathRE.MatchString(path) }

// reachable reports whether the node can open at's namespace by what it
// recorded: a PID, or a path that is not a handle path. An attachment made
// through a handle path whose runtime path the node cannot see is not: the
// node knows it only by its veth (see api.AttachRequest).
func reachable(s ContainerSpec) bool { return s.PID != 0 || !isHandlePath(s.Netns) }

// durableSpec returns the spec to record after an attach made with spec: the
// same, except that a handle path is replaced by the origin's namespace path
// when that path, seen from the node, is the namespace that was attached
// (id). Otherwise the handle path stays, and reachable says so.
func (n *Node) durableSpec(spec ContainerSpec, o *api.Origin, id NamespaceID) ContainerSpec {
	if spec.PID != 0 || !isHandlePath(spec.Netns) || o == nil || o.Netns == "" || isHandlePath(o.Netns) || id.IsZero() {
		return spec
	}
	cand := spec
	cand.Netns = o.Netns
	if ok, err := n.containers.Alive(cand, id); err == nil && ok {
		return cand
	}
	n.log.Info("attached through a namespace handle; the runtime's namespace path is not visible here, so the container is known by its veth",
		"container", spec.Container, "handle", spec.Netns, "netns", o.Netns)
	return spec
}

// aliveCheck answers, for one sweep or one adoption pass, whether the
// namespaces of attachments are alive. Reachable ones are asked of
// Containers.Alive; the others are alive while their host veth exists (a
// namespace's end takes its veth pair with it), from one inventory taken on
// first need.
type aliveCheck struct {
	n     *Node
	veths map[string]bool // nil until the inventory is taken
}

func (n *Node) newAliveCheck() *aliveCheck { return &aliveCheck{n: n} }

func (c *aliveCheck) alive(at attachment) (bool, error) {
	if reachable(at.Spec) {
		return c.n.containers.Alive(at.Spec, at.Attached.NetnsID)
	}
	if c.veths == nil {
		inv, err := c.n.containers.Inventory()
		if err != nil {
			return false, err
		}
		c.veths = map[string]bool{}
		for _, v := range inv.Links {
			if !v.Stray {
				c.veths[v.Name] = true
			}
		}
	}
	return c.veths[at.Attached.HostVeth], nil
}
