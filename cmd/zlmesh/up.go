package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/zlmesh/zlmesh/api"
	"github.com/zlmesh/zlmesh/dockerplugin"
	"github.com/zlmesh/zlmesh/ipam"
	"github.com/zlmesh/zlmesh/mesh"
	"github.com/zlmesh/zlmesh/node"
	"github.com/zlmesh/zlmesh/tun"
)

// DefaultClusterKeyFile is where `zlmesh up` looks for the cluster key when
// --cluster-key-file is not given.
const DefaultClusterKeyFile = "/etc/zlmesh/cluster.key"

// pprofListen is `zlmesh up --pprof-listen` (see servePprof).
var pprofListen string

// upFlags registers every `zlmesh up` flag on fs, filling cfg; it returns the
// cluster key file and log level, which need work before they are config.
func upFlags(fs *flag.FlagSet, cfg *node.Config) (keyFile, logLevel *string) {
	fs.String("config", "", "config file: `key = value` lines with the same keys as these flags")
	fs.StringVar(&cfg.Name, "name", "", "node name, unique in the cluster (default: the hostname)")
	fs.Var((*listFlag)(&cfg.Join), "join", "seed `host:port` to join through (repeat or comma-separate; default: start a cluster, or re-join remembered peers)")
	keyFile = fs.String("cluster-key-file", DefaultClusterKeyFile, "file with the cluster key (from `zlmesh genkey`)")
	fs.StringVar(&cfg.StateDir, "state-dir", node.DefaultStateDir, "directory for the private key, block claims, attachments and known peers")
	fs.IntVar(&cfg.ListenPort, "listen-port", node.DefaultListenPort, "WireGuard UDP port")
	fs.IntVar(&cfg.GossipPort, "gossip-port", node.DefaultGossipPort, "gossip UDP and TCP port")
	fs.Var(addrFlag{&cfg.AdvertiseAddr}, "advertise-addr", "underlay address peers reach this node at (default: picked from the interfaces)")
	fs.Var(addrFlag{&cfg.BindAddr}, "bind-addr", "address gossip listens on (default: all)")
	fs.Var(prefixFlag{&cfg.ClusterCIDR}, "cluster-cidr", "overlay address range, cut into blocks that nodes claim on demand; its top /24 is reserved (default "+ipam.DefaultCluster+")")
	fs.IntVar(&cfg.BlockPrefix, "block-prefix", ipam.DefaultBlockBits, "prefix length of an address block")
	fs.IntVar(&cfg.MaxNodes, "max-nodes", 0, "refuse to start unless the cluster CIDR holds a block for this many nodes (0: no check)")
	fs.Var(prefixFlag{&cfg.FirstBlock}, "first-block", "first block to ask for (default: a free one; blocks in the state dir win)")
	fs.DurationVar(&cfg.BlockReleaseAfter, "block-release-after", node.DefaultBlockReleaseAfter, "give up a block (not the first) that stayed empty this long")
	fs.StringVar(&cfg.Interface, "interface", tun.DefaultName, "WireGuard TUN interface name (at most 15 bytes)")
	fs.IntVar(&cfg.MTU, "mtu", tun.DefaultMTU, "MTU of the TUN and of container interfaces")
	fs.StringVar(&cfg.Socket, "socket", api.DefaultSocket, "control socket path")
	fs.Var((*listFlag)(&cfg.DNSUpstreams), "dns-upstream", "`host:port` the mesh DNS forwards other names to (repeat; default: /etc/resolv.conf without loopback entries)")
	fs.StringVar(&cfg.DNSZone, "dns-zone", "zl.", "mesh DNS zone")
	fs.DurationVar(&cfg.DNSTTL, "dns-ttl", 5*time.Second, "TTL of mesh DNS answers")
	fs.BoolVar(&cfg.DockerPlugin, "docker-plugin", false, "serve Docker's network and IPAM driver \"zlmesh\" (docker network create -d zlmesh --ipam-driver zlmesh NAME)")
	fs.StringVar(&cfg.DockerPluginSocket, "docker-plugin-socket", node.DefaultDockerPluginSocket, "the Docker driver's `socket` (Docker knows the driver by the file name)")
	fs.StringVar(&cfg.DockerSocket, "docker-socket", dockerplugin.DefaultDockerSocket, "dockerd's API `socket`, for network names and endpoint reconciliation (\"-\": none)")
	fs.Var((*listFlag)(&cfg.DNSListen), "dns-listen", "extra `ip:port` the mesh DNS also listens on (UDP and TCP; repeat), e.g. 127.0.0.1:53")
	fs.BoolFunc("masquerade", "masquerade container traffic leaving the cluster (default true; --masquerade=false switches it off)", func(v string) error {
		on, err := strconv.ParseBool(v)
		cfg.NoMasquerade = !on
		return err
	})
	fs.DurationVar(&cfg.DeadGrace, "dead-grace", node.DefaultDeadGrace, "how long a dead node's blocks stay reserved for it")
	fs.DurationVar(&cfg.Keepalive, "keepalive", node.DefaultKeepalive, "WireGuard persistent keepalive")
	fs.DurationVar(&cfg.Gossip.ProbeInterval, "gossip-probe-interval", 0, "failure detector probe interval (default: memberlist LAN, 1s)")
	fs.DurationVar(&cfg.Gossip.ProbeTimeout, "gossip-probe-timeout", 0, "failure detector probe timeout (default: memberlist LAN, 500ms)")
	fs.IntVar(&cfg.Gossip.SuspicionMult, "gossip-suspicion-mult", 0, "suspicion multiplier (default: memberlist LAN, 4)")
	fs.DurationVar(&cfg.Gossip.GossipInterval, "gossip-interval", 0, "gossip interval (default: memberlist LAN, 200ms)")
	fs.DurationVar(&cfg.Gossip.PushPullInterval, "gossip-push-pull-interval", 0, "full state sync interval (default: memberlist LAN, 30s)")
	fs.DurationVar(&cfg.Gossip.GossipToTheDeadTime, "gossip-to-the-dead", 0, "how long gossip keeps a dead member before forgetting it (default: memberlist LAN, 30s); re-joining remembered peers does not depend on it")
	fs.DurationVar(&cfg.Gossip.DeadNodeReclaimTime, "gossip-dead-reclaim", 0, "how soon a dead member's name may come back from another address (default 5s)")
	fs.DurationVar(&cfg.Gossip.RejoinMax, "rejoin-max", 0, "longest wait between re-join attempts to a remembered peer (default 30s)")
	logLevel = fs.String("log-level", "info", "log level: debug, info, warn or error")
	fs.StringVar(&pprofListen, "pprof-listen", "", "debugging: serve Go profiles (/debug/pprof/) on this `address`, e.g. 127.0.0.1:6060 (no authentication: loopback only)")
	return keyFile, logLevel
}

