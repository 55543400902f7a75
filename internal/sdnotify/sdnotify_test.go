package sdnotify

import (
	"net"
	"path/filepath"
	"runtime"
	"testing"
	"time"
)

func TestNotify(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("no unixgram sockets on Windows")
	}
	path := filepath.Join(t.TempDir(), "notify.sock")
	ln, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()

	tests := []struct {
		name, env, state string
		sent             bool
		wantErr          bool
	}{
		{name: "ready", env: path, state: Ready, sent: true},
		{name: "status", env: path, state: "STATUS=3 members\nREADY=1", sent: true},
		{name: "not under systemd", env: "", state: Ready},
		{name: "socket gone", env: filepath.Join(t.TempDir(), "none.sock"), state: Ready, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv(Socket, tt.env)
			sent, err := Notify(tt.state)
			if sent != tt.sent || (err != nil) != tt.wantErr {
				t.Fatalf("Notify = %v, %v; want %v, error %v", sent, err, tt.sent, tt.wantErr)
			}
			if !sent {
				return
			}
			buf := make([]byte, 256)
			ln.SetReadDeadline(time.Now().Add(5 * time.Second))
			n, err := ln.Read(buf)
			if err != nil {
				t.Fatal(err)
			}
			if got := string(buf[:n]); got != tt.state {
				t.Errorf("received %q, want %q", got, tt.state)
			}
		})
	}
}

func TestNotifyAbstract(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("abstract sockets are Linux only")
	}
	name := "zlmesh-sdnotify-test-" + time.Now().Format("150405.000000000")
	ln, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: "\x00" + name, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	if sent, err := NotifySocket("@"+name, Ready); !sent || err != nil {
		t.Fatalf("NotifySocket = %v, %v", sent, err)
	}
	buf := make([]byte, 64)
	ln.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, err := ln.Read(buf)
	if err != nil || string(buf[:n]) != Ready {
		t.Fatalf("read %q, %v", buf[:n], err)
	}
}
