// Package natd is egress masquerade and published ports: a rule model
// independent of the kernel, converged into one nftables table of zlmesh's
// own through netlink.
package natd
