package node

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/zlmesh/zlmesh/internal/statefile"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// keyFile is the node's WireGuard private key in the state dir: base64, one
// line, mode 0600. It is made once and reused on every start; a file that
// does not parse is an error, never a reason to make a new key (that would
// give the node a new identity).
const keyFile = "private.key"

// loadOrCreateKey returns the node's private key and whether it was created.
func loadOrCreateKey(stateDir string) (wgtypes.Key, bool, error) {
	path := filepath.Join(stateDir, keyFile)
	data, err := os.ReadFile(path)
	switch {
	case err == nil:
		k, perr := wgtypes.ParseKey(strings.TrimSpace(string(data)))
		if perr != nil {
			return wgtypes.Key{}, false, fmt.Errorf("private key %s does not parse (%v): fix or remove it; removing it gives this node a new identity", path, perr)
		}
		if fi, serr := os.Stat(path); serr == nil && fi.Mode().Perm()&0o077 != 0 {
			if cerr := os.Chmod(path, 0o600); cerr != nil {
				return wgtypes.Key{}, false, fmt.Errorf("private key %s is readable by others and chmod failed: %w", path, cerr)
			}
		}
		return k, false, nil
	case errors.Is(err, fs.ErrNotExist):
		k, gerr := wgtypes.GeneratePrivateKey()
		if gerr != nil {
			return wgtypes.Key{}, false, fmt.Errorf("generate private key: %w", gerr)
		}
		if werr := statefile.WriteAtomic(path, []byte(k.String()+"\n"), 0o600); werr != nil {
			return wgtypes.Key{}, false, werr
		}
		return k, true, nil
	default:
		return wgtypes.Key{}, false, fmt.Errorf("read private key: %w", err)
	}
}
