// Package winhcn will attach Windows containers as HCN endpoints on an HCN
// network over the node subnet. It is a documented skeleton: on every
// platform today its functions return ErrUnsupported.
package winhcn

import "errors"

// ErrUnsupported is returned by every function until HCN support exists.
var ErrUnsupported = errors.New("winhcn: Windows container networking is not implemented yet")
