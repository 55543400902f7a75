//go:build !windows

package wintest

func wine() bool { return false }
