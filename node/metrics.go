package node

import (
	"errors"
	"math"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/zlmesh/zlmesh/api"
	"github.com/zlmesh/zlmesh/dnsd"
	"github.com/zlmesh/zlmesh/mesh"
	"github.com/zlmesh/zlmesh/natd"
)

// attachBuckets are the upper bounds, in seconds, of the attach latency
// histogram.
var attachBuckets = []float64{0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5}

// dnsBuckets are the upper bounds, in seconds, of the DNS answer latency
// histogram: zone answers take microseconds, forwarded ones milliseconds
// up to the forwarding timeout.
var dnsBuckets = []float64{0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5}

// metrics is the node's Prometheus registry. Counters and histograms of
// events are updated where the events happen (the methods below); the rest
// (members, peers, store, DNS counters, …) is read from its source at each
// scrape by nodeCollector. The README's metrics table documents every name.
//
// Every method is safe for concurrent use and never blocks on I/O; the event
// methods do nothing on a nil *metrics (tests build Nodes without one).
type metrics struct {
	reg *prometheus.Registry

	attach       prometheus.Histogram
	attachErrors *prometheus.CounterVec // by api error code
	detachErrors *prometheus.CounterVec // by api error code
	blocksHeld   prometheus.Gauge
	conflicts    *prometheus.CounterVec // result: won, lost
	renumberedC  prometheus.Counter
	dnsAnswer    *prometheus.HistogramVec // path: local, forwarded
	natRules     *prometheus.GaugeVec     // kind: natd.Kind
	guestAdd     prometheus.Histogram     // guests_metrics.go

	collectorOnce sync.Once
}

func newMetrics() *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		attach: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "zlmesh_attach_duration_seconds", Help: "Time to attach a container, from request to answer.",
			Buckets: attachBuckets,
		}),
		attachErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "zlmesh_attach_errors_total", Help: "Attach requests that failed, by error code of the control API.",
		}, []string{"code"}),
		detachErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "zlmesh_detach_errors_total", Help: "Detach requests that failed, by error code of the control API.",
		}, []string{"code"}),
		blocksHeld: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "zlmesh_blocks_held", Help: "Address blocks this node holds a claim on.",
		}),
		conflicts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "zlmesh_claim_conflicts_total", Help: "Conflicts over an address block this node held, by result: won (kept it) or lost (moved).",
		}, []string{"result"}),
		renumberedC: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "zlmesh_renumbered_containers_total", Help: "Attached containers moved to a new address after a lost claim conflict.",
		}),
		dnsAnswer: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "zlmesh_dns_answer_duration_seconds", Help: "Time the mesh DNS took to answer a query, by path: local (zone or cache) or forwarded (an upstream was asked).",
			Buckets: dnsBuckets,
		}, []string{"path"}),
		natRules: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "zlmesh_nat_rules", Help: "NAT rules in this node's nftables table as last applied, by kind (publish: one per published port).",
		}, []string{"kind"}),
		guestAdd: newGuestAddHistogram(),
	}
	for _, r := range []string{"won", "lost"} {
		m.conflicts.WithLabelValues(r)
	}
	for _, p := range []string{"local", "forwarded"} {
		m.dnsAnswer.WithLabelValues(p)
	}
	m.reg.MustRegister(
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		collectors.NewGoCollector(),
		m.attach, m.attachErrors, m.detachErrors, m.blocksHeld, m.conflicts, m.renumberedC, m.dnsAnswer, m.natRules,
		m.guestAdd,
	)
	return m
}

// observeAttach records one successful attach that took d.
func (m *metrics) observeAttach(d time.Duration) {
	if m != nil {
		m.attach.Observe(d.Seconds())
	}
}

// attachFailed and detachFailed count a failed request by its API code.
func (m *metrics) attachFailed(err error) {
	if m != nil {
		m.attachErrors.WithLabelValues(errorCode(err)).Inc()
	}
}
func (m *metrics) detachFailed(err error) {
	if m != nil {
		m.detachErrors.WithLabelValues(errorCode(err)).Inc()
	}
}

// setBlocksHeld sets how many address blocks this node holds.
func (m *metrics) setBlocksHeld(n int) {
	if m != nil {
		m.blocksHeld.Set(float64(n))
	}
}

// conflictWon and conflictLost count a claim conflict over a block this node
// held, kept or lost.
func (m *metrics) conflictWon() {
	if m != nil {
		m.conflicts.WithLabelValues("won").Inc()
	}
}
func (m *metrics) conflictLost() {
	if m != nil {
		m.conflicts.WithLabelValues("lost").Inc()
	}
}

