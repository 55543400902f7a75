package journal

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/zlmesh/zlmesh/internal/statefile"
)

func open(t *testing.T, path string) (*Log, []byte, []string) {
	t.Helper()
	l, snap, recs, err := Open(path)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { l.Close() })
	var out []string
	for _, r := range recs {
		out = append(out, string(r))
	}
	return l, snap, out
}

func appendAll(t *testing.T, l *Log, recs ...string) {
	t.Helper()
	for _, r := range recs {
		if err := l.Append([]byte(r)); err != nil {
			t.Fatalf("Append %q: %v", r, err)
		}
	}
}

func equal(a, b []string) bool {
	return strings.Join(a, "\x00") == strings.Join(b, "\x00") && len(a) == len(b)
}

func TestAppendReopen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.json")
	l, snap, recs := open(t, path)
	if snap != nil || recs != nil {
		t.Fatalf("fresh Open = %q, %q", snap, recs)
	}
	appendAll(t, l, `{"put":"a"}`, `{"put":"b"}`)
	if err := l.Append([]byte("c"), []byte("d")); err != nil {
		t.Fatal(err)
	}
	if n := l.Records(); n != 4 {
		t.Fatalf("Records = %d, want 4", n)
	}
	l.Close()
	if err := l.Append([]byte("x")); !errors.Is(err, ErrClosed) {
		t.Fatalf("Append after Close = %v, want ErrClosed", err)
	}
	l2, snap, recs := open(t, path)
	if snap != nil || !equal(recs, []string{`{"put":"a"}`, `{"put":"b"}`, "c", "d"}) {
		t.Fatalf("reopened: %q %q", snap, recs)
	}
	if l2.Records() != 4 {
		t.Fatalf("Records after reopen = %d", l2.Records())
	}
	appendAll(t, l2, "e")
	l2.Close()
	_, _, recs = open(t, path)
	if !equal(recs, []string{`{"put":"a"}`, `{"put":"b"}`, "c", "d", "e"}) {
		t.Fatalf("after a second append: %q", recs)
	}
	// Windows has no Unix modes: os.Stat reports 0666 for any writable file.
	if fi, err := os.Stat(path + ".log"); err != nil || fi.Mode().Perm() != 0o600 && runtime.GOOS != "windows" {
		t.Fatalf("log file: %v %v", fi, err)
	}
}

func TestRewrite(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.json")
	l, _, _ := open(t, path)
	appendAll(t, l, "a", "b")
	if err := l.Rewrite([]byte("SNAP1")); err != nil {
		t.Fatal(err)
	}
	if l.Records() != 0 {
		t.Fatalf("Records after Rewrite = %d", l.Records())
	}
	appendAll(t, l, "c")
	l.Close()
	_, snap, recs := open(t, path)
	if string(snap) != "SNAP1" || !equal(recs, []string{"c"}) {
		t.Fatalf("after Rewrite: %q %q", snap, recs)
	}
}

// A crash after Rewrite wrote the snapshot but before it replaced the log:
// the old log no longer matches and is ignored; the next append starts a
// fresh one.
func TestStaleLogIgnored(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.json")
	l, _, _ := open(t, path)
	if err := l.Rewrite([]byte("SNAP1")); err != nil {
		t.Fatal(err)
	}
	appendAll(t, l, "a", "b")
	l.Close()
	if err := statefile.WriteAtomic(path, []byte("SNAP2 with a and b"), 0o600); err != nil {
		t.Fatal(err)
	}
	l, snap, recs := open(t, path)
	if string(snap) != "SNAP2 with a and b" || recs != nil {
		t.Fatalf("stale log replayed: %q %q", snap, recs)
	}
	appendAll(t, l, "c")
	l.Close()
	_, snap, recs = open(t, path)
	if string(snap) != "SNAP2 with a and b" || !equal(recs, []string{"c"}) {
		t.Fatalf("after append to a stale log: %q %q", snap, recs)
	}
	// A snapshot removed by hand: the log that extended it is stale too.
	os.Remove(path)
	_, snap, recs = open(t, path)
	if snap != nil || recs != nil {
		t.Fatalf("log of a removed snapshot replayed: %q %q", snap, recs)
	}
}

// A torn tail (a crash during an append) is dropped and cut off; appends go
// on after the last good record.
func TestTornTail(t *testing.T) {
	tails := map[string]string{
		"partial line":      "3a1b",
		"partial record":    "12345678 {\"put\"",
		"bad crc":           "00000000 hello\n",
		"zeros":             "\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00",
		"bad crc then torn": "00000000 hello\n0000",
		"two bad lines":     "00000000 x\nzz\n",
	}
	for name, tail := range tails {
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "state.json")
			l, _, _ := open(t, path)
			appendAll(t, l, "a", "b")
			l.Close()
			f, err := os.OpenFile(path+".log", os.O_WRONLY|os.O_APPEND, 0)
			if err != nil {
				t.Fatal(err)
			}
			f.WriteString(tail)
			f.Close()
			l, _, recs := open(t, path)
			if !equal(recs, []string{"a", "b"}) {
				t.Fatalf("records %q, want a, b", recs)
			}
			appendAll(t, l, "c")
			l.Close()
			_, _, recs = open(t, path)
			if !equal(recs, []string{"a", "b", "c"}) {
				t.Fatalf("after append past a torn tail: %q", recs)
			}
		})
	}
}

