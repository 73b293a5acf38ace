//go:build !unix

package main

// descriptorLimit is unknown here: Windows has no small per-process
// socket limit.
func descriptorLimit() int { return 0 }
