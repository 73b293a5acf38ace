//go:build unix

package mux

import "syscall"

// descriptorLimit is the process's soft RLIMIT_NOFILE, or 0 if it is
// unknown or unlimited.
func descriptorLimit() int {
	var r syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &r); err != nil {
		return 0
	}
	if cur := uint64(r.Cur); cur < 1<<31 { // beyond: RLIM_INFINITY, or as good
		return int(cur)
	}
	return 0
}
