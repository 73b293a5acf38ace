//go:build !unix

package mux

// descriptorLimit is 0 (none known): Windows has no per-process limit on
// sockets to leave room under.
func descriptorLimit() int { return 0 }
