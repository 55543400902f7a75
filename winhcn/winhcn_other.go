//go:build !windows

package winhcn

import "net/netip"

// System returns the Host Compute Network service: off Windows one whose
// every call fails with ErrUnsupported.
func System() HCN { return noHCN{} }

type noHCN struct{}

func (noHCN) Networks() ([]Network, error)                   { return nil, ErrUnsupported }
func (noHCN) CreateNetwork(Network) (Network, error)         { return Network{}, ErrUnsupported }
func (noHCN) SetNetworkSubnets(string, []netip.Prefix) error { return ErrUnsupported }
func (noHCN) DeleteNetwork(string) error                     { return ErrUnsupported }
func (noHCN) Endpoints(string) ([]Endpoint, error)           { return nil, ErrUnsupported }
func (noHCN) CreateEndpoint(Endpoint) (Endpoint, error)      { return Endpoint{}, ErrUnsupported }
func (noHCN) DeleteEndpoint(string) error                    { return ErrUnsupported }
func (noHCN) CreateNamespace() (string, error)               { return "", ErrUnsupported }
func (noHCN) AttachNamespace(string, string) error           { return ErrUnsupported }
func (noHCN) NamespaceExists(string) (bool, error)           { return false, ErrUnsupported }
func (noHCN) DeleteNamespace(string) error                   { return ErrUnsupported }
func (noHCN) ContainerExists(string) (bool, error)           { return false, ErrUnsupported }
func (noHCN) AttachContainer(string, string) error           { return ErrUnsupported }
