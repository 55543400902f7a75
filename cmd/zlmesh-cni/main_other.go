//go:build !linux

// Command zlmesh-cni is zlmesh's CNI plugin; it runs on Linux only.
package main

import (
	"fmt"
	"os"
)

func main() {
	fmt.Println(`{"cniVersion":"1.0.0","code":50,"msg":"zlmesh-cni runs on Linux only"}`)
	os.Exit(1)
}
