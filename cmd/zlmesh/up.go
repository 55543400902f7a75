package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/zlmesh/zlmesh/api"
	"github.com/zlmesh/zlmesh/dockerplugin"
	"github.com/zlmesh/zlmesh/internal/sdnotify"
	"github.com/zlmesh/zlmesh/internal/winsvc"
	"github.com/zlmesh/zlmesh/ipam"
	"github.com/zlmesh/zlmesh/mesh"
	"github.com/zlmesh/zlmesh/netproxy"
	"github.com/zlmesh/zlmesh/node"
	"github.com/zlmesh/zlmesh/tun"
)

// DefaultClusterKeyFile is where `zlmesh up` looks for the cluster key when
// --cluster-key-file is not given.
const DefaultClusterKeyFile = "/etc/zlmesh/cluster.key"

// upOptions are the `zlmesh up` settings that are not node.Config.
type upOptions struct {
	keyFile       string         // --cluster-key-file
	logLevel      slog.Level     // --log-level
	pprofListen   string         // --pprof-listen (see servePprof)
	metricsListen string         // --metrics-listen (see listenMetrics)
	logFile       string         // --log-file
	us            node.Userspace // --socks5-listen, --http-proxy-listen, --proxy-allow-remote, --forward (see applyUserspace)
}

// upFlags registers every `zlmesh up` flag on fs, filling cfg and o (the
// settings that need work before they are config, or are not the node's).
func upFlags(fs *flag.FlagSet, cfg *node.Config, o *upOptions) {
	fs.String("config", "", "config file: `key = value` lines with the same keys as these flags")
	fs.StringVar(&cfg.Name, "name", "", "node name, unique in the cluster (default: the hostname)")
	fs.Var((*listFlag)(&cfg.Join), "join", "seed `host:port` to join through (repeat or comma-separate; default: start a cluster, or re-join remembered peers)")
	fs.StringVar(&o.keyFile, "cluster-key-file", DefaultClusterKeyFile, "file with the cluster key (from `zlmesh genkey`)")
	fs.StringVar(&cfg.StateDir, "state-dir", node.DefaultStateDir, "directory for the private key, block claims, attachments and known peers")
	fs.IntVar(&cfg.ListenPort, "listen-port", node.DefaultListenPort, "WireGuard UDP port")
	fs.IntVar(&cfg.GossipPort, "gossip-port", node.DefaultGossipPort, "gossip UDP and TCP port")
	fs.Var(addrFlag{&cfg.AdvertiseAddr}, "advertise-addr", "underlay address peers reach this node at (default: picked from the interfaces)")
	fs.Var(addrFlag{&cfg.BindAddr}, "bind-addr", "address gossip listens on (default: all)")
	fs.Var(prefixFlag{&cfg.ClusterCIDR}, "cluster-cidr", "overlay address range, cut into blocks that nodes claim on demand; its top /24 is reserved (default "+ipam.DefaultCluster+")")
	fs.IntVar(&cfg.BlockPrefix, "block-prefix", ipam.DefaultBlockBits, "prefix length of an address block")
	fs.BoolFunc("ipv6", "give the node and every container an IPv6 address beside its IPv4 one, the twin of it in --cluster-cidr6 (default true; --ipv6=false for hosts without IPv6)", func(v string) error {
		on, err := strconv.ParseBool(v)
		cfg.NoIPv6 = !on
		return err
	})
	fs.Var(prefixFlag{&cfg.ClusterCIDR6}, "cluster-cidr6", "the overlay's IPv6 prefix, a unique local prefix (fc00::/7) with a /64 for every IPv4 block (a /48 holds 65536 blocks) (default: a /48 derived from the cluster key, the same on every node)")
	fs.IntVar(&cfg.MaxNodes, "max-nodes", 0, "refuse to start unless the cluster CIDR holds a block for this many nodes (0: no check)")
	fs.Var(prefixFlag{&cfg.FirstBlock}, "first-block", "first block to ask for (default: a free one; blocks in the state dir win)")
	fs.DurationVar(&cfg.BlockReleaseAfter, "block-release-after", node.DefaultBlockReleaseAfter, "give up a block (not the first) that stayed empty this long")
	fs.StringVar(&cfg.Interface, "interface", tun.DefaultName, "WireGuard TUN interface name (at most 15 bytes)")
	fs.IntVar(&cfg.MTU, "mtu", tun.DefaultMTU, "MTU of the TUN and of container interfaces")
	fs.StringVar(&cfg.Socket, "socket", api.DefaultSocket, "control socket path (Windows: a named pipe \\\\.\\pipe\\NAME)")
	fs.StringVar(&cfg.ControlGroup, "control-group", "", "Windows: group (name or SID) that may use the control pipe besides SYSTEM and Administrators")
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
	fs.BoolFunc("userspace", "run without a kernel interface (gVisor netstack): no root, no capabilities, no /dev/net/tun; local programs reach the mesh through --socks5-listen/--http-proxy-listen, the mesh reaches them through --forward", func(v string) error {
		on, err := strconv.ParseBool(v)
		if err != nil {
			return err
		}
		if !on {
			cfg.Userspace = nil
		} else if cfg.Userspace == nil {
			cfg.Userspace = &node.Userspace{}
		}
		return nil
	})
	fs.StringVar(&o.us.SOCKS5Listen, "socks5-listen", "", "userspace mode: SOCKS5 server `ip:port` into the mesh (CONNECT, UDP ASSOCIATE; names through the mesh DNS), e.g. 127.0.0.1:1080")
	fs.StringVar(&o.us.HTTPProxyListen, "http-proxy-listen", "", "userspace mode: HTTP proxy `ip:port` into the mesh (CONNECT and plain HTTP), e.g. 127.0.0.1:8080")
	fs.BoolVar(&o.us.ProxyAllowRemote, "proxy-allow-remote", false, "userspace mode: allow proxy listeners on non-loopback addresses (anyone reaching them enters the mesh)")
	fs.Func("forward", "userspace mode: `PORT[/tcp|udp][:LOCALADDR:LOCALPORT]` the overlay address answers on by connecting to a local port (repeat; default target 127.0.0.1:PORT)", func(v string) error {
		f, err := netproxy.ParseForward(v)
		if err != nil {
			return err
		}
		o.us.Forwards = append(o.us.Forwards, f)
		return nil
	})
	fs.Func("log-level", "log level: debug, info, warn or error (default info)", func(v string) error {
		if err := o.logLevel.UnmarshalText([]byte(v)); err != nil {
			return fmt.Errorf("%q: want debug, info, warn or error", v)
		}
		return nil
	})
	fs.StringVar(&o.pprofListen, "pprof-listen", "", "debugging: serve Go profiles (/debug/pprof/) on this `address`, e.g. 127.0.0.1:6060 (no authentication: loopback only)")
	fs.StringVar(&o.metricsListen, "metrics-listen", "", "serve Prometheus metrics (/metrics) over HTTP on this `address`, e.g. 127.0.0.1:9474 (default: only on the control socket)")
	fs.StringVar(&o.logFile, "log-file", "", "append logs to this file instead of stderr (a Windows service has no stderr)")
}

