package node

import (
	"fmt"
	"io"
	"net/http"
	"sort"
	"sync"
	"time"

	"github.com/zlmesh/zlmesh/dnsd"
	"github.com/zlmesh/zlmesh/mesh"
)

// attachBuckets are the upper bounds, in seconds, of the attach latency
// histogram.
var attachBuckets = []float64{0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5}

// metrics holds the node's own counters; everything else on /metrics is
// read from its source when scraped.
type metrics struct {
	mu           sync.Mutex
	attachCounts []uint64 // per bucket, plus +Inf at the end
	attachSum    float64
	attachTotal  uint64
	guestAdd     guestAddHist // guests_metrics.go
}

func newMetrics() *metrics {
	return &metrics{attachCounts: make([]uint64, len(attachBuckets)+1)}
}

func (m *metrics) observeAttach(d time.Duration) {
	s := d.Seconds()
	m.mu.Lock()
	defer m.mu.Unlock()
	i := sort.SearchFloat64s(attachBuckets, s)
	m.attachCounts[i]++
	m.attachSum += s
	m.attachTotal++
}

// writeAttach writes the attach latency histogram in Prometheus text format
// (cumulative buckets).
func (m *metrics) writeAttach(w io.Writer) {
	m.mu.Lock()
	defer m.mu.Unlock()
	fmt.Fprintln(w, "# HELP zlmesh_attach_duration_seconds Time to attach a container, from request to answer.")
	fmt.Fprintln(w, "# TYPE zlmesh_attach_duration_seconds histogram")
	var cum uint64
	for i, b := range attachBuckets {
		cum += m.attachCounts[i]
		fmt.Fprintf(w, "zlmesh_attach_duration_seconds_bucket{le=\"%g\"} %d\n", b, cum)
	}
	fmt.Fprintf(w, "zlmesh_attach_duration_seconds_bucket{le=\"+Inf\"} %d\n", m.attachTotal)
	fmt.Fprintf(w, "zlmesh_attach_duration_seconds_sum %g\n", m.attachSum)
	fmt.Fprintf(w, "zlmesh_attach_duration_seconds_count %d\n", m.attachTotal)
}

// writeDNS writes the mesh DNS counters (dnsd.Stats) in Prometheus text
// format. Every answered query counts in zlmesh_dns_queries_total and in at
// most one of the others but dropped.
func writeDNS(w io.Writer, st dnsd.Stats) {
	for _, c := range []struct {
		name, help string
		v          uint64
	}{
		{"queries", "Mesh DNS queries answered (packet path and listeners).", st.Queries},
		{"local", "Mesh DNS queries answered from the mesh zone, negative answers included.", st.Local},
		{"forwarded", "Mesh DNS queries answered by an upstream exchange (cache misses).", st.Forwarded},
		{"cache_hits", "Mesh DNS queries answered from the forwarding cache.", st.CacheHits},
		{"servfail", "Mesh DNS queries answered SERVFAIL (no upstream answered).", st.ServFail},
		{"formerr", "Malformed mesh DNS queries (FORMERR, NOTIMP or BADVERS).", st.FormErr},
		{"dropped", "Mesh DNS messages dropped unanswered.", st.Dropped},
	} {
		fmt.Fprintf(w, "# HELP zlmesh_dns_%s_total %s\n", c.name, c.help)
		fmt.Fprintf(w, "# TYPE zlmesh_dns_%s_total counter\n", c.name)
		fmt.Fprintf(w, "zlmesh_dns_%s_total %d\n", c.name, c.v)
	}
}

// handleMetrics serves GET /metrics in the Prometheus text format: members
// by state, WireGuard peers with their last handshake and bytes,
// attachments, address leases, the attach latency histogram and the mesh
// DNS counters.
func (n *Node) handleMetrics(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet {
		w.WriteHeader(http.StatusMethodNotAllowed)
		return
	}
	w.Header().Set("Content-Type", "text/plain; version=0.0.4")
	states := map[mesh.MemberState]int{mesh.StateAlive: 0, mesh.StateSuspect: 0, mesh.StateDead: 0, mesh.StateLeft: 0}
	for _, m := range n.mesh.Members() {
		states[m.State]++
	}
	fmt.Fprintln(w, "# HELP zlmesh_members Cluster members by gossip state, this node included.")
	fmt.Fprintln(w, "# TYPE zlmesh_members gauge")
	for _, s := range []mesh.MemberState{mesh.StateAlive, mesh.StateSuspect, mesh.StateDead, mesh.StateLeft} {
		fmt.Fprintf(w, "zlmesh_members{state=%q} %d\n", s, states[s])
	}
	peers, err := n.Peers()
	if err == nil {
		fmt.Fprintln(w, "# HELP zlmesh_peer_last_handshake_seconds Unix time of the last WireGuard handshake with a peer (0: none).")
		fmt.Fprintln(w, "# TYPE zlmesh_peer_last_handshake_seconds gauge")
		for _, p := range peers {
			var t int64
			if !p.LastHandshake.IsZero() {
				t = p.LastHandshake.Unix()
			}
			fmt.Fprintf(w, "zlmesh_peer_last_handshake_seconds{peer=%q} %d\n", p.Name, t)
		}
		fmt.Fprintln(w, "# HELP zlmesh_peer_receive_bytes_total Bytes received from a peer over WireGuard.")
		fmt.Fprintln(w, "# TYPE zlmesh_peer_receive_bytes_total counter")
		for _, p := range peers {
			fmt.Fprintf(w, "zlmesh_peer_receive_bytes_total{peer=%q} %d\n", p.Name, p.RxBytes)
		}
		fmt.Fprintln(w, "# HELP zlmesh_peer_transmit_bytes_total Bytes sent to a peer over WireGuard.")
		fmt.Fprintln(w, "# TYPE zlmesh_peer_transmit_bytes_total counter")
		for _, p := range peers {
			fmt.Fprintf(w, "zlmesh_peer_transmit_bytes_total{peer=%q} %d\n", p.Name, p.TxBytes)
		}
	}
	fmt.Fprintln(w, "# HELP zlmesh_attachments Containers attached on this node.")
	fmt.Fprintln(w, "# TYPE zlmesh_attachments gauge")
	fmt.Fprintf(w, "zlmesh_attachments %d\n", n.attach.len())
	fmt.Fprintln(w, "# HELP zlmesh_leases Container addresses leased from this node's blocks.")
	fmt.Fprintln(w, "# TYPE zlmesh_leases gauge")
	fmt.Fprintf(w, "zlmesh_leases %d\n", len(n.alloc.Leases()))
	n.metrics.writeAttach(w)
	n.writeGuestMetrics(w)
	if n.dns != nil {
		writeDNS(w, n.dns.Stats())
	}
}
