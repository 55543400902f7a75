// Package journal makes small, frequent changes to a state file durable
// without rewriting the file each time. The state lives in two files:
//
//	<path>      the snapshot, in the caller's format, replaced atomically
//	            (internal/statefile: temp file, fsync, rename, directory fsync)
//	<path>.log  the records appended since that snapshot, each synced to
//	            disk before Append returns
//
// so a change costs one append and one fsync whatever the size of the
// state, and the caller folds the log into a new snapshot (Rewrite) now and
// then.
//
// The log's first line names the snapshot it extends by the SHA-256 of the
// snapshot's bytes. Rewrite writes the new snapshot first and a fresh log
// second; a crash between the two leaves the old log, which then no longer
// matches the snapshot and is ignored (the new snapshot holds its records).
// So after a crash at any point, Open returns either the state before or the
// state after each change, never a mix.
//
// A record is one line: its CRC-32C in hex, a space, the payload, '\n'. A
// torn or garbled last line (a crash during an append, which therefore never
// returned) is dropped on Open and cut off the file. A bad line followed by
// good ones is corruption: Open fails with an error naming the file, and the
// caller must not treat the state as empty.
//
// What a record means is the caller's business; it must apply the records
// in order on top of the snapshot. Records that set or delete one key each
// are a good fit: replaying a record twice changes nothing.
package journal

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/crc32"
	"io/fs"
	"os"
	"strconv"
	"sync"

	"github.com/zlmesh/zlmesh/internal/statefile"
)

// header starts every log; the snapshot's hash follows it.
const header = "zlmesh-journal 1 "

// noSnapshot is the hash written for a log whose snapshot does not exist.
const noSnapshot = "none"

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// ErrClosed is returned by the methods of a closed Log.
var ErrClosed = errors.New("journal is closed")

// Log is the log of one snapshot file. Its methods are safe for concurrent
// use; they serialize on one lock, held while a call writes and syncs.
type Log struct {
	path, logPath string

	mu      sync.Mutex
	f       *os.File // open for appending; nil until the log file is (re)made
	snap    string   // hash of the snapshot the log extends
	size    int64    // bytes of the log known good
	records int      // records in the log
	broken  error    // an append failed and could not be undone: Rewrite first
	closed  bool
}

// Open reads the snapshot at path (nil when it does not exist) and the
// records of its log that follow it, in order, and returns the Log to append
// further records to. A log that belongs to another snapshot is ignored (and
// replaced on the first Append); a torn last record is dropped.
func Open(path string) (l *Log, snapshot []byte, records [][]byte, err error) {
	l = &Log{path: path, logPath: path + ".log", snap: noSnapshot}
	snapshot, err = os.ReadFile(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		snapshot = nil
	case err != nil:
		return nil, nil, nil, fmt.Errorf("read %s: %w", path, err)
	default:
		l.snap = hashOf(snapshot)
	}
	data, err := os.ReadFile(l.logPath)
	if errors.Is(err, fs.ErrNotExist) {
		return l, snapshot, nil, nil
	}
	if err != nil {
		return nil, nil, nil, fmt.Errorf("read %s: %w", l.logPath, err)
	}
	nl := bytes.IndexByte(data, '\n')
	if nl < 0 || !bytes.HasPrefix(data, []byte(header)) {
		return nil, nil, nil, fmt.Errorf("journal %s does not parse: no header line", l.logPath)
	}
	if string(data[len(header):nl]) != l.snap {
		// A log from before the last Rewrite: its records are in the
		// snapshot already.
		return l, snapshot, nil, nil
	}
	// Complete lines are records; an incomplete last line is torn. A bad
	// line is forgiven only at the tail: nothing good may follow it.
	good := nl + 1
	bad := 0 // line number of the first bad line, 0 if none
	for line, rest := 2, data[good:]; ; line++ {
		end := bytes.IndexByte(rest, '\n')
		if end < 0 {
			break
		}
		rec, ok := decodeLine(rest[:end])
		switch {
		case ok && bad != 0:
			return nil, nil, nil, fmt.Errorf("journal %s is corrupt at line %d (good records follow it)", l.logPath, bad)
		case ok:
			records = append(records, rec)
			good += end + 1
		case bad == 0:
			bad = line
		}
		rest = rest[end+1:]
	}
	f, err := os.OpenFile(l.logPath, os.O_WRONLY, 0)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("open %s: %w", l.logPath, err)
	}
	if good < len(data) {
		if err := f.Truncate(int64(good)); err == nil {
			err = f.Sync()
		}
		if err != nil {
			f.Close()
			return nil, nil, nil, fmt.Errorf("cut the torn tail of %s: %w", l.logPath, err)
		}
	}
	l.f, l.size, l.records = f, int64(good), len(records)
	return l, snapshot, records, nil
}

