//go:build !linux

package natd

// New returns ErrUnsupported: only Linux has a kernel NAT natd can program.
func New(opts Options) (Table, error) { return nil, ErrUnsupported }

// ApplySysctls returns ErrUnsupported: only Linux has these settings.
func ApplySysctls() error { return ErrUnsupported }

// ApplySysctls6 returns ErrUnsupported: only Linux has these settings.
func ApplySysctls6() ([]Sysctl, error) { return nil, ErrUnsupported }

// HasIPv6Egress returns false and ErrUnsupported: there is no kernel NAT to
// masquerade with.
func HasIPv6Egress(ns int) (bool, error) { return false, ErrUnsupported }
