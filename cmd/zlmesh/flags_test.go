package main

import (
	"flag"
	"io"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/zlmesh/zlmesh/node"
)

func TestConfigFileSameKeysAsFlags(t *testing.T) {
	tests := []struct {
		name    string
		file    string
		args    []string
		check   func(t *testing.T, cfg node.Config)
		wantErr string
	}{
		{
			name: "keys, comments, lists, quotes",
			file: `# a node
name = h7
join = 192.0.2.11:7946
join = 192.0.2.12:7946, 192.0.2.13:7946
advertise-addr "192.0.2.17"
cluster-cidr = 10.99.0.0/16   # inline comment
block-prefix = 24
dead-grace = 1h
masquerade = false
`,
			check: func(t *testing.T, cfg node.Config) {
				if cfg.Name != "h7" || len(cfg.Join) != 3 || cfg.Join[2] != "192.0.2.13:7946" ||
					cfg.AdvertiseAddr != netip.MustParseAddr("192.0.2.17") || cfg.ClusterCIDR != netip.MustParsePrefix("10.99.0.0/16") ||
					cfg.BlockPrefix != 24 || cfg.DeadGrace != time.Hour || !cfg.NoMasquerade {
					t.Errorf("parsed %+v", cfg)
				}
			},
		},
		{
			name: "command line wins over the file",
			file: "name = fromfile\nlisten-port = 1000\n",
			args: []string{"--name", "fromflag"},
			check: func(t *testing.T, cfg node.Config) {
				if cfg.Name != "fromflag" || cfg.ListenPort != 1000 {
					t.Errorf("name %q port %d", cfg.Name, cfg.ListenPort)
				}
			},
		},
		{name: "unknown key", file: "nmae = x\n", wantErr: `cfg:1: unknown key "nmae"`},
		{name: "bad value names line and key", file: "\n\nlisten-port = many\n", wantErr: "cfg:3: listen-port"},
		{name: "cidr with host bits", file: "cluster-cidr = 10.200.0.1/16\n", wantErr: "host bits"},
		{name: "no value", file: "name\n", wantErr: "cfg:1"},
		{name: "nested config", file: "config = other\n", wantErr: "cannot name another config file"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var cfg node.Config
			fs := newFlagSet("up", "up")
			fs.SetOutput(io.Discard)
			upFlags(fs, &cfg, &upOptions{})
			err := parseConfig(fs, strings.NewReader(tt.file), "cfg", nil)
			if err == nil {
				err = fs.Parse(tt.args)
			}
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("got %v, want an error containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			tt.check(t, cfg)
		})
	}
}

func TestEveryUpFlagIsDocumented(t *testing.T) {
	var cfg node.Config
	fs := newFlagSet("up", "up")
	upFlags(fs, &cfg, &upOptions{})
	fs.VisitAll(func(f *flag.Flag) {
		if strings.TrimSpace(f.Usage) == "" {
			t.Errorf("flag --%s has no help text", f.Name)
		}
	})
}

func TestFindConfigArg(t *testing.T) {
	for args, want := range map[string]string{
		"--config /etc/z.conf":      "/etc/z.conf",
		"-config=/x":                "/x",
		"--name config --join a:1":  "",
		"--name h1 --config=/y --x": "/y",
	} {
		if got := findConfigArg(strings.Fields(args)); got != want {
			t.Errorf("findConfigArg(%q) = %q, want %q", args, got, want)
		}
	}
}

func TestParsePortSpec(t *testing.T) {
	tests := []struct {
		in         string
		host, cont int
		proto      string
		bad        bool
	}{
		{in: "8080:80/tcp", host: 8080, cont: 80, proto: "tcp"},
		{in: "53:5353/udp", host: 53, cont: 5353, proto: "udp"},
		{in: "8080", host: 8080, cont: 8080, proto: "tcp"},
		{in: "8080/udp", host: 8080, cont: 8080, proto: "udp"},
		{in: "x:80", bad: true},
		{in: "80:y/tcp", bad: true},
		{in: "", bad: true},
	}
	for _, tt := range tests {
		h, c, p, err := parsePortSpec(tt.in)
		if tt.bad != (err != nil) || !tt.bad && (h != tt.host || c != tt.cont || p != tt.proto) {
			t.Errorf("parsePortSpec(%q) = %d %d %q %v", tt.in, h, c, p, err)
		}
	}
}