func TestCorrupt(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.json")
	l, _, _ := open(t, path)
	appendAll(t, l, "a", "b", "c")
	l.Close()
	data, _ := os.ReadFile(path + ".log")
	// Flip one byte of the middle record's payload.
	i := bytes.Index(data, []byte(" b\n"))
	data[i+1] = 'x'
	os.WriteFile(path+".log", data, 0o600)
	if _, _, _, err := Open(path); err == nil || !strings.Contains(err.Error(), path+".log") || !strings.Contains(err.Error(), "line 3") {
		t.Fatalf("Open of a log corrupt in the middle = %v, want an error naming the file and line 3", err)
	}
	for name, body := range map[string]string{"empty": "", "no header": "12345678 a\n", "header only, torn": "zlmesh-journal 1 none"} {
		os.WriteFile(path+".log", []byte(body), 0o600)
		if _, _, _, err := Open(path); err == nil || !strings.Contains(err.Error(), path+".log") {
			t.Errorf("%s: Open = %v, want an error naming the file", name, err)
		}
	}
}

func TestAppendRefusesNewline(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.json")
	l, _, _ := open(t, path)
	if err := l.Append([]byte("a\nb")); err == nil {
		t.Fatal("a record with a newline was accepted")
	}
	if _, _, recs := open(t, path); recs != nil {
		t.Fatalf("records %q after a refused append", recs)
	}
}

// An append that fails (here: the log's directory made read-only... as root
// that does not stop writes, so a closed file stands in) leaves nothing.
func TestAppendFailureLeavesNothing(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.json")
	l, _, _ := open(t, path)
	appendAll(t, l, "a")
	l.f.Close() // the next write fails
	if err := l.Append([]byte("b")); err == nil {
		t.Fatal("append to a closed file succeeded")
	}
	// The state is still readable and holds exactly the good record. The
	// reader is closed at once: on Windows its open log would make the
	// rename in Rewrite fail.
	r, _, recs := open(t, path)
	r.Close()
	if !equal(recs, []string{"a"}) {
		t.Fatalf("records %q", recs)
	}
	// Rewrite recovers the log.
	if err := l.Rewrite([]byte("S")); err != nil {
		t.Fatal(err)
	}
	appendAll(t, l, "c")
	_, snap, recs := open(t, path)
	if string(snap) != "S" || !equal(recs, []string{"c"}) {
		t.Fatalf("after recovery: %q %q", snap, recs)
	}
}

// FuzzOpen: any log content after a valid header either fails to open with
// an error naming the file, or opens to records that survive an append and a
// reopen unchanged.
func FuzzOpen(f *testing.F) {
	f.Add([]byte(""))
	f.Add([]byte("8a9a14b5 a\n"))
	f.Add([]byte("8a9a14b5 a\n00000000 b\n"))
	f.Add([]byte("00000000 b\n8a9a14b5 a\n"))
	f.Add([]byte("8a9a14b5 a"))
	f.Fuzz(func(t *testing.T, body []byte) {
		path := filepath.Join(t.TempDir(), "s")
		os.WriteFile(path+".log", append([]byte(header+noSnapshot+"\n"), body...), 0o600)
		l, _, recs, err := Open(path)
		if err != nil {
			if !strings.Contains(err.Error(), path) {
				t.Fatalf("error %q does not name the file", err)
			}
			return
		}
		if err := l.Append([]byte("tail")); err != nil {
			t.Fatal(err)
		}
		l.Close()
		l2, _, again, err := Open(path)
		if err != nil {
			t.Fatal(err)
		}
		l2.Close()
		if len(again) != len(recs)+1 || string(again[len(recs)]) != "tail" {
			t.Fatalf("reopen: %d records, want %d + tail", len(again), len(recs))
		}
		for i := range recs {
			if !bytes.Equal(recs[i], again[i]) {
				t.Fatalf("record %d changed: %q → %q", i, recs[i], again[i])
			}
		}
	})
}

func BenchmarkAppend(b *testing.B) {
	path := filepath.Join(b.TempDir(), "s")
	l, _, _, err := Open(path)
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	rec := []byte(fmt.Sprintf(`{"put":{"container":"%s"}}`, strings.Repeat("x", 300)))
	for b.Loop() {
		if err := l.Append(rec); err != nil {
			b.Fatal(err)
		}
	}
}
