// Package dnsd is the mesh DNS server: the mesh zone built from replicated
// records, forwarding with a cache for everything else, and a transport-free
// Query core used both by the packet-path hook and by socket listeners.
package dnsd
