//go:build unix

package benchkit

import "syscall"

// RaiseFileLimit lifts the soft limit on open files to want, raising the
// hard limit too when allowed (root), and returns the soft limit in force
// (0 if it cannot be read).
func RaiseFileLimit(want uint64) uint64 {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		return 0
	}
	if rl.Cur >= want {
		return rl.Cur
	}
	if rl.Max < want {
		up := syscall.Rlimit{Cur: want, Max: want}
		if syscall.Setrlimit(syscall.RLIMIT_NOFILE, &up) == nil {
			return want
		}
	}
	up := syscall.Rlimit{Cur: min(want, rl.Max), Max: rl.Max}
	if syscall.Setrlimit(syscall.RLIMIT_NOFILE, &up) == nil {
		return up.Cur
	}
	return rl.Cur
}
