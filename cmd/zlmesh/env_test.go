package main

import (
	"flag"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/zlmesh/zlmesh/node"
)

// parseUp runs layerSettings as runUp does; file, when not empty, is
// written to a temp file that args or environ name as {file}.
func parseUp(t *testing.T, args, environ []string, file string) (node.Config, upOptions, []string, error) {
	t.Helper()
	if file != "" {
		path := filepath.Join(t.TempDir(), "zlmesh.conf")
		if err := os.WriteFile(path, []byte(file), 0o600); err != nil {
			t.Fatal(err)
		}
		for i := range args {
			args[i] = strings.ReplaceAll(args[i], "{file}", path)
		}
		for i := range environ {
			environ[i] = strings.ReplaceAll(environ[i], "{file}", path)
		}
	}
	var cfg, scratchCfg node.Config
	var o, scratchO upOptions
	fs, scratch := newFlagSet("up", "up"), newFlagSet("up", "up")
	fs.SetOutput(io.Discard)
	scratch.SetOutput(io.Discard)
	upFlags(fs, &cfg, &o)
	upFlags(scratch, &scratchCfg, &scratchO)
	w, err := layerSettings(fs, scratch, args, environ)
	return cfg, o, w, err
}

func TestLayerSettings(t *testing.T) {
	tests := []struct {
		name     string
		args     []string
		env      []string
		file     string
		check    func(t *testing.T, cfg node.Config, o upOptions)
		wantErr  string
		wantWarn []string
	}{
		{
			name: "defaults",
			check: func(t *testing.T, cfg node.Config, o upOptions) {
				if cfg.ListenPort != node.DefaultListenPort || o.logLevel != slog.LevelInfo || o.keyFile != DefaultClusterKeyFile {
					t.Errorf("port %d level %v key %q", cfg.ListenPort, o.logLevel, o.keyFile)
				}
			},
		},
		{
			name: "env sets every kind of flag",
			env: []string{"ZLMESH_NAME=h9", "ZLMESH_LISTEN_PORT=1234", "ZLMESH_JOIN=192.0.2.1:7946,192.0.2.2:7946",
				"ZLMESH_MASQUERADE=false", "ZLMESH_DEAD_GRACE=2h", "ZLMESH_ADVERTISE_ADDR=192.0.2.9",
				"ZLMESH_LOG_LEVEL=debug", "ZLMESH_CLUSTER_KEY_FILE=/k", "ZLMESH_METRICS_LISTEN=127.0.0.1:9474",
				"ZLMESH_GOSSIP_PROBE_INTERVAL=3s", "PATH=/bin"},
			check: func(t *testing.T, cfg node.Config, o upOptions) {
				if cfg.Name != "h9" || cfg.ListenPort != 1234 || len(cfg.Join) != 2 || !cfg.NoMasquerade ||
					cfg.DeadGrace.Hours() != 2 || cfg.AdvertiseAddr.String() != "192.0.2.9" || cfg.Gossip.ProbeInterval.Seconds() != 3 {
					t.Errorf("cfg %+v", cfg)
				}
				if o.logLevel != slog.LevelDebug || o.keyFile != "/k" || o.metricsListen != "127.0.0.1:9474" {
					t.Errorf("options %+v", o)
				}
			},
		},
		{
			name: "flag > env > file > default",
			args: []string{"--config", "{file}", "--name", "flag"},
			env:  []string{"ZLMESH_NAME=env", "ZLMESH_LISTEN_PORT=2000"},
			file: "name = file\nlisten-port = 3000\ngossip-port = 4000\n",
			check: func(t *testing.T, cfg node.Config, o upOptions) {
				if cfg.Name != "flag" || cfg.ListenPort != 2000 || cfg.GossipPort != 4000 || cfg.MTU != 1420 {
					t.Errorf("name %q listen %d gossip %d mtu %d", cfg.Name, cfg.ListenPort, cfg.GossipPort, cfg.MTU)
				}
			},
		},
		{
			name: "a list comes whole from the source that wins",
			args: []string{"--config={file}", "--join", "192.0.2.3:1"},
			env:  []string{"ZLMESH_JOIN=192.0.2.2:1", "ZLMESH_DNS_UPSTREAM=192.0.2.53:53"},
			file: "join = 192.0.2.1:1\ndns-upstream = 192.0.2.54:53\ndns-listen = 127.0.0.1:53\n",
			check: func(t *testing.T, cfg node.Config, o upOptions) {
				if strings.Join(cfg.Join, " ") != "192.0.2.3:1" || strings.Join(cfg.DNSUpstreams, " ") != "192.0.2.53:53" ||
					strings.Join(cfg.DNSListen, " ") != "127.0.0.1:53" {
					t.Errorf("join %v upstreams %v listen %v", cfg.Join, cfg.DNSUpstreams, cfg.DNSListen)
				}
			},
		},
		{
			name: "config file from the environment",
			env:  []string{"ZLMESH_CONFIG={file}"},
			file: "name = file\n",
			check: func(t *testing.T, cfg node.Config, o upOptions) {
				if cfg.Name != "file" {
					t.Errorf("name %q", cfg.Name)
				}
			},
		},
		{
			name: "empty variable is unset",
			env:  []string{"ZLMESH_LISTEN_PORT="},
			check: func(t *testing.T, cfg node.Config, o upOptions) {
				if cfg.ListenPort != node.DefaultListenPort {
					t.Errorf("port %d", cfg.ListenPort)
				}
			},
		},
		{
			name: "ZLMESH_SOCKET is the --socket setting",
			env:  []string{"ZLMESH_SOCKET=/run/x.sock"},
			check: func(t *testing.T, cfg node.Config, o upOptions) {
				if cfg.Socket != "/run/x.sock" {
					t.Errorf("socket %q", cfg.Socket)
				}
			},
		},
		{name: "bad value names the variable", env: []string{"ZLMESH_LISTEN_PORT=many"}, wantErr: `environment ZLMESH_LISTEN_PORT="many"`},
		{name: "bad log level names the variable", env: []string{"ZLMESH_LOG_LEVEL=loud"}, wantErr: `environment ZLMESH_LOG_LEVEL="loud": "loud": want debug, info, warn or error`},
		{name: "bad prefix names the variable", env: []string{"ZLMESH_CLUSTER_CIDR=10.0.0.1/8"}, wantErr: "ZLMESH_CLUSTER_CIDR"},
		{name: "bad value on the command line", args: []string{"--mtu", "x"}, wantErr: "-mtu"},
		{name: "a bad variable under a flag is not read", args: []string{"--mtu", "1300"}, env: []string{"ZLMESH_MTU=x"},
			check: func(t *testing.T, cfg node.Config, o upOptions) {
				if cfg.MTU != 1300 {
					t.Errorf("mtu %d", cfg.MTU)
				}
			}},
		{
			name: "unknown variables warn, others of zlmesh do not",
			env:  []string{"ZLMESH_LISTENPORT=1", "ZLMESH_TESTBED_BINARY=/x", "ZLMESH_E2E_WGDUMP=zl0", "ZLMESH_ARGS=-x", "ZLMESH_AAA=1"},
			wantWarn: []string{
				"unknown environment variable ZLMESH_AAA ignored",
				"unknown environment variable ZLMESH_LISTENPORT ignored",
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, o, warns, err := parseUp(t, tt.args, tt.env, tt.file)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("got %v, want an error containing %q", err, tt.wantErr)
				}
				if strings.Contains(err.Error(), "\n") {
					t.Errorf("error is not one line: %q", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(warns) != len(tt.wantWarn) {
				t.Fatalf("warnings %q, want %d", warns, len(tt.wantWarn))
			}
			for i, w := range tt.wantWarn {
				if !strings.HasPrefix(warns[i], w) {
					t.Errorf("warning %q, want it to start with %q", warns[i], w)
				}
			}
			if tt.check != nil {
				tt.check(t, cfg, o)
			}
		})
	}
}

// TestEveryUpFlagHasAVariable checks the naming rule on every flag, so a new
// flag cannot miss its variable.
func TestEveryUpFlagHasAVariable(t *testing.T) {
	var cfg node.Config
	fs := newFlagSet("up", "up")
	upFlags(fs, &cfg, &upOptions{})
	env := []string{}
	fs.VisitAll(func(f *flag.Flag) { env = append(env, envName(f.Name)+"=x") })
	set, warns := envSettings(fs, env)
	if len(warns) != 0 || len(set) != len(env) {
		t.Errorf("set %d of %d, warnings %q", len(set), len(env), warns)
	}
	if got := envName("dns-upstream"); got != "ZLMESH_DNS_UPSTREAM" {
		t.Errorf("envName = %q", got)
	}
}