// decodeLine checks one line (without its '\n') and returns its payload.
func decodeLine(line []byte) ([]byte, bool) {
	if len(line) < 9 || line[8] != ' ' {
		return nil, false
	}
	sum, err := strconv.ParseUint(string(line[:8]), 16, 32)
	if err != nil {
		return nil, false
	}
	payload := line[9:]
	if crc32.Checksum(payload, castagnoli) != uint32(sum) {
		return nil, false
	}
	return payload, true
}

func hashOf(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// Append writes records to the log, one line each, and syncs the file; when
// it returns nil they are on disk. A record must not contain '\n'. On error
// nothing of the call is in the log. The records are the caller's again
// when Append returns.
func (l *Log) Append(records ...[]byte) error {
	var buf []byte
	for _, r := range records {
		if bytes.IndexByte(r, '\n') >= 0 {
			return fmt.Errorf("append to %s: a record contains a newline", l.logPath)
		}
		buf = fmt.Appendf(buf, "%08x ", crc32.Checksum(r, castagnoli))
		buf = append(buf, r...)
		buf = append(buf, '\n')
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	switch {
	case l.closed:
		return ErrClosed
	case l.broken != nil:
		return fmt.Errorf("append to %s: an earlier append could not be undone (%v); a snapshot must be written first", l.logPath, l.broken)
	}
	if l.f == nil {
		if err := l.newLogLocked(); err != nil {
			return fmt.Errorf("append to %s: %w", l.logPath, err)
		}
	}
	_, err := l.f.WriteAt(buf, l.size)
	if err == nil {
		err = l.f.Sync()
	}
	if err != nil {
		// Take the partial line back, so that later records do not
		// follow garbage.
		if terr := l.f.Truncate(l.size); terr != nil {
			l.broken = terr
		}
		return fmt.Errorf("append to %s: %w", l.logPath, err)
	}
	l.size += int64(len(buf))
	l.records += len(records)
	return nil
}

// newLogLocked replaces the log file by an empty one that extends the
// current snapshot.
func (l *Log) newLogLocked() error {
	if l.f != nil {
		l.f.Close()
		l.f = nil
	}
	h := []byte(header + l.snap + "\n")
	if err := statefile.WriteAtomic(l.logPath, h, 0o600); err != nil {
		return err
	}
	f, err := os.OpenFile(l.logPath, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	l.f, l.size, l.records = f, int64(len(h)), 0
	return nil
}

// Records returns the number of records in the log since the snapshot; the
// caller rewrites the snapshot when it thinks the log long enough.
func (l *Log) Records() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.records
}

// Rewrite replaces the snapshot with data (which must hold every record
// appended so far) and starts an empty log after it. It succeeds once the
// snapshot is written: if the new log cannot be made then, the next Append
// makes it (the old log no longer matches the snapshot, so Open ignores it
// meanwhile). On error the snapshot and the log are unchanged.
func (l *Log) Rewrite(data []byte) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return ErrClosed
	}
	if err := statefile.WriteAtomic(l.path, data, 0o600); err != nil {
		return err
	}
	l.snap, l.broken = hashOf(data), nil
	if err := l.newLogLocked(); err != nil {
		if l.f != nil {
			l.f.Close()
		}
		l.f = nil // the next Append tries again
	}
	return nil
}

// Path returns the snapshot's path; the log is Path()+".log".
func (l *Log) Path() string { return l.path }

// Close closes the log file. The files stay. Close is idempotent.
func (l *Log) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.closed = true
	if l.f == nil {
		return nil
	}
	err := l.f.Close()
	l.f = nil
	return err
}
