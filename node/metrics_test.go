package node

import (
	"strings"
	"testing"

	"github.com/zlmesh/zlmesh/dnsd"
)

func TestWriteDNS(t *testing.T) {
	var b strings.Builder
	writeDNS(&b, dnsd.Stats{Queries: 7, Local: 3, Forwarded: 1, CacheHits: 2, ServFail: 1, FormErr: 4, Dropped: 5})
	for _, want := range []string{
		"# TYPE zlmesh_dns_queries_total counter\nzlmesh_dns_queries_total 7\n",
		"zlmesh_dns_local_total 3\n",
		"zlmesh_dns_forwarded_total 1\n",
		"zlmesh_dns_cache_hits_total 2\n",
		"zlmesh_dns_servfail_total 1\n",
		"zlmesh_dns_formerr_total 4\n",
		"zlmesh_dns_dropped_total 5\n",
	} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("missing %q in:\n%s", want, b.String())
		}
	}
	for _, line := range strings.Split(strings.TrimSpace(b.String()), "\n") {
		if !strings.HasPrefix(line, "#") && len(strings.Fields(line)) != 2 {
			t.Errorf("malformed sample line %q", line)
		}
	}
}
