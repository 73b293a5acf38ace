package load

import "syscall"

func raiseFileLimit(want uint64) uint64 {
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
