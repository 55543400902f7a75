package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

func listDir(t *testing.T, dir string) []string {
	t.Helper()
	es, err := os.ReadDir(dir)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	var out []string
	for _, e := range es {
		out = append(out, e.Name())
	}
	return out
}

// install writes the plugin and one conflist per network; uninstall removes
// a network's conflist, and the plugin with the last one, and leaves every
// file it did not write alone (a conflist of the same name that is not
// zlmesh's included).
func TestCNIInstallUninstall(t *testing.T) {
	dir := t.TempDir()
	bin, conf := filepath.Join(dir, "bin"), filepath.Join(dir, "net.d")
	plugin := filepath.Join(dir, "zlmesh-cni")
	os.WriteFile(plugin, []byte("#!/bin/sh\n"), 0o755)
	os.MkdirAll(conf, 0o755)
	os.MkdirAll(bin, 0o755)
	os.WriteFile(filepath.Join(conf, "87-podman.conflist"), []byte(`{"name":"podman"}`), 0o644)
	os.WriteFile(filepath.Join(bin, "bridge"), []byte("x"), 0o755)
	dirs := []string{"--bin-dir", bin, "--conf-dir", conf, "--plugin", plugin}
	steps := []struct {
		name     string
		args     []string
		wantErr  bool
		bin, net []string
	}{
		{"install web", append([]string{"install", "--network", "web", "--socket", "/run/h1/zlmesh.sock"}, dirs...), false,
			[]string{"bridge", "zlmesh"}, []string{"87-podman.conflist", "zlmesh-web.conflist"}},
		{"install db with service", append([]string{"install", "--network", "db-net", "--service", "db"}, dirs...), false,
			[]string{"bridge", "zlmesh"}, []string{"87-podman.conflist", "zlmesh-db-net.conflist", "zlmesh-web.conflist"}},
		{"bad service", append([]string{"install", "--network", "Web"}, dirs...), true,
			[]string{"bridge", "zlmesh"}, []string{"87-podman.conflist", "zlmesh-db-net.conflist", "zlmesh-web.conflist"}},
		{"bad network", append([]string{"install", "--network", "../x", "--service", "x"}, dirs...), true,
			[]string{"bridge", "zlmesh"}, []string{"87-podman.conflist", "zlmesh-db-net.conflist", "zlmesh-web.conflist"}},
		{"uninstall web", []string{"uninstall", "--network", "web", "--bin-dir", bin, "--conf-dir", conf}, false,
			[]string{"bridge", "zlmesh"}, []string{"87-podman.conflist", "zlmesh-db-net.conflist"}},
		{"uninstall podman: not ours", []string{"uninstall", "--network", "podman", "--bin-dir", bin, "--conf-dir", conf}, false,
			[]string{"bridge", "zlmesh"}, []string{"87-podman.conflist", "zlmesh-db-net.conflist"}},
		{"uninstall db-net", []string{"uninstall", "--network", "db-net", "--bin-dir", bin, "--conf-dir", conf}, false,
			[]string{"bridge"}, []string{"87-podman.conflist"}},
		{"uninstall again", []string{"uninstall", "--network", "db-net", "--bin-dir", bin, "--conf-dir", conf}, false,
			[]string{"bridge"}, []string{"87-podman.conflist"}},
	}
	for _, s := range steps {
		err := runCNI(s.args)
		if (err != nil) != s.wantErr {
			t.Fatalf("%s: err %v, want error %v", s.name, err, s.wantErr)
		}
		if got := listDir(t, bin); !slices.Equal(got, s.bin) {
			t.Fatalf("%s: bin dir %v, want %v", s.name, got, s.bin)
		}
		if got := listDir(t, conf); !slices.Equal(got, s.net) {
			t.Fatalf("%s: conf dir %v, want %v", s.name, got, s.net)
		}
		if s.name == "install db with service" {
			var c cniConfList
			b, _ := os.ReadFile(filepath.Join(conf, "zlmesh-db-net.conflist"))
			if err := json.Unmarshal(b, &c); err != nil || c.Name != "db-net" || len(c.Plugins) != 1 || c.Plugins[0].Type != "zlmesh" ||
				c.Plugins[0].Service != "db" || !c.Plugins[0].Capabilities["aliases"] || c.CNIVersion != "1.0.0" {
				t.Fatalf("conflist %s (%v)", b, err)
			}
		}
	}
}
