package main

import "testing"

// The configuration and CNI_ARGS parsers take whatever a runtime hands
// over: they never panic, a configuration they accept has a valid service
// and a socket, and the mesh name is a valid container id or the runtime's.
func FuzzParseConf(f *testing.F) {
	f.Add([]byte(`{"cniVersion":"1.0.0","name":"zlmesh","type":"zlmesh","socket":"/run/zlmesh/zlmesh.sock","service":"web","runtimeConfig":{"aliases":{"zlmesh":["web1"]}}}`), "IgnoreUnknown=1;K8S_POD_NAME=web1")
	f.Add([]byte(`{"name":"web"}`), "")
	f.Add([]byte(`{"name":"Web","runtimeConfig":{"aliases":null}}`), "K8S_POD_NAME=;=;;")
	f.Add([]byte("\x00{"), "K8S_POD_NAME=a b")
	f.Fuzz(func(t *testing.T, stdin []byte, args string) {
		c, err := parseConf(stdin)
		if err != nil {
			return
		}
		if !dnsLabelRE.MatchString(c.Service) || c.Socket == "" {
			t.Fatalf("accepted service %q socket %q", c.Service, c.Socket)
		}
		name, note := meshName(c, args, "cid")
		if name != "cid" && !containerRE.MatchString(name) {
			t.Fatalf("mesh name %q is not a container id", name)
		}
		if note != "" && name != "cid" {
			t.Fatalf("a note %q without the fallback", note)
		}
	})
}
