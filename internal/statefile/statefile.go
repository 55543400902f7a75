// Package statefile reads and writes the small JSON files of zlmesh's state
// directory. Writes are atomic: a temporary file in the same directory is
// written, fsynced and renamed over the target, and the directory is fsynced,
// so a crash at any point leaves either the old file or the new one, never a
// torn one.
//
// A file that exists but does not parse is an error that names the file; the
// callers never treat it as absent (a broken key file must not be silently
// replaced by a new key).
package statefile

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
)

// ErrNotExist is returned by Read when the file does not exist.
var ErrNotExist = fs.ErrNotExist

// WriteAtomic writes data to path with the given permissions, atomically.
func WriteAtomic(path string, data []byte, perm os.FileMode) error {
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	tmpName := tmp.Name()
	ok := false
	defer func() {
		if !ok {
			tmp.Close()
			os.Remove(tmpName)
		}
	}()
	if err := tmp.Chmod(perm); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if _, err := tmp.Write(data); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := tmp.Sync(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(tmpName, path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	ok = true
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
	return nil
}

// WriteJSON marshals v (indented, with a trailing newline) and writes it
// atomically to path with mode 0600.
func WriteJSON(path string, v any) error {
	data, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	data = append(data, '\n')
	return WriteAtomic(path, data, 0o600)
}

// ReadJSON reads path into v. It returns an error wrapping ErrNotExist when the
// file is absent, and an error naming the file when it does not parse; unknown
// fields and data after the JSON value are rejected so that a file from a
// newer or foreign program, or a torn hand edit, is not half-read.
func ReadJSON(path string, v any) error {
	data, err := os.ReadFile(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("read %s: %w", path, ErrNotExist)
		}
		return fmt.Errorf("read %s: %w", path, err)
	}
	return Decode(path, data, v)
}

// Decode parses data, the content of the state file path, into v with the
// rules of ReadJSON: unknown fields and data after the JSON value are
// errors, and every error names the file.
func Decode(path string, data []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("state file %s does not parse: %w", path, err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return fmt.Errorf("state file %s does not parse: data after the JSON value", path)
	}
	return nil
}
