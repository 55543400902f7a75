package netproxy

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"
)

func TestHTTPProxy(t *testing.T) {
	web := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "hello %s", r.URL.Path)
	}))
	defer web.Close()
	_, port, _ := net.SplitHostPort(web.Listener.Addr().String())

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &HTTPProxy{Dialer: testDialer(), DialTimeout: 2 * time.Second}
	go p.Serve(ln)
	defer ln.Close()
	proxyURL, _ := url.Parse("http://" + ln.Addr().String())
	client := &http.Client{Transport: &http.Transport{Proxy: http.ProxyURL(proxyURL)}, Timeout: 5 * time.Second}

	tests := []struct {
		name   string
		url    string
		status int
		body   string
	}{
		{"plain by name", "http://web1.web.zl:" + port + "/a", 200, "hello /a"},
		{"plain by ip", web.URL + "/b", 200, "hello /b"},
		{"unknown name", "http://nope.zl:" + port + "/", 502, "no such host"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, err := client.Get(tt.url)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != tt.status || !strings.Contains(string(b), tt.body) {
				t.Fatalf("%d %q, want %d containing %q", resp.StatusCode, b, tt.status, tt.body)
			}
		})
	}

	t.Run("connect", func(t *testing.T) {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		fmt.Fprintf(c, "CONNECT web1.web.zl:%s HTTP/1.1\r\nHost: web1.web.zl:%s\r\n\r\n", port, port)
		br := bufio.NewReader(c)
		resp, err := http.ReadResponse(br, nil)
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("CONNECT: %v %v", resp, err)
		}
		fmt.Fprintf(c, "GET /tunnel HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
		resp, err = http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		if string(b) != "hello /tunnel" {
			t.Fatalf("through the tunnel: %q", b)
		}
	})
	t.Run("connect refused", func(t *testing.T) {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		fmt.Fprintf(c, "CONNECT %s HTTP/1.1\r\nHost: x\r\n\r\n", closedPort(t))
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil || resp.StatusCode != 502 {
			t.Fatalf("want 502, got %v %v", resp, err)
		}
	})
}

func TestCheckListen(t *testing.T) {
	tests := []struct {
		addr   string
		allow  bool
		remote bool
		bad    bool
	}{
		{"127.0.0.1:1080", false, false, false},
		{"[::1]:1080", false, false, false},
		{"localhost:1080", false, false, false},
		{"0.0.0.0:1080", false, true, true},
		{":1080", false, true, true},
		{"192.0.2.1:1080", true, true, false},
		{"127.0.0.1", false, false, true},
		{"127.0.0.1:0", false, false, true},
		{"example.com:1080", true, false, true},
	}
	for _, tt := range tests {
		t.Run(tt.addr, func(t *testing.T) {
			remote, err := CheckListen("--socks5-listen", tt.addr, tt.allow)
			if (err != nil) != tt.bad || (err == nil && remote != tt.remote) {
				t.Fatalf("remote=%v err=%v, want remote=%v bad=%v", remote, err, tt.remote, tt.bad)
			}
			if err != nil && strings.Contains(err.Error(), "\n") {
				t.Fatalf("error is not one line: %q", err)
			}
		})
	}
}
