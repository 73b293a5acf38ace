//go:build !unix

package benchkit

// RaiseFileLimit reports 0: there is no open-file limit to read here.
func RaiseFileLimit(want uint64) uint64 { return 0 }
