//go:build windows

package node

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/zlmesh/zlmesh/api"
)

// The control API for real over its named pipe (run under Wine by
// scripts/test-windows.sh): the node's handler served on the pipe
// listenControl makes, and the CLI's client (api.Client) dialing it.
func TestControlAPIOverPipe(t *testing.T) {
	name := fmt.Sprintf(`\\.\pipe\zlmesh-test-node-%d`, os.Getpid())
	n, _ := portsNode(t, false, nil, nil)
	ln, err := listenControl(name, "Administrators")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: n.controlHandler()}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })

	// A second zlmesh on the same pipe fails and says why.
	if ln2, err := listenControl(name, ""); err == nil {
		ln2.Close()
		t.Fatal("a second listener on the control pipe succeeded")
	} else if !strings.Contains(err.Error(), "another zlmesh") {
		t.Errorf("second listener: %v", err)
	}

	c := api.NewClient(name)
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	att, err := c.Attachments(ctx)
	if err != nil || len(att) != 0 {
		t.Errorf("Attachments: %v %v", att, err)
	}
	ports, err := c.Ports(ctx)
	if err != nil || len(ports) != 0 {
		t.Errorf("Ports: %v %v", ports, err)
	}
	// Errors keep their code across the pipe.
	var ae *api.Error
	err = c.Do(ctx, http.MethodGet, "/v1/nope", nil, nil)
	if !errors.As(err, &ae) || ae.Code != api.CodeNotFound {
		t.Errorf("unknown endpoint: %v, want code %s", err, api.CodeNotFound)
	}
	err = c.Do(ctx, http.MethodDelete, "/v1/attachments", nil, nil)
	if !errors.As(err, &ae) || ae.Code != api.CodeMethodNotAllow {
		t.Errorf("wrong method: %v, want code %s", err, api.CodeMethodNotAllow)
	}
}

func TestControlPipeBadGroup(t *testing.T) {
	name := fmt.Sprintf(`\\.\pipe\zlmesh-test-node-group-%d`, os.Getpid())
	ln, err := listenControl(name, "zlmesh-no-such-group")
	if err == nil {
		ln.Close()
		t.Fatal("listen with an unknown group succeeded")
	}
	if !strings.Contains(err.Error(), "--control-group") {
		t.Errorf("error does not name the flag: %v", err)
	}
	// Nothing half made: the name is free.
	ln, err = listenControl(name, "")
	if err != nil {
		t.Fatalf("listen after the failed one: %v", err)
	}
	ln.Close()
}
