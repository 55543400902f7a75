//go:build linux

package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/zlmesh/zlmesh/api"
	"github.com/zlmesh/zlmesh/testbed"
)

// scrapeEnv makes the test binary, started in a testbed namespace, GET the
// URL the variable names and print the Content-Type line, then the body.
// scrapeAcceptEnv is the Accept header to send (optional).
const (
	scrapeEnv       = "ZLMESH_E2E_SCRAPE"
	scrapeAcceptEnv = "ZLMESH_E2E_SCRAPE_ACCEPT"
)

// metricsPort is the --metrics-listen port of TestMetrics' hosts.
const metricsPort = "9474"

// promtoolFallback is where scripts/deps.sh puts promtool.
const promtoolFallback = "/var/cache/zlmesh-tools/bin/promtool"

func scrapeMain(url string) int {
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if a := os.Getenv(scrapeAcceptEnv); a != "" {
		req.Header.Set("Accept", a)
	}
	c := &http.Client{Timeout: 10 * time.Second}
	resp, err := c.Do(req)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		fmt.Fprintln(os.Stderr, resp.Status)
		return 1
	}
	fmt.Println(resp.Header.Get("Content-Type"))
	io.Copy(os.Stdout, resp.Body)
	return 0
}

// scrapeTCP GETs h's /metrics over TCP (--metrics-listen, on its underlay
// address) from the testbed's outside namespace, another namespace than
// h's, and returns the Content-Type and the body.
func scrapeTCP(t *testing.T, tb *testbed.Testbed, h *testbed.Host, accept string) (string, string) {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := tb.OutsideCmd(ctx, self)
	cmd.Env = append(os.Environ(), scrapeEnv+"=http://"+h.Underlay.String()+":"+metricsPort+"/metrics", scrapeAcceptEnv+"="+accept)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("scrape %s from the outside namespace: %v (%s)", h.Name, err, exitText(err))
	}
	ct, body, _ := strings.Cut(string(out), "\n")
	return ct, body
}

// sample returns the value of series (name plus its labels in the
// exposition's order, e.g. `x_total{result="lost"}`) in a text exposition.
func sample(body, series string) (float64, bool) {
	for _, line := range strings.Split(body, "\n") {
		if rest, ok := strings.CutPrefix(line, series+" "); ok {
			v, err := strconv.ParseFloat(strings.Fields(rest)[0], 64)
			return v, err == nil
		}
	}
	return 0, false
}

// promtoolCheck runs `promtool check metrics` on body.
func promtoolCheck(t *testing.T, who, body string) {
	t.Helper()
	tool, err := exec.LookPath("promtool")
	if err != nil {
		tool = promtoolFallback
	}
	if _, err := os.Stat(tool); err != nil {
		t.Fatalf("promtool not found (PATH or %s): scripts/deps.sh fetches it", promtoolFallback)
	}
	cmd := exec.Command(tool, "check", "metrics")
	cmd.Stdin = strings.NewReader(body)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Errorf("promtool check metrics on %s: %v\n%s", who, err, out)
	}
}

