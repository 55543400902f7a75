//go:build windows

package wintest

import (
	"sync"

	"golang.org/x/sys/windows"
)

var wine = sync.OnceValue(func() bool {
	ntdll := windows.NewLazySystemDLL("ntdll.dll")
	return ntdll.NewProc("wine_get_version").Find() == nil
})
