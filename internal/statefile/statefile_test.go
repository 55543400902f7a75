package statefile

import (
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

func TestRoundTripAndErrors(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "s.json")
	type S struct{ A int }
	var got S
	if err := ReadJSON(path, &got); !errors.Is(err, ErrNotExist) {
		t.Fatalf("missing file: got %v, want ErrNotExist", err)
	}
	if err := WriteJSON(path, S{A: 7}); err != nil {
		t.Fatal(err)
	}
	if err := ReadJSON(path, &got); err != nil || got.A != 7 {
		t.Fatalf("read back: %v %+v", err, got)
	}
	fi, _ := os.Stat(path)
	// Windows has no Unix modes: os.Stat reports 0666 for any writable file.
	if fi.Mode().Perm() != 0o600 && runtime.GOOS != "windows" {
		t.Errorf("mode %v, want 0600", fi.Mode().Perm())
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Errorf("temp files left behind: %v", entries)
	}
	for name, body := range map[string]string{"garbage": "{not json", "unknown field": `{"B":1}`, "trailing data": `{"A":1} {"A":2}`, "trailing garbage": `{"A":1} x`} {
		os.WriteFile(path, []byte(body), 0o600)
		err := ReadJSON(path, &got)
		if err == nil || errors.Is(err, ErrNotExist) || !strings.Contains(err.Error(), path) {
			t.Errorf("%s: got %v, want a parse error naming the file", name, err)
		}
	}
}