// renumbered counts n containers moved to a new address.
func (m *metrics) renumbered(n int) {
	if m != nil {
		m.renumberedC.Add(float64(n))
	}
}

// observeDNS records one mesh DNS answer (dnsd.Config.Observe).
func (m *metrics) observeDNS(d time.Duration, forwarded bool) {
	if m == nil {
		return
	}
	path := "local"
	if forwarded {
		path = "forwarded"
	}
	m.dnsAnswer.WithLabelValues(path).Observe(d.Seconds())
}

// natApplied records the rules of cfg, just applied to the NAT table; a
// nil cfg means the table was purged.
func (m *metrics) natApplied(cfg *natd.Config) {
	if m == nil {
		return
	}
	m.natRules.Reset()
	if cfg == nil {
		return
	}
	rules, err := natd.Plan(*cfg)
	if err != nil {
		return // Set accepted it: cannot happen
	}
	for _, k := range []natd.Kind{natd.KindPublish, natd.KindHairpin, natd.KindOverlaySNAT, natd.KindMasquerade} {
		m.natRules.WithLabelValues(k.String())
	}
	for _, r := range rules {
		m.natRules.WithLabelValues(r.Kind.String()).Inc()
	}
}

// errorCode is the control API code of err (CodeInternal for a plain error).
func errorCode(err error) string {
	var ae *api.Error
	if errors.As(err, &ae) {
		return ae.Code
	}
	return api.CodeInternal
}

// MetricsHandler serves the node's metrics in the Prometheus exposition
// formats (text, or OpenMetrics when the scraper asks for it): the node's
// own, and the Go runtime and process collectors. The control socket serves
// it at /metrics; `zlmesh up --metrics-listen` serves it over TCP.
func (n *Node) MetricsHandler() http.Handler {
	n.metrics.collectorOnce.Do(func() { n.metrics.reg.MustRegister((*nodeCollector)(n)) })
	return promhttp.HandlerFor(n.metrics.reg, promhttp.HandlerOpts{
		EnableOpenMetrics: true,
		ErrorHandling:     promhttp.ContinueOnError,
		Timeout:           10 * time.Second,
	})
}

// handleMetrics serves GET /metrics on the control socket.
func (n *Node) handleMetrics(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet {
		writeError(w, api.Errorf(api.CodeMethodNotAllow, "%s not allowed on %s", r.Method, r.URL.Path))
		return
	}
	n.MetricsHandler().ServeHTTP(w, r)
}

// nodeCollector reads, at each scrape, what the node's parts already count
// or hold: gossip members and counters, the record store, WireGuard peers,
// attachments, leases and the mesh DNS counters.
type nodeCollector Node

var (
	descMembers       = prometheus.NewDesc("zlmesh_members", "Cluster members by gossip state, this node included.", []string{"state"}, nil)
	descSuspected     = prometheus.NewDesc("zlmesh_member_suspect_transitions_total", "Members this node's failure detector moved from alive to suspect.", nil, nil)
	descDied          = prometheus.NewDesc("zlmesh_member_dead_transitions_total", "Members seen going from alive to dead (failed probes; a graceful leave is not counted).", nil, nil)
	descRejoins       = prometheus.NewDesc("zlmesh_rejoins_total", "Attempts to re-join a remembered peer or seed that was not alive, by result: ok or failed.", []string{"result"}, nil)
	descAlone         = prometheus.NewDesc("zlmesh_alone", "1 when this node is the only alive member although it remembers peers (partitioned, or they are all down).", nil, nil)
	descKnownPeers    = prometheus.NewDesc("zlmesh_known_peers", "Peers remembered in the state dir, for re-joining.", nil, nil)
	descRecords       = prometheus.NewDesc("zlmesh_store_records", "Live records in the replicated store, by kind.", []string{"kind"}, nil)
	descTombstones    = prometheus.NewDesc("zlmesh_store_tombstones", "Deleted records the replicated store still keeps (until their TTL).", nil, nil)
	descQueue         = prometheus.NewDesc("zlmesh_gossip_queue_depth", "Record broadcasts waiting to be gossiped.", nil, nil)
	descLastHandshake = prometheus.NewDesc("zlmesh_peer_last_handshake_seconds", "Unix time of the last WireGuard handshake with a peer (0: none).", []string{"peer"}, nil)
	descHandshakeAge  = prometheus.NewDesc("zlmesh_peer_handshake_age_seconds", "Seconds since the last WireGuard handshake with a peer (+Inf: none yet).", []string{"peer"}, nil)
	descRx            = prometheus.NewDesc("zlmesh_peer_receive_bytes_total", "Bytes received from a peer over WireGuard.", []string{"peer"}, nil)
	descTx            = prometheus.NewDesc("zlmesh_peer_transmit_bytes_total", "Bytes sent to a peer over WireGuard.", []string{"peer"}, nil)
	descAttachments   = prometheus.NewDesc("zlmesh_attachments", "Containers attached on this node.", nil, nil)
	descLeases        = prometheus.NewDesc("zlmesh_leases", "Addresses leased from this node's blocks (containers and guests).", nil, nil)
	descDNS           = map[string]*prometheus.Desc{}
)

