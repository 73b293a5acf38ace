package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/ampmux/ampmux/internal/benchkit"
)

// server is a benchmark server child process.
type server struct{ *benchkit.Server }

// startServer runs argv and waits for its LISTENING line.
func startServer(ctx context.Context, name string, argv []string, stderr io.Writer) (*server, error) {
	s, err := benchkit.StartServer(ctx, name, argv, stderr, 30*time.Second)
	if err != nil {
		return nil, err
	}
	return &server{s}, nil
}

// cpuTime is the process's user + system CPU time so far, from
// /proc/<pid>/stat (clock ticks of 10 ms on Linux).
func (s *server) cpuTime() (time.Duration, error) {
	data, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(s.Cmd.Process.Pid), "stat"))
	if err != nil {
		return 0, err
	}
	// The command name (field 2) may hold spaces; fields after ")" count from 3.
	i := bytes.LastIndexByte(data, ')')
	if i < 0 {
		return 0, fmt.Errorf("unreadable /proc stat %q", data)
	}
	f := strings.Fields(string(data[i+1:]))
	if len(f) < 13 {
		return 0, fmt.Errorf("unreadable /proc stat %q", data)
	}
	utime, err1 := strconv.ParseInt(f[11], 10, 64)
	stime, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("unreadable /proc stat %q", data)
	}
	const tick = 10 * time.Millisecond // sysconf(_SC_CLK_TCK) == 100 on Linux
	return time.Duration(utime+stime) * tick, nil
}

// rss is the process's resident memory in bytes.
func (s *server) rss() (int64, error) {
	data, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(s.Cmd.Process.Pid), "status"))
	if err != nil {
		return 0, err
	}
	for line := range strings.Lines(string(data)) {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			f := strings.Fields(v)
			if len(f) >= 1 {
				kb, err := strconv.ParseInt(f[0], 10, 64)
				return kb * 1024, err
			}
		}
	}
	return 0, fmt.Errorf("no VmRSS in /proc status")
}
