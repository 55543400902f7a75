package main

// `zlmesh cni install|uninstall`: put the CNI plugin and a network
// configuration where container runtimes look for them, and take exactly
// that away again.

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"

	"github.com/zlmesh/zlmesh/api"
)

// cniPluginName is the plugin's file name in the CNI bin dir: the "type" of
// its network configurations.
const cniPluginName = "zlmesh"

// cniNetworkRE is the rule for a network name (libcni's, minus the length
// freedom): it becomes part of a file name.
var cniNetworkRE = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,62}$`)

// cniConfList is the configuration install writes.
type cniConfList struct {
	CNIVersion string      `json:"cniVersion"`
	Name       string      `json:"name"`
	Plugins    []cniPlugin `json:"plugins"`
}

type cniPlugin struct {
	Type         string          `json:"type"`
	Socket       string          `json:"socket,omitempty"`
	Service      string          `json:"service,omitempty"`
	Capabilities map[string]bool `json:"capabilities,omitempty"`
}

// cniConfPath is the configuration file install writes for network.
func cniConfPath(confDir, network string) string {
	return filepath.Join(confDir, "zlmesh-"+network+".conflist")
}

func runCNI(args []string) error {
	if len(args) == 0 {
		return errors.New("usage: zlmesh cni install|uninstall [flags] (see -h)")
	}
	switch args[0] {
	case "install":
		return runCNIInstall(args[1:])
	case "uninstall":
		return runCNIUninstall(args[1:])
	}
	return fmt.Errorf("unknown cni subcommand %q (install, uninstall)", args[0])
}

type cniDirs struct {
	binDir, confDir, network string
}

func (d *cniDirs) register(fs interface {
	StringVar(*string, string, string, string)
}) {
	fs.StringVar(&d.binDir, "bin-dir", "/opt/cni/bin", "the runtime's CNI plugin directory")
	fs.StringVar(&d.confDir, "conf-dir", "/etc/cni/net.d", "the runtime's CNI configuration directory")
	fs.StringVar(&d.network, "network", "", "CNI network name (required; also the default service)")
}

func (d *cniDirs) check() error {
	if !cniNetworkRE.MatchString(d.network) {
		return fmt.Errorf("--network %q: want 1 to 63 of A-Z, a-z, 0-9, '_', '.', '-', starting with a letter or digit", d.network)
	}
	return nil
}

func runCNIInstall(args []string) error {
	var d cniDirs
	fs := newFlagSet("cni install", "cni install --network NAME [--service S] [--socket PATH] [--bin-dir /opt/cni/bin] [--conf-dir /etc/cni/net.d] [--plugin PATH]")
	d.register(fs)
	service := fs.String("service", "", "service the network's containers join (default: the network name)")
	socket := fs.String("socket", api.DefaultSocket, "the node's control socket, as the plugin will reach it")
	plugin := fs.String("plugin", "", "the zlmesh-cni binary to install (default: zlmesh-cni beside this program, else on PATH)")
	version := fs.String("cni-version", "1.0.0", "cniVersion of the configuration (0.4.0, 1.0.0 or 1.1.0)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if err := noArgs(fs); err != nil {
		return err
	}
	if err := d.check(); err != nil {
		return err
	}
	svc := *service
	if svc == "" {
		svc = d.network
	}
	if !regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`).MatchString(svc) {
		return fmt.Errorf("service %q is not a DNS label (a-z, 0-9, '-'); give --service", svc)
	}
	switch *version {
	case "0.4.0", "1.0.0", "1.1.0":
	default:
		return fmt.Errorf("--cni-version %q: want 0.4.0, 1.0.0 or 1.1.0", *version)
	}
	src, err := findPlugin(*plugin)
	if err != nil {
		return err
	}
	conf := cniConfList{CNIVersion: *version, Name: d.network, Plugins: []cniPlugin{{
		Type: cniPluginName, Socket: *socket, Service: *service, Capabilities: map[string]bool{"aliases": true},
	}}}
	b, err := json.MarshalIndent(conf, "", "  ")
	if err != nil {
		return err
	}
	dst := filepath.Join(d.binDir, cniPluginName)
	if err := copyFileAtomic(src, dst, 0o755); err != nil {
		return fmt.Errorf("install plugin %s: %w", dst, err)
	}
	confPath := cniConfPath(d.confDir, d.network)
	if err := writeFileAtomic(confPath, append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("write %s: %w", confPath, err)
	}
	fmt.Printf("installed %s (from %s) and %s\n", dst, src, confPath)
	return nil
}

func runCNIUninstall(args []string) error {
	var d cniDirs
	fs := newFlagSet("cni uninstall", "cni uninstall --network NAME [--bin-dir /opt/cni/bin] [--conf-dir /etc/cni/net.d]")
	d.register(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if err := noArgs(fs); err != nil {
		return err
	}
	if err := d.check(); err != nil {
		return err
	}
	confPath := cniConfPath(d.confDir, d.network)
	if ours, err := isOurConf(confPath, d.network); err != nil {
		return err
	} else if ours {
		if err := os.Remove(confPath); err != nil {
			return err
		}
		fmt.Println("removed", confPath)
	} else {
		fmt.Printf("%s is not there or not written by zlmesh cni install; left alone\n", confPath)
	}
	// The plugin goes with the last zlmesh network configuration.
	others, _ := filepath.Glob(filepath.Join(d.confDir, "zlmesh-*.conflist"))
	for _, o := range others {
		var c cniConfList
		if b, err := os.ReadFile(o); err == nil && json.Unmarshal(b, &c) == nil {
			if ok, _ := isOurConf(o, c.Name); ok {
				fmt.Printf("%s still uses the plugin; %s kept\n", o, filepath.Join(d.binDir, cniPluginName))
				return nil
			}
		}
	}
	bin := filepath.Join(d.binDir, cniPluginName)
	if err := os.Remove(bin); err == nil {
		fmt.Println("removed", bin)
	} else if !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

// isOurConf reports whether path is a configuration install wrote for
// network: a conflist of that name whose only plugin is zlmesh's. A missing
// file is (false, nil).
func isOurConf(path, network string) (bool, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	var c cniConfList
	if json.Unmarshal(b, &c) != nil {
		return false, nil
	}
	return c.Name == network && len(c.Plugins) == 1 && c.Plugins[0].Type == cniPluginName, nil
}

// findPlugin returns the plugin binary to install.
func findPlugin(given string) (string, error) {
	if given != "" {
		return given, nil
	}
	if self, err := os.Executable(); err == nil {
		p := filepath.Join(filepath.Dir(self), "zlmesh-cni")
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	p, err := exec.LookPath("zlmesh-cni")
	if err != nil {
		return "", errors.New("zlmesh-cni not found beside zlmesh nor on PATH; build it (go build ./cmd/zlmesh-cni) and give --plugin")
	}
	return p, nil
}

// copyFileAtomic copies src to dst through a temporary file in dst's
// directory, so a runtime never runs a half-written plugin.
func copyFileAtomic(src, dst string, mode os.FileMode) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	return writeAtomic(dst, mode, func(w io.Writer) error { _, err := io.Copy(w, in); return err })
}

func writeFileAtomic(path string, b []byte, mode os.FileMode) error {
	return writeAtomic(path, mode, func(w io.Writer) error { _, err := w.Write(b); return err })
}

func writeAtomic(path string, mode os.FileMode, fill func(io.Writer) error) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if err := fill(tmp); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}
