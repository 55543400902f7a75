package mesh

import (
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"
)

// ErrBadKey is wrapped by every error about a cluster key that has the wrong
// length or encoding.
var ErrBadKey = errors.New("bad cluster key")

// KeySize is the length of the keys GenerateKey makes (AES-256).
const KeySize = 32

// GenerateKey returns a new random cluster key of KeySize bytes.
func GenerateKey() ([]byte, error) {
	key := make([]byte, KeySize)
	if _, err := rand.Read(key); err != nil {
		return nil, fmt.Errorf("generate cluster key: %w", err)
	}
	return key, nil
}

// EncodeKey returns key in the text form LoadKeyFile reads (standard base64).
func EncodeKey(key []byte) string {
	return base64.StdEncoding.EncodeToString(key)
}

// DecodeKey parses the text form of a cluster key (standard base64,
// surrounding whitespace ignored) and checks its length (16, 24 or 32
// bytes). Errors wrap ErrBadKey.
func DecodeKey(text string) ([]byte, error) {
	text = strings.TrimSpace(text)
	if text == "" {
		return nil, fmt.Errorf("%w: empty", ErrBadKey)
	}
	key, err := base64.StdEncoding.DecodeString(text)
	if err != nil {
		return nil, fmt.Errorf("%w: not base64", ErrBadKey)
	}
	if err := checkKey(key); err != nil {
		return nil, err
	}
	return key, nil
}

// LoadKeyFile reads a cluster key written as base64 text (surrounding
// whitespace trimmed). Its one-line errors name the path: missing,
// unreadable, not base64 or of the wrong length (the last two wrap
// ErrBadKey).
func LoadKeyFile(path string) ([]byte, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("cluster key file %s does not exist", path)
		}
		return nil, fmt.Errorf("cluster key file %s cannot be read: %w", path, err)
	}
	key, err := DecodeKey(string(data))
	if err != nil {
		return nil, fmt.Errorf("cluster key file %s: %w", path, err)
	}
	return key, nil
}

// checkKey accepts the AES key sizes memberlist's keyring takes.
func checkKey(key []byte) error {
	switch len(key) {
	case 16, 24, 32:
		return nil
	}
	return fmt.Errorf("%w: %d bytes, want 16, 24 or 32", ErrBadKey, len(key))
}
