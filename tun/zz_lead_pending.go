package tun

// Placeholder on the lead's node branch only; deleted when branch tun lands.

import (
	"os"

	wgtun "golang.zx2c4.com/wireguard/tun"
)

func (w *Wrapper) File() *os.File                               { panic("pending") }
func (w *Wrapper) Read(b [][]byte, s []int, o int) (int, error) { panic("pending") }
func (w *Wrapper) Write(b [][]byte, o int) (int, error)         { panic("pending") }
func (w *Wrapper) MTU() (int, error)                            { panic("pending") }
func (w *Wrapper) Name() (string, error)                        { panic("pending") }
func (w *Wrapper) Events() <-chan wgtun.Event                   { panic("pending") }
func (w *Wrapper) Close() error                                 { panic("pending") }
func (w *Wrapper) BatchSize() int                               { panic("pending") }
