// Package testbed is the network-namespace lab that emulates hosts,
// containers, an underlay switch and an outside network on one machine, with
// fault injection.
package testbed