func runUp(args []string) error {
	var cfg node.Config
	fs := newFlagSet("up", "up [flags]")
	keyFile, logLevel := upFlags(fs, &cfg)
	if path := findConfigArg(args); path != "" {
		if err := applyConfigFile(fs, path); err != nil {
			return err
		}
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if err := noArgs(fs); err != nil {
		return err
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(*logLevel)); err != nil {
		return fmt.Errorf("--log-level %q: want debug, info, warn or error", *logLevel)
	}
	cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	key, err := mesh.LoadKeyFile(*keyFile)
	if err != nil {
		return fmt.Errorf("--cluster-key-file: %w", err)
	}
	cfg.ClusterKey = key
	if pprofListen != "" {
		if err := servePprof(pprofListen, cfg.Logger); err != nil {
			return err
		}
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	startCtx, cancel := context.WithTimeout(ctx, time.Minute)
	n, err := node.Start(startCtx, cfg)
	cancel()
	if err != nil {
		return err
	}
	select {
	case <-ctx.Done():
		// A signal stops the node without leaving: a restart comes back
		// with the same blocks. `zlmesh down` leaves.
		return n.Close()
	case <-n.Done():
		return nil
	}
}

// findConfigArg returns the value of --config among args, if any.
func findConfigArg(args []string) string {
	for i, a := range args {
		if !strings.HasPrefix(a, "-") {
			continue
		}
		a = strings.TrimLeft(a, "-")
		if v, ok := strings.CutPrefix(a, "config="); ok {
			return v
		}
		if a == "config" && i+1 < len(args) {
			return args[i+1]
		}
	}
	return ""
}

func runGenkey(args []string) error {
	fs := newFlagSet("genkey", "genkey > cluster.key")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if err := noArgs(fs); err != nil {
		return err
	}
	k, err := mesh.GenerateKey()
	if err != nil {
		return err
	}
	fmt.Println(mesh.EncodeKey(k))
	return nil
}
