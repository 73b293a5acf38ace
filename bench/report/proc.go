package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/ampmux/ampmux/internal/benchkit"
	"github.com/ampmux/ampmux/internal/benchkit/load"
)

// server is a child process serving until its stdin closes; it printed
// "LISTENING <addr>".
type server struct {
	name  string
	addr  string
	cmd   *exec.Cmd
	stdin io.WriteCloser
	done  chan struct{}
	err   error
}

// startServer runs argv and waits for its LISTENING line.
func startServer(ctx context.Context, name string, argv []string, stderr io.Writer) (*server, error) {
	cmd := exec.Command(argv[0], argv[1:]...)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	cmd.Stderr = prefixWriter(stderr, name+" server: ")
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s server: %w", name, err)
	}
	s := &server{name: name, cmd: cmd, stdin: stdin, done: make(chan struct{})}
	addr := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		seen := false
		for sc.Scan() {
			line := strings.TrimSpace(sc.Text())
			if a, ok := strings.CutPrefix(line, "LISTENING "); ok && !seen {
				seen = true
				addr <- strings.TrimSpace(a)
				continue
			}
			fmt.Fprintf(stderr, "%s server: %s\n", name, line)
		}
		io.Copy(io.Discard, out)
		s.err = cmd.Wait()
		close(s.done)
	}()
	t := time.NewTimer(30 * time.Second)
	defer t.Stop()
	select {
	case s.addr = <-addr:
		return s, nil
	case <-s.done:
		return nil, fmt.Errorf("%s server exited before listening: %v", name, s.err)
	case <-t.C:
		s.stop()
		return nil, fmt.Errorf("%s server printed no LISTENING line in 30s", name)
	case <-ctx.Done():
		s.stop()
		return nil, ctx.Err()
	}
}

// stop closes stdin and waits; after 5 s it kills the process.
func (s *server) stop() error {
	if benchkit.StopChild(s.stdin, s.cmd, s.done, 5*time.Second) {
		return fmt.Errorf("%s server did not exit within 5s of stdin closing; killed", s.name)
	}
	return s.err
}

// cpuTime is the process's user + system CPU time so far, from
// /proc/<pid>/stat (clock ticks of 10 ms on Linux).
func (s *server) cpuTime() (time.Duration, error) {
	data, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(s.cmd.Process.Pid), "stat"))
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
	data, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(s.cmd.Process.Pid), "status"))
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

// prefixWriter writes each line of a child's stderr to w with a prefix.
func prefixWriter(w io.Writer, prefix string) io.Writer { return &lineWriter{w: w, prefix: prefix} }

type lineWriter struct {
	mu     sync.Mutex
	w      io.Writer
	prefix string
	buf    []byte
}

func (l *lineWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.buf = append(l.buf, p...)
	for {
		i := bytes.IndexByte(l.buf, '\n')
		if i < 0 {
			return len(p), nil
		}
		fmt.Fprintf(l.w, "%s%s\n", l.prefix, l.buf[:i])
		l.buf = l.buf[i+1:]
	}
}
