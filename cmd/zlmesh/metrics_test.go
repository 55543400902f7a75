package main

import (
	"net"
	"strings"
	"testing"
)

func TestListenMetricsBadAddress(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	for _, tc := range []struct{ addr, want string }{
		{"nonsense", "--metrics-listen nonsense: "},
		{"127.0.0.1:99999", "--metrics-listen 127.0.0.1:99999: "},
		{busy.Addr().String(), "address already in use"},
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
