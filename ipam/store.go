package ipam

import (
	"errors"
	"fmt"

	"github.com/zlmesh/zlmesh/internal/statefile"
)

// fileStore keeps the State in one JSON file.
type fileStore struct{ path string }

// NewFileStore returns a Store in one JSON file, written atomically
// (internal/statefile: temp file, fsync, rename). A missing file loads as an
// empty State; a file that does not parse is an error naming the file, never
// an empty state. It holds no lock of its own: the Allocator serializes its
// calls, and two stores on one path in one process must not be used at once.
func NewFileStore(path string) Store { return &fileStore{path: path} }

func (f *fileStore) Load() (State, error) {
	var s State
	if err := statefile.ReadJSON(f.path, &s); err != nil {
		if errors.Is(err, statefile.ErrNotExist) {
			return State{}, nil
		}
		return State{}, fmt.Errorf("load ipam state: %w", err)
	}
	return s, nil
}

func (f *fileStore) Save(s State) error {
	if err := statefile.WriteJSON(f.path, s); err != nil {
		return fmt.Errorf("save ipam state: %w", err)
	}
	return nil
}

func (f *fileStore) String() string { return f.path }
