package main

import (
	"net"
	"runtime"
	"strings"
	"testing"
)

func TestListenMetricsBadAddress(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	inUse := "address already in use"
	if runtime.GOOS == "windows" {
		inUse = "bind: " // Windows words it "Only one usage of each socket address…" (Wine: winapi error #10048)
	}
	for _, tc := range []struct{ addr, want string }{
		{"nonsense", "--metrics-listen nonsense: "},
		{"127.0.0.1:99999", "--metrics-listen 127.0.0.1:99999: "},
		{busy.Addr().String(), inUse},
	} {
		t.Run(tc.addr, func(t *testing.T) {
			ln, err := listenMetrics(tc.addr)
			if err == nil {
				ln.Close()
				t.Fatalf("listenMetrics(%q) succeeded", tc.addr)
			}
			if !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "\n") {
				t.Errorf("error %q, want one line containing %q", err, tc.want)
			}
		})
	}
}