// TestMetrics runs a cluster whose nodes serve /metrics over TCP (set
// through ZLMESH_METRICS_LISTEN, so the environment path is exercised too),
// scrapes them from another namespace, checks the exposition with promtool,
// and checks that each operator metric moves when its event happens: a
// failed attach, a DNS answer, a published port, a subnet conflict (won on
// one side, lost and containers renumbered on the other), a killed peer
// (suspect and dead transitions) and its re-join. It also checks that
// `zlmesh version -o json` is what the nodes gossip.
func TestMetrics(t *testing.T) {
	t.Setenv("ZLMESH_METRICS_LISTEN", "0.0.0.0:"+metricsPort)
	tb := cluster(t, 3, forgetFast...)
	h1, h2, h3 := tb.Host("h1"), tb.Host("h2"), tb.Host("h3")
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()

	// The exposition: text by default, OpenMetrics when asked; Go and
	// process collectors; promtool accepts it.
	ct, body := scrapeTCP(t, tb, h1, "")
	if !strings.HasPrefix(ct, "text/plain") {
		t.Errorf("Content-Type %q, want text/plain", ct)
	}
	for _, want := range []string{"go_goroutines ", "process_resident_memory_bytes ", `zlmesh_members{state="alive"} 3`, "zlmesh_blocks_held 1", "# HELP zlmesh_member_dead_transitions_total "} {
		if !strings.Contains(body, want) {
			t.Errorf("h1's metrics lack %q", want)
		}
	}
	promtoolCheck(t, "h1", body)
	if ct, om := scrapeTCP(t, tb, h1, "application/openmetrics-text; version=1.0.0"); !strings.HasPrefix(ct, "application/openmetrics-text") || !strings.HasSuffix(strings.TrimSpace(om), "# EOF") {
		t.Errorf("OpenMetrics asked: Content-Type %q, ends %q", ct, om[max(0, len(om)-20):])
	}

	// Versions: the binary's, what h1 says of itself and what h2 says of h1.
	out, err := exec.Command(testbed.BuildZlmesh(t), "version", "-o", "json").Output()
	if err != nil {
		t.Fatal(err)
	}
	var v map[string]string
	if err := json.Unmarshal(out, &v); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"version", "commit", "go_version", "wireguard_go", "memberlist"} {
		if v[k] == "" {
			t.Errorf("zlmesh version -o json: %q is empty in %s", k, out)
		}
	}
	if got := status(t, h1).Version; got != v["version"] {
		t.Errorf("h1 gossips version %q, zlmesh version says %q", got, v["version"])
	}
	peers, err := h2.Client().Peers(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range peers {
		if p.Version != v["version"] {
			t.Errorf("h2 sees %s at version %q, want %q", p.Name, p.Version, v["version"])
		}
	}

	// A failed attach counts by its code.
	if _, err := h1.Client().Attach(ctx, api.AttachRequest{Service: "web", Container: "ghost", Netns: "/run/netns/zlmesh-e2e-missing"}); err == nil {
		t.Fatal("attach to a missing namespace succeeded")
	}
	// A mesh DNS answer from the packet path.
	if out, err := h1.Exec(ctx, "dig", "+time=2", "+tries=2", "@"+status(t, h1).MeshDNS, "h2.node.zl", "A"); err != nil {
		t.Fatalf("dig: %v\n%s", err, out)
	}
	// A published port.
	c1 := addContainer(t, tb, h1, "m1")
	if _, err := c1.Attach(ctx, "web"); err != nil {
		t.Fatal(err)
	}
	if _, err := h1.Client().Publish(ctx, api.PublishRequest{Container: c1.ID(), Protocol: "tcp", HostPort: 8080, ContainerPort: 80}); err != nil {
		t.Fatal(err)
	}
	moved := func(h *testbed.Host, want map[string]float64) func() error {
		return func() error {
			_, body := scrapeTCP(t, tb, h, "")
			for series, min := range want {
				if got, ok := sample(body, series); !ok || got < min {
					return fmt.Errorf("%s: %s = %v (present %v), want at least %v", h.Name, series, got, ok, min)
				}
			}
			return nil
		}
	}
	eventually(t, 20*time.Second, moved(h1, map[string]float64{
		`zlmesh_attach_errors_total{code="no_namespace"}`:            1,
		`zlmesh_dns_answer_duration_seconds_count{path="local"}`:     1,
		`zlmesh_nat_rules{kind="publish"}`:                           1,
		`zlmesh_attachments`:                                         1,
		`zlmesh_store_records{kind="port"}`:                          1,
		`zlmesh_attach_duration_seconds_count`:                       1,
		`zlmesh_peer_receive_bytes_total{peer="h2"}`:                 0,
		`zlmesh_member_suspect_transitions_total`:                    0,
		`zlmesh_claim_conflicts_total{result="lost"}`:                0,
		`zlmesh_dns_answer_duration_seconds_count{path="forwarded"}`: 0,
	}))

	// A subnet conflict: a (older claim) keeps the subnet, b loses and
	// renumbers its container.
	a, b := contestSubnet(t, ctx, tb, "10.200.79.0/26", []*testbed.Host{h1}, []*testbed.Host{h2, h3})
	cb := addContainer(t, tb, b, "mb")
	if _, err := cb.Attach(ctx, "web"); err != nil {
		t.Fatal(err)
	}
	if err := tb.Heal(); err != nil {
		t.Fatal(err)
	}
	waitWhole(t, tb, tb.Hosts(), 90*time.Second)
	eventually(t, 30*time.Second, moved(b, map[string]float64{
		`zlmesh_claim_conflicts_total{result="lost"}`: 1,
		`zlmesh_renumbered_containers_total`:          1,
		`zlmesh_blocks_held`:                          1,
	}))
	// The winner counts the conflict only if it saw b's old claim before b
	// moved, which after a heal is a race: the series must be there.
	eventually(t, 30*time.Second, moved(a, map[string]float64{`zlmesh_claim_conflicts_total{result="won"}`: 0}))
	_, bBody := scrapeTCP(t, tb, b, "")
	if lost, _ := sample(bBody, `zlmesh_claim_conflicts_total{result="lost"}`); lost != 1 {
		t.Errorf("%s lost %v conflicts, want 1", b.Name, lost)
	}
	if won, _ := sample(bBody, `zlmesh_claim_conflicts_total{result="won"}`); won != 0 {
		t.Errorf("the loser %s counts %v won conflicts", b.Name, won)
	}

	// A killed peer: suspected, then dead, as h1 sees it; then back.
	_, before := scrapeTCP(t, tb, h1, "")
	dead0, _ := sample(before, "zlmesh_member_dead_transitions_total")
	if err := h3.Kill(); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, moved(h1, map[string]float64{
		"zlmesh_member_suspect_transitions_total": 1,
		"zlmesh_member_dead_transitions_total":    dead0 + 1,
		`zlmesh_members{state="dead"}`:            1,
	}))
	if err := h3.Start(ctx); err != nil {
		t.Fatal(err)
	}
	waitReady(t, h3)
	waitWhole(t, tb, tb.Hosts(), 60*time.Second)
	eventually(t, 30*time.Second, moved(h3, map[string]float64{`zlmesh_rejoins_total{result="ok"}`: 1}))

	// Every node's exposition, now with peers, handshakes and records,
	// passes promtool.
	for _, h := range tb.Hosts() {
		_, body := scrapeTCP(t, tb, h, "")
		promtoolCheck(t, h.Name, body)
		if !bytes.Contains([]byte(body), []byte("zlmesh_peer_handshake_age_seconds{peer=")) {
			t.Errorf("%s has no handshake age", h.Name)
		}
	}
}
