package node

import (
	"context"
	"encoding/json"
	"strings"
	"time"

	"github.com/zlmesh/zlmesh/api"
)

// sweepEvery is how often attachments are checked for vanished namespaces
// and this node's service records for drift.
const sweepEvery = 2 * time.Second

// routineSweep detaches containers whose namespace is gone, and keeps this
// node's service records equal to its attachments (records written by an
// earlier life of this node come back through anti-entropy after a restart).
func (n *Node) routineSweep() {
	t := time.NewTicker(sweepEvery)
	defer t.Stop()
	for {
		select {
		case <-n.stop:
			return
		case <-t.C:
		}
		n.sweepOnce()
		n.reconcilePorts()
		n.releaseEmptyBlocks(time.Now())
	}
}

func (n *Node) sweepOnce() {
	check := n.newAliveCheck()
	for _, at := range n.attach.list() {
		alive, err := check.alive(at)
		if err != nil {
			n.log.Warn("check container namespace", "container", at.Spec.Container, "err", err)
			continue
		}
		if !alive {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			if err := n.Detach(ctx, at.Spec.Container, "namespace gone"); err != nil {
				n.log.Warn("sweep", "container", at.Spec.Container, "err", err)
			}
			cancel()
		}
	}
	n.syncServiceRecords()
}

// syncServiceRecords deletes this node's service records without an
// attachment and writes missing or stale ones.
func (n *Node) syncServiceRecords() {
	want := map[string]attachment{}
	for _, at := range n.attach.list() {
		want[n.serviceKey(at.Spec.Container)] = at
	}
	st := n.mesh.Store()
	for _, r := range st.List(serviceKind) {
		if r.Owner != n.cfg.Name && !strings.HasPrefix(r.Key, n.cfg.Name+"/") {
			continue
		}
		at, ok := want[r.Key]
		if !ok {
			st.Delete(serviceKind, r.Key)
			continue
		}
		var ep api.ServiceEndpoint
		if json.Unmarshal(r.Value, &ep) == nil && ep.Address == at.Spec.Address.Addr().String() && ep.Address6 == address6(at) && ep.Service == at.Spec.Service && r.Owner == n.cfg.Name {
			delete(want, r.Key)
		}
	}
	for _, at := range want {
		n.putServiceRecord(at)
	}
}