// dnsCounters are the mesh DNS counters (dnsd.Stats) by metric name.
var dnsCounters = []struct {
	name, help string
	get        func(dnsd.Stats) uint64
}{
	{"zlmesh_dns_queries_total", "Mesh DNS queries answered (packet path and listeners).", func(s dnsd.Stats) uint64 { return s.Queries }},
	{"zlmesh_dns_local_total", "Mesh DNS queries answered from the mesh zone, negative answers included.", func(s dnsd.Stats) uint64 { return s.Local }},
	{"zlmesh_dns_forwarded_total", "Mesh DNS queries answered by an upstream exchange (cache misses).", func(s dnsd.Stats) uint64 { return s.Forwarded }},
	{"zlmesh_dns_cache_hits_total", "Mesh DNS queries answered from the forwarding cache.", func(s dnsd.Stats) uint64 { return s.CacheHits }},
	{"zlmesh_dns_servfail_total", "Mesh DNS queries answered SERVFAIL (no upstream answered).", func(s dnsd.Stats) uint64 { return s.ServFail }},
	{"zlmesh_dns_formerr_total", "Malformed mesh DNS queries (FORMERR, NOTIMP or BADVERS).", func(s dnsd.Stats) uint64 { return s.FormErr }},
	{"zlmesh_dns_dropped_total", "Mesh DNS messages dropped unanswered.", func(s dnsd.Stats) uint64 { return s.Dropped }},
	{"zlmesh_dns_upstream_failures_total", "Failed attempts at one DNS upstream (timeout, network error, unusable answer).", func(s dnsd.Stats) uint64 { return s.UpstreamFailures }},
}

func init() {
	for _, c := range dnsCounters {
		descDNS[c.name] = prometheus.NewDesc(c.name, c.help, nil, nil)
	}
}

func (c *nodeCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descMembers, descSuspected, descDied, descRejoins, descAlone, descKnownPeers,
		descRecords, descTombstones, descQueue, descLastHandshake, descHandshakeAge, descRx, descTx, descAttachments, descLeases} {
		ch <- d
	}
	for _, d := range descDNS {
		ch <- d
	}
	for _, d := range guestDescs {
		ch <- d
	}
}

func (c *nodeCollector) Collect(ch chan<- prometheus.Metric) {
	n := (*Node)(c)
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	counter := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v, labels...)
	}

	states := map[mesh.MemberState]int{}
	for _, m := range n.mesh.Members() {
		states[m.State]++
	}
	for _, s := range []mesh.MemberState{mesh.StateAlive, mesh.StateSuspect, mesh.StateDead, mesh.StateLeft} {
		gauge(descMembers, float64(states[s]), string(s))
	}
	st := n.mesh.Stats()
	counter(descSuspected, float64(st.Suspected))
	counter(descDied, float64(st.Died))
	counter(descRejoins, float64(st.Rejoins), "ok")
	counter(descRejoins, float64(st.RejoinFailures), "failed")
	alone := 0.0
	if n.mesh.Alone() {
		alone = 1
	}
	gauge(descAlone, alone)
	gauge(descKnownPeers, float64(len(n.mesh.KnownPeers())))
	for kind, count := range st.Records {
		gauge(descRecords, float64(count), kind)
	}
	gauge(descTombstones, float64(st.Tombstones))
	gauge(descQueue, float64(st.QueueDepth))

	if peers, err := n.Peers(); err == nil {
		now := time.Now()
		for _, p := range peers {
			last, age := 0.0, math.Inf(1)
			if !p.LastHandshake.IsZero() {
				last = float64(p.LastHandshake.Unix())
				age = now.Sub(p.LastHandshake).Seconds()
			}
			gauge(descLastHandshake, last, p.Name)
			gauge(descHandshakeAge, age, p.Name)
			counter(descRx, float64(p.RxBytes), p.Name)
			counter(descTx, float64(p.TxBytes), p.Name)
		}
	}
	gauge(descAttachments, float64(n.attach.len()))
	gauge(descLeases, float64(len(n.alloc.Leases())))
	n.collectGuests(ch)
	if n.dns != nil {
		ds := n.dns.Stats()
		for _, d := range dnsCounters {
			counter(descDNS[d.name], float64(d.get(ds)))
		}
	}
}
