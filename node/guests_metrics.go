package node

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// guestAddBuckets are the upper bounds, in seconds, of the guest add latency
// histogram.
var guestAddBuckets = []float64{0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5}

func newGuestAddHistogram() prometheus.Histogram {
	return prometheus.NewHistogram(prometheus.HistogramOpts{
		Name: "zlmesh_guest_add_duration_seconds", Help: "Time to add a guest, from request to answer.",
		Buckets: guestAddBuckets,
	})
}

// observeGuestAdd records one guest added in d.
func (m *metrics) observeGuestAdd(d time.Duration) {
	if m != nil {
		m.guestAdd.Observe(d.Seconds())
	}
}

var (
	descGuests             = prometheus.NewDesc("zlmesh_guests", "Guests (plain WireGuard clients) of this node.", nil, nil)
	descGuestLastHandshake = prometheus.NewDesc("zlmesh_guest_last_handshake_seconds", "Unix time of the last WireGuard handshake with a guest (0: none).", []string{"guest"}, nil)
	descGuestRx            = prometheus.NewDesc("zlmesh_guest_receive_bytes_total", "Bytes received from a guest over WireGuard.", []string{"guest"}, nil)
	descGuestTx            = prometheus.NewDesc("zlmesh_guest_transmit_bytes_total", "Bytes sent to a guest over WireGuard.", []string{"guest"}, nil)
	guestDescs             = []*prometheus.Desc{descGuests, descGuestLastHandshake, descGuestRx, descGuestTx}
)

// collectGuests emits the guests' metrics at a scrape: their number, and
// per guest what the WireGuard device has (last handshake, bytes each way).
func (n *Node) collectGuests(ch chan<- prometheus.Metric) {
	gs, err := n.Guests()
	if err != nil {
		return
	}
	ch <- prometheus.MustNewConstMetric(descGuests, prometheus.GaugeValue, float64(len(gs)))
	for _, g := range gs {
		var t float64
		if !g.LastHandshake.IsZero() {
			t = float64(g.LastHandshake.Unix())
		}
		ch <- prometheus.MustNewConstMetric(descGuestLastHandshake, prometheus.GaugeValue, t, g.Name)
		ch <- prometheus.MustNewConstMetric(descGuestRx, prometheus.CounterValue, float64(g.RxBytes), g.Name)
		ch <- prometheus.MustNewConstMetric(descGuestTx, prometheus.CounterValue, float64(g.TxBytes), g.Name)
	}
}
