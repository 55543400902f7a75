// Package bridge is the Linux container plumbing: per-service bridges, veth
// pairs moved into container network namespaces, addresses and routes inside
// them, detach, the orphan check and adoption after a restart. Everything
// goes through netlink; nothing runs `ip`.
package bridge
