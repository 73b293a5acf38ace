package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/ampmux/ampmux/internal/benchkit"
	"github.com/ampmux/ampmux/internal/benchkit/load"
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

// runClient runs argv and returns its one RESULT line, parsed; a client
// that fails, prints no RESULT, or reports errors is an error.
func runClient(ctx context.Context, argv []string, timeout time.Duration, stderr io.Writer) (load.Result, error) {
	cctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := exec.CommandContext(cctx, argv[0], argv[1:]...)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	cmd.WaitDelay = 2 * time.Second
	err := cmd.Run()
	what := filepath.Base(argv[0]) + " " + strings.Join(argv[1:], " ")
	if err != nil && ctx.Err() != nil {
		return load.Result{}, fmt.Errorf("%s: interrupted: %w", what, ctx.Err())
	}
	if err != nil {
		msg := strings.TrimSpace(errOut.String())
		if cctx.Err() == context.DeadlineExceeded {
			msg += fmt.Sprintf(" (killed after %v)", timeout)
		}
		return load.Result{}, fmt.Errorf("%s: %v: %s", what, err, msg)
	}
	if errOut.Len() > 0 {
		fmt.Fprintf(stderr, "%s: %s", what, errOut.String())
	}
	var results []load.Result
	for line := range strings.Lines(out.String()) {
		if strings.HasPrefix(line, "RESULT ") {
			r, err := load.ParseResult(strings.TrimSpace(line))
			if err != nil {
				return load.Result{}, fmt.Errorf("%s: %w", what, err)
			}
			results = append(results, r)
		}
	}
	if len(results) != 1 {
		return load.Result{}, fmt.Errorf("%s: printed %d RESULT lines, want 1; stdout: %q", what, len(results), out.String())
	}
	r := results[0]
	if r.Errors != 0 || r.Calls <= 0 {
		return load.Result{}, fmt.Errorf("%s: %d errors, %d calls", what, r.Errors, r.Calls)
	}
	return r, nil
}
