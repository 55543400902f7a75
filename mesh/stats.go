package mesh

import (
	"strconv"
	"sync"
	"sync/atomic"

	gometrics "github.com/hashicorp/go-metrics"
)

// Stats are counters and gauges of one Mesh, for the node's metrics. The
// counters start at zero when the Mesh starts.
type Stats struct {
	// Suspected counts members this node's failure detector moved from
	// alive to suspect (memberlist's suspicion; a member may be refuted
	// and stay alive).
	Suspected uint64
	// Died counts members that went from alive to dead as seen here
	// (a graceful leave is not a death).
	Died uint64
	// Rejoins and RejoinFailures count attempts to join a remembered
	// peer or seed that is not alive: joined, or not.
	Rejoins, RejoinFailures uint64
	// Records counts the live records of the replicated store by kind;
	// Tombstones the deleted ones still kept.
	Records    map[string]int
	Tombstones int
	// QueueDepth is how many record broadcasts wait to be gossiped.
	QueueDepth int
	// DroppedEvents is DroppedEvents().
	DroppedEvents uint64
}

// meshCounters are the counters behind Stats.
type meshCounters struct {
	suspected, died, rejoins, rejoinFailures atomic.Uint64
}

// Stats returns the mesh's counters and gauges now.
func (m *Mesh) Stats() Stats {
	st := Stats{
		Suspected:      m.counters.suspected.Load(),
		Died:           m.counters.died.Load(),
		Rejoins:        m.counters.rejoins.Load(),
		RejoinFailures: m.counters.rejoinFailures.Load(),
		Records:        map[string]int{},
		QueueDepth:     m.queue.len(),
		DroppedEvents:  m.DroppedEvents(),
	}
	m.store.mu.Lock()
	for id, e := range m.store.recs {
		if e.rec.Deleted {
			st.Tombstones++
		} else {
			st.Records[id.kind]++
		}
	}
	m.store.mu.Unlock()
	return st
}

// memberlist tells about suspicion only through go-metrics' process-wide
// sink (the counter memberlist.msg.suspect, counted when a member goes from
// alive to suspect). Each Mesh gives its memberlist a label with its own
// id; one sink, installed on the first Start, hands those counts to the
// Mesh the label names.

const sinkLabel = "zlmesh_mesh"

var sink = struct {
	once sync.Once
	mu   sync.RWMutex
	next int
	byID map[string]*meshCounters
}{byID: map[string]*meshCounters{}}

// registerSink installs the sink if needed and returns the labels for m's
// memberlist config and a func that unregisters m.
func (m *Mesh) registerSink() ([]gometrics.Label, func()) {
	sink.once.Do(func() {
		conf := gometrics.DefaultConfig("")
		conf.HostName = ""
		conf.EnableHostname = false
		conf.EnableRuntimeMetrics = false
		gometrics.NewGlobal(conf, suspectSink{})
	})
	sink.mu.Lock()
	defer sink.mu.Unlock()
	sink.next++
	id := strconv.Itoa(sink.next)
	sink.byID[id] = &m.counters
	return []gometrics.Label{{Name: sinkLabel, Value: id}}, func() {
		sink.mu.Lock()
		delete(sink.byID, id)
		sink.mu.Unlock()
	}
}

// suspectSink is the go-metrics sink: it keeps memberlist.msg.suspect and
// drops everything else. It is called on memberlist's paths (every packet):
// it does no more than compare the key.
type suspectSink struct{}

func (suspectSink) IncrCounterWithLabels(key []string, _ float32, labels []gometrics.Label) {
	if len(key) != 3 || key[2] != "suspect" || key[1] != "msg" || key[0] != "memberlist" {
		return
	}
	for _, l := range labels {
		if l.Name == sinkLabel {
			sink.mu.RLock()
			c := sink.byID[l.Value]
			sink.mu.RUnlock()
			if c != nil {
				c.suspected.Add(1)
			}
		}
	}
}

func (suspectSink) SetGauge([]string, float32)                               {}
func (suspectSink) SetGaugeWithLabels([]string, float32, []gometrics.Label)  {}
func (suspectSink) EmitKey([]string, float32)                                {}
func (suspectSink) IncrCounter([]string, float32)                            {}
func (suspectSink) AddSample([]string, float32)                              {}
func (suspectSink) AddSampleWithLabels([]string, float32, []gometrics.Label) {}
