package node

import (
	"encoding/json"
	"slices"
	"strings"

	"github.com/zlmesh/zlmesh/api"
)

// serviceKind is the record-store kind of service endpoints; the key is
// "<node>/<container>" and the value an api.ServiceEndpoint.
const serviceKind = "svc"

func (n *Node) serviceKey(container string) string { return n.cfg.Name + "/" + container }

func (n *Node) putServiceRecord(at attachment) {
	v, _ := json.Marshal(api.ServiceEndpoint{
		Service:   at.Spec.Service,
		Container: at.Spec.Container,
		Address:   at.Spec.Address.Addr().String(),
		Address6:  address6(at),
		Node:      n.cfg.Name,
	})
	n.mesh.Store().Put(serviceKind, n.serviceKey(at.Spec.Container), v)
}

// Services lists every service endpoint in the cluster whose node is alive.
func (n *Node) Services() []api.ServiceEndpoint {
	out := append([]api.ServiceEndpoint{}, records[api.ServiceEndpoint](n, serviceKind, n.mesh.Alive)...)
	slices.SortFunc(out, func(a, b api.ServiceEndpoint) int {
		if c := strings.Compare(a.Service, b.Service); c != 0 {
			return c
		}
		return strings.Compare(a.Container, b.Container)
	})
	return out
}

// address6 is the attachment's IPv6 address as service records carry it
// ("" when it has none).
func address6(at attachment) string {
	if !at.Spec.Address6.IsValid() {
		return ""
	}
	return at.Spec.Address6.Addr().String()
}
