//go:build windows

package pipe

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

var pipeSeq atomic.Int32

// testName is a pipe name of this test process (pipes are machine-wide).
func testName() string {
	return fmt.Sprintf(`\\.\pipe\zlmesh-test-%d-%d`, os.Getpid(), pipeSeq.Add(1))
}

func listen(t *testing.T, c Config) (net.Listener, string) {
	t.Helper()
	name := testName()
	ln, err := Listen(name, c)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln, name
}

func httpClient(name string) *http.Client {
	return &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) { return Dial(ctx, name) },
	}}
}

// HTTP over the pipe, many clients at once (several pipe instances), with
// the group ACE in the security descriptor.
func TestHTTPOverPipe(t *testing.T) {
	sid := "S-1-5-32-545" // BUILTIN\Users
	ln, name := listen(t, Config{GroupSID: sid})
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		fmt.Fprintf(w, "%s %s %s", r.Method, r.URL.Path, body)
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })

	hc := httpClient(name)
	defer hc.CloseIdleConnections()
	var wg sync.WaitGroup
	errs := make(chan error, 20)
	for i := range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			path := fmt.Sprintf("/v1/x%d", i)
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://zlmesh"+path, nil)
			resp, err := hc.Do(req)
			if err != nil {
				errs <- err
				return
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			if want := "GET " + path + " "; string(b) != want {
				errs <- fmt.Errorf("answer %q, want %q", b, want)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// A second server on the same name fails clearly, and leaves the first
// one working.
func TestSecondListenerRefused(t *testing.T) {
	ln, name := listen(t, Config{})
	if ln2, err := Listen(name, Config{}); !errors.Is(err, ErrInUse) {
		if ln2 != nil {
			ln2.Close()
		}
		t.Fatalf("second Listen: %v, want ErrInUse", err)
	}
	go func() {
		c, err := ln.Accept()
		if err == nil {
			c.Write([]byte("ok"))
			c.Close()
		}
	}()
	c, err := Dial(context.Background(), name)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	b, _ := io.ReadAll(c)
	if string(b) != "ok" {
		t.Errorf("read %q from the first server", b)
	}
}

// Close unblocks a waiting Accept; afterwards nobody is there to dial.
func TestCloseUnblocksAccept(t *testing.T) {
	ln, name := listen(t, Config{})
	done := make(chan error, 1)
	go func() {
		_, err := ln.Accept()
		done <- err
	}()
	time.Sleep(50 * time.Millisecond)
	ln.Close()
	select {
	case err := <-done:
		if !errors.Is(err, net.ErrClosed) {
			t.Errorf("Accept after Close: %v, want net.ErrClosed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Accept still blocked 5 s after Close")
	}
	if _, err := Dial(context.Background(), name); !errors.Is(err, ErrNotFound) {
		t.Errorf("Dial after Close: %v, want ErrNotFound", err)
	}
	if _, err := ln.Accept(); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Accept on a closed listener: %v", err)
	}
}

func TestDialMissing(t *testing.T) {
	if _, err := Dial(context.Background(), testName()); !errors.Is(err, ErrNotFound) {
		t.Errorf("Dial of a missing pipe: %v, want ErrNotFound", err)
	}
	if _, err := Dial(context.Background(), "/run/zlmesh/zlmesh.sock"); err == nil {
		t.Error("Dial of a Unix path succeeded")
	}
}

// Connections have deadlines, and a client that goes away is EOF.
func TestConnDeadlineAndEOF(t *testing.T) {
	ln, name := listen(t, Config{})
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			close(accepted)
			return
		}
		accepted <- c
	}()
	client, err := Dial(context.Background(), name)
	if err != nil {
		t.Fatal(err)
	}
	server := <-accepted
	if server == nil {
		t.Fatal("accept failed")
	}
	defer server.Close()

	server.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	buf := make([]byte, 16)
	if _, err := server.Read(buf); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("Read past the deadline: %v, want os.ErrDeadlineExceeded", err)
	}
	server.SetReadDeadline(time.Time{})
	client.Write([]byte("hi"))
	if n, err := server.Read(buf); err != nil || string(buf[:n]) != "hi" {
		t.Errorf("Read: %q %v", buf[:n], err)
	}
	client.Close()
	if _, err := server.Read(buf); !errors.Is(err, io.EOF) {
		t.Errorf("Read after the client closed: %v, want io.EOF", err)
	}
}

func TestResolveGroup(t *testing.T) {
	sid, err := ResolveGroup("S-1-5-32-544")
	if err != nil || sid != "S-1-5-32-544" {
		t.Errorf("ResolveGroup(SID) = %q, %v", sid, err)
	}
	if _, err := ResolveGroup("zlmesh-no-such-group"); !errors.Is(err, ErrBadGroup) {
		t.Errorf("ResolveGroup(unknown) = %v, want ErrBadGroup", err)
	}
	sid, err = ResolveGroup("Administrators")
	t.Logf("Administrators: %q %v", sid, err)
	if err == nil && sid != "S-1-5-32-544" {
		t.Errorf("Administrators resolved to %s", sid)
	}
}

// A client that connects and leaves before Accept does not end the
// listener (http.Server stops serving on a non-temporary Accept error).
func TestClientGoneBeforeAccept(t *testing.T) {
	ln, name := listen(t, Config{})
	c, err := Dial(context.Background(), name)
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	go func() {
		for {
			s, err := ln.Accept()
			if err != nil {
				return
			}
			s.Write([]byte("ok"))
			s.Close()
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err = Dial(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if b, _ := io.ReadAll(c); string(b) != "ok" {
		t.Errorf("read %q", b)
	}
}
