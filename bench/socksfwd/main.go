// Command socksfwd accepts TCP connections on a local address and carries
// each to a fixed target through a SOCKS5 proxy, so that a program without
// SOCKS support (iperf3) can be measured through zlmesh's SOCKS5 server in
// bench/userspace.sh. It is a bench helper, not part of zlmesh.
//
//	socksfwd -listen 127.0.0.1:15201 -socks 127.0.0.1:1080 -target h1.node.zl:5201
package main

import (
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"os"

	"golang.org/x/net/proxy"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:15201", "local `address` to accept on")
	socks := flag.String("socks", "127.0.0.1:1080", "SOCKS5 proxy `address`")
	target := flag.String("target", "", "`host:port` every connection goes to (names resolve at the proxy)")
	flag.Parse()
	if *target == "" {
		fmt.Fprintln(os.Stderr, "socksfwd: -target is required")
		os.Exit(2)
	}
	d, err := proxy.SOCKS5("tcp", *socks, nil, proxy.Direct)
	if err != nil {
		log.Fatal(err)
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("listening %s → %s via %s\n", ln.Addr(), *target, *socks)
	for {
		c, err := ln.Accept()
		if err != nil {
			log.Fatal(err)
		}
		go func() {
			defer c.Close()
			out, err := d.Dial("tcp", *target)
			if err != nil {
				log.Printf("dial %s: %v", *target, err)
				return
			}
			defer out.Close()
			done := make(chan struct{})
			go func() {
				io.Copy(out, c)
				if cw, ok := out.(interface{ CloseWrite() error }); ok {
					cw.CloseWrite()
				}
				close(done)
			}()
			io.Copy(c, out)
			if cw, ok := c.(interface{ CloseWrite() error }); ok {
				cw.CloseWrite()
			}
			<-done
		}()
	}
}
