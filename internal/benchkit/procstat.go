package benchkit

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// clockTicks is USER_HZ, the unit of /proc/PID/stat's times: 100 on every
// Linux port that matters.
const clockTicks = 100

// CPUTime is the CPU time (user + system) process pid has used so far, all
// its threads, at the kernel's tick (10 ms), from /proc/PID/stat (Linux);
// with children, also that of the children it has reaped (sslh-fork's).
func CPUTime(pid int, children bool) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// After "pid (comm)", comm perhaps holding spaces: state ppid pgrp
	// session tty_nr tpgid flags minflt cminflt majflt cmajflt utime stime
	// cutime cstime ...
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	f := strings.Fields(s[i+1:])
	if i < 0 || len(f) < 15 {
		return 0, fmt.Errorf("/proc/%d/stat: unexpected %q", pid, s)
	}
	end := 13
	if children {
		end = 15
	}
	var ticks int64
	for _, v := range f[11:end] {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("/proc/%d/stat: %v", pid, err)
		}
		ticks += n
	}
	return time.Duration(ticks) * time.Second / clockTicks, nil
}

// RSS is process pid's resident set (VmRSS) in bytes, from
// /proc/PID/status (Linux).
func RSS(pid int) (int64, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for line := range strings.Lines(string(data)) {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			f := strings.Fields(v)
			if len(f) != 2 || f[1] != "kB" {
				return 0, fmt.Errorf("odd VmRSS line %q", line)
			}
			kb, err := strconv.ParseInt(f[0], 10, 64)
			return kb << 10, err
		}
	}
	return 0, fmt.Errorf("no VmRSS in /proc/%d/status", pid)
}
