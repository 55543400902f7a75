package node

import (
	"fmt"
	"io"
	"sort"
	"sync"
	"time"
)

// guestAddBuckets are the upper bounds, in seconds, of the guest add latency
// histogram.
var guestAddBuckets = []float64{0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5}

// guestAddHist is the guest add latency histogram.
type guestAddHist struct {
	mu     sync.Mutex
	counts [12]uint64 // per bucket, plus +Inf at the end
	sum    float64
	total  uint64
}

func (m *metrics) observeGuestAdd(d time.Duration) {
	h := &m.guestAdd
	s := d.Seconds()
	h.mu.Lock()
	defer h.mu.Unlock()
	h.counts[sort.SearchFloat64s(guestAddBuckets, s)]++
	h.sum += s
	h.total++
}

// writeGuestMetrics writes the guests' metrics in Prometheus text format:
// their number, the add latency, and per guest what the peers have
// (last handshake, bytes each way).
func (n *Node) writeGuestMetrics(w io.Writer) {
	gs, err := n.Guests()
	if err != nil {
		return
	}
	fmt.Fprintln(w, "# HELP zlmesh_guests Guests (plain WireGuard clients) of this node.")
	fmt.Fprintln(w, "# TYPE zlmesh_guests gauge")
	fmt.Fprintf(w, "zlmesh_guests %d\n", len(gs))
	fmt.Fprintln(w, "# HELP zlmesh_guest_last_handshake_seconds Unix time of the last WireGuard handshake with a guest (0: none).")
	fmt.Fprintln(w, "# TYPE zlmesh_guest_last_handshake_seconds gauge")
	for _, g := range gs {
		var t int64
		if !g.LastHandshake.IsZero() {
			t = g.LastHandshake.Unix()
		}
		fmt.Fprintf(w, "zlmesh_guest_last_handshake_seconds{guest=%q} %d\n", g.Name, t)
	}
	fmt.Fprintln(w, "# HELP zlmesh_guest_receive_bytes_total Bytes received from a guest over WireGuard.")
	fmt.Fprintln(w, "# TYPE zlmesh_guest_receive_bytes_total counter")
	for _, g := range gs {
		fmt.Fprintf(w, "zlmesh_guest_receive_bytes_total{guest=%q} %d\n", g.Name, g.RxBytes)
	}
	fmt.Fprintln(w, "# HELP zlmesh_guest_transmit_bytes_total Bytes sent to a guest over WireGuard.")
	fmt.Fprintln(w, "# TYPE zlmesh_guest_transmit_bytes_total counter")
	for _, g := range gs {
		fmt.Fprintf(w, "zlmesh_guest_transmit_bytes_total{guest=%q} %d\n", g.Name, g.TxBytes)
	}
	h := &n.metrics.guestAdd
	h.mu.Lock()
	defer h.mu.Unlock()
	fmt.Fprintln(w, "# HELP zlmesh_guest_add_duration_seconds Time to add a guest, from request to answer.")
	fmt.Fprintln(w, "# TYPE zlmesh_guest_add_duration_seconds histogram")
	var cum uint64
	for i, b := range guestAddBuckets {
		cum += h.counts[i]
		fmt.Fprintf(w, "zlmesh_guest_add_duration_seconds_bucket{le=\"%g\"} %d\n", b, cum)
	}
	fmt.Fprintf(w, "zlmesh_guest_add_duration_seconds_bucket{le=\"+Inf\"} %d\n", h.total)
	fmt.Fprintf(w, "zlmesh_guest_add_duration_seconds_sum %g\n", h.sum)
	fmt.Fprintf(w, "zlmesh_guest_add_duration_seconds_count %d\n", h.total)
}
