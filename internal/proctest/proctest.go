// Package proctest reads what Linux's /proc says of a process, for tests
// that check memory and descriptors come back: one reading, shared.
package proctest

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
)

// Self is the pid that means this process.
const Self = 0

func dir(pid int) string {
	if pid == Self {
		return "/proc/self"
	}
	return fmt.Sprintf("/proc/%d", pid)
}

// StatusKB reads a field of /proc/PID/status (VmRSS, VmHWM) in KiB.
func StatusKB(tb testing.TB, pid int, field string) int64 {
	tb.Helper()
	data, err := os.ReadFile(dir(pid) + "/status")
	if err != nil {
		tb.Fatal(err)
	}
	for line := range strings.Lines(string(data)) {
		if rest, ok := strings.CutPrefix(line, field+":"); ok {
			n, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			if err != nil {
				tb.Fatal(err)
			}
			return n
		}
	}
	tb.Fatalf("no %s in %s/status", field, dir(pid))
	return 0
}

// OpenFDs counts the process's open descriptors.
func OpenFDs(tb testing.TB, pid int) int {
	tb.Helper()
	ents, err := os.ReadDir(dir(pid) + "/fd")
	if err != nil {
		tb.Fatal(err)
	}
	return len(ents)
}
