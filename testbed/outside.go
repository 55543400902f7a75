package testbed

// The outside namespace (its resolver and test servers), the switch, and
// background processes.

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"time"
)

// resolverArgv is the outside resolver: answers only its fixed names and
// NXDOMAIN for the rest (--local=/#/), never reads resolv.conf, never
// forwards, listens on ResolverAddr only, and on Resolver6Addr too (with
// the AAAA records of OutsideNames6) when the underlay has IPv6.
func resolverArgv(f UnderlayFamily) []string {
	argv := []string{"dnsmasq",
		"--keep-in-foreground", "--conf-file=/dev/null", "--no-resolv", "--no-hosts", "--local=/#/",
		"--listen-address=" + ResolverAddr.String(), "--bind-interfaces",
		"--pid-file=", "--user=root", "--log-facility=-",
	}
	if f.HasIPv6() {
		argv = append(argv, "--listen-address="+Resolver6Addr.String())
	}
	names := make([]string, 0, len(OutsideNames))
	for n := range OutsideNames {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		rec := "--host-record=" + n + "," + OutsideNames[n].String()
		if a, ok := OutsideNames6[n]; ok && f.HasIPv6() {
			rec += "," + a.String()
		}
		argv = append(argv, rec)
	}
	aliases := make([]string, 0, len(OutsideCNAMEs))
	for n := range OutsideCNAMEs {
		aliases = append(aliases, n)
	}
	sort.Strings(aliases)
	for _, n := range aliases {
		argv = append(argv, "--cname="+n+","+OutsideCNAMEs[n])
	}
	return argv
}

// startResolverLocked starts dnsmasq in the outside namespace and waits until
// it answers. tb.mu is held.
func (tb *Testbed) startResolverLocked(ctx context.Context) error {
	logPath := filepath.Join(tb.Dir, "resolver.log")
	log, err := openLog(logPath)
	if err != nil {
		return fmt.Errorf("testbed %s: resolver: %w", tb.Prefix, err)
	}
	defer log.Close()
	cmd := command(nil, resolverArgv(tb.opts.Underlay))
	cmd.Stdout, cmd.Stderr = log, log
	p, err := spawn(cmd, tb.outsideNetns(), tb.outsideNetns())
	if err != nil {
		return fmt.Errorf("testbed %s: resolver: %w", tb.Prefix, err)
	}
	p.Log = logPath
	tb.st.Resolver = p
	if err := tb.saveLocked(); err != nil {
		return err
	}
	// Ask it from inside the outside namespace, at each of its addresses,
	// until it answers.
	servers := []string{ResolverAddr.String()}
	if tb.opts.Underlay.HasIPv6() {
		servers = append(servers, Resolver6Addr.String())
	}
	for {
		answered := 0
		for _, srv := range servers {
			probe := []string{"dig", "+time=1", "+tries=1", "+short", "@" + srv, "outside.test"}
			out, _ := command(ctx, netnsArgv(tb.outsideNetns(), probe)).Output()
			if strings.TrimSpace(string(out)) == OutsideAddr.String() {
				answered++
			}
		}
		if answered == len(servers) {
			return nil
		}
		if !alive(p) {
			return fmt.Errorf("testbed %s: resolver exited: %s", tb.Prefix, tail(logPath, 10))
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("testbed %s: resolver does not answer: %w", tb.Prefix, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// forget drops a background process from the records.
func (tb *Testbed) forget(p *procState) {
	tb.mu.Lock()
	defer tb.mu.Unlock()
	if tb.closed {
		return
	}
	tb.st.Background = slices.DeleteFunc(tb.st.Background, func(q *procState) bool { return q.PID == p.PID && q.Start == p.Start })
	tb.saveLocked()
}

// startBackground starts argv (already wrapped for its namespace) as a
// background process logged to <dir>/bg/<n>-<prog>.log.
func (tb *Testbed) startBackground(argv, userArgv []string, where string) (*Process, error) {
	if len(userArgv) == 0 {
		return nil, fmt.Errorf("start in %s: empty command", where)
	}
	tb.mu.Lock()
	defer tb.mu.Unlock()
	if tb.closed {
		return nil, ErrClosed
	}
	dir := filepath.Join(tb.Dir, "bg")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	tb.seq++
	logPath := filepath.Join(dir, fmt.Sprintf("%d-%s.log", tb.seq, filepath.Base(userArgv[0])))
	log, err := openLog(logPath)
	if err != nil {
		return nil, err
	}
	defer log.Close()
	cmd := command(nil, argv)
	cmd.Stdout, cmd.Stderr = log, log
	p, err := spawn(cmd, "", where)
	if err != nil {
		return nil, err
	}
	p.Log = logPath
	tb.st.Background = append(tb.st.Background, p)
	if err := tb.saveLocked(); err != nil {
		killProc(p)
		return nil, err
	}
	return &Process{Log: logPath, tb: tb, p: p}, nil
}

// ExecOutside runs argv in the outside namespace and returns its combined
// output; a non-zero exit is an error carrying the output.
func (tb *Testbed) ExecOutside(ctx context.Context, argv ...string) ([]byte, error) {
	if len(argv) == 0 {
		return nil, errors.New("exec outside: empty command")
	}
	return run(command(ctx, netnsArgv(tb.outsideNetns(), argv)), tb.outsideNetns(), argv)
}

// OutsideCmd returns a command that runs argv in the outside namespace, for
// callers that wire its input and output themselves.
func (tb *Testbed) OutsideCmd(ctx context.Context, argv ...string) *exec.Cmd {
	return command(ctx, netnsArgv(tb.outsideNetns(), argv))
}

// StartOutside starts argv in the background in the outside namespace (a
// test server on OutsideAddr, say). It runs until Process.Stop or Close.
func (tb *Testbed) StartOutside(ctx context.Context, argv ...string) (*Process, error) {
	return tb.startBackground(netnsArgv(tb.outsideNetns(), argv), argv, tb.outsideNetns())
}

// ExecSwitch runs argv in the switch namespace (tcpdump -i br0, nft list
// ruleset, …).
func (tb *Testbed) ExecSwitch(ctx context.Context, argv ...string) ([]byte, error) {
	if len(argv) == 0 {
		return nil, errors.New("exec in switch: empty command")
	}
	return run(command(ctx, netnsArgv(tb.switchNetns(), argv)), tb.switchNetns(), argv)
}

// SwitchCmd returns a command that runs argv in the switch namespace.
func (tb *Testbed) SwitchCmd(ctx context.Context, argv ...string) *exec.Cmd {
	return command(ctx, netnsArgv(tb.switchNetns(), argv))
}
