package node

import (
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

func TestKeyIsMadeOnceAndReused(t *testing.T) {
	dir := t.TempDir()
	k1, created, err := loadOrCreateKey(dir)
	if err != nil || !created {
		t.Fatalf("first start: created=%v err=%v", created, err)
	}
	fi, err := os.Stat(filepath.Join(dir, keyFile))
	// Windows has no Unix modes: os.Stat reports 0666 for any writable file.
	if err != nil || fi.Mode().Perm() != 0o600 && runtime.GOOS != "windows" {
		t.Fatalf("key file mode: %v %v", fi.Mode(), err)
	}
	k2, created, err := loadOrCreateKey(dir)
	if err != nil || created || k1 != k2 {
		t.Fatalf("second start: same=%v created=%v err=%v", k1 == k2, created, err)
	}
}

func TestBrokenKeyIsAnErrorNotANewKey(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, keyFile)
	os.WriteFile(path, []byte("not a key\n"), 0o600)
	_, _, err := loadOrCreateKey(dir)
	if err == nil || !strings.Contains(err.Error(), path) {
		t.Fatalf("got %v, want an error naming %s", err, path)
	}
	data, _ := os.ReadFile(path)
	if string(data) != "not a key\n" {
		t.Fatalf("broken key file was overwritten")
	}
}
