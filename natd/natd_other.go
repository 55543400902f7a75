//go:build !linux

package natd

// New returns ErrUnsupported: only Linux has a kernel NAT natd can program.
func New(opts Options) (Table, error) { return nil, ErrUnsupported }

// ApplySysctls returns ErrUnsupported: only Linux has these settings.
func ApplySysctls() error { return ErrUnsupported }