func runUp(args []string) error {
	var (
		cfg, scratchCfg node.Config
		o, scratchO     upOptions
	)
	fs := newFlagSet("up", "up [flags]\n\nEvery flag can also be set in the --config file (key = value) or as\nZLMESH_<FLAG> (dashes as underscores, e.g. ZLMESH_LISTEN_PORT); a flag\nwins over the environment, which wins over the file.")
	upFlags(fs, &cfg, &o)
	scratch := newFlagSet("up", "up [flags]")
	scratch.SetOutput(io.Discard)
	upFlags(scratch, &scratchCfg, &scratchO)
	warnings, err := layerSettings(fs, scratch, args, os.Environ())
	for _, w := range warnings {
		fmt.Fprintln(os.Stderr, "zlmesh: warning:", w)
	}
	if err != nil {
		return err
	}
	if err := noArgs(fs); err != nil {
		return err
	}
	if err := applyUserspace(&cfg, &o.us); err != nil {
		return err
	}
	logOut := io.Writer(os.Stderr)
	if o.logFile != "" {
		f, err := os.OpenFile(o.logFile, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o640)
		if err != nil {
			return fmt.Errorf("--log-file: %w", err)
		}
		defer f.Close()
		logOut = f
	}
	cfg.Logger = slog.New(slog.NewTextHandler(logOut, &slog.HandlerOptions{Level: o.logLevel}))
	key, err := mesh.LoadKeyFile(o.keyFile)
	if err != nil {
		return fmt.Errorf("--cluster-key-file: %w", err)
	}
	cfg.ClusterKey = key
	if o.pprofListen != "" {
		if err := servePprof(o.pprofListen, cfg.Logger); err != nil {
			return err
		}
	}
	var metricsLn net.Listener
	if o.metricsListen != "" {
		if metricsLn, err = listenMetrics(o.metricsListen); err != nil {
			return err
		}
		defer metricsLn.Close()
	}

	// Under the Windows Service Control Manager a stop request ends the
	// node as a signal does elsewhere (see internal/winsvc).
	isService, err := winsvc.IsService()
	if err != nil {
		return fmt.Errorf("service control manager: %w", err)
	}
	if isService {
		return winsvc.Run(winsvc.Name, func(ctx context.Context, ready func()) error {
			return serveNode(ctx, cfg, metricsLn, ready)
		})
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return serveNode(ctx, cfg, metricsLn, func() {})
}

// serveNode starts the node, serves metrics on metricsLn (when not nil),
// tells systemd and ready that it is up, and runs it until ctx ends or the
// node is done (`zlmesh down`).
func serveNode(ctx context.Context, cfg node.Config, metricsLn net.Listener, ready func()) error {
	startCtx, cancel := context.WithTimeout(ctx, time.Minute)
	n, err := node.Start(startCtx, cfg)
	cancel()
	if err != nil {
		return err
	}
	if metricsLn != nil {
		defer serveMetrics(metricsLn, n, cfg.Logger).Close()
	}
	// Start returns once the control socket serves: the node is ready.
	notifySystemd(sdnotify.Ready, cfg.Logger)
	ready()
	select {
	case <-ctx.Done():
		// A signal stops the node without leaving: a restart comes back
		// with the same blocks. `zlmesh down` leaves.
		notifySystemd(sdnotify.Stopping, cfg.Logger)
		return n.Close()
	case <-n.Done():
		notifySystemd(sdnotify.Stopping, cfg.Logger)
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

// applyUserspace puts the userspace flags into cfg: with --userspace they
// become cfg.Userspace; without it, any of them is an error.
func applyUserspace(cfg *node.Config, us *node.Userspace) error {
	if cfg.Userspace == nil {
		switch {
		case us.SOCKS5Listen != "":
			return errors.New("--socks5-listen needs --userspace")
		case us.HTTPProxyListen != "":
			return errors.New("--http-proxy-listen needs --userspace")
		case len(us.Forwards) > 0:
			return errors.New("--forward needs --userspace")
		}
		return nil
	}
	*cfg.Userspace = *us
	return nil
}
