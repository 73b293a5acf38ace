package main

// Child processes: each is started in its own process group, with its
// output in a log file under the run's temporary directory, and killed
// (with its group: sslh-fork's children too) when the run ends, on error
// too. On Linux a child also gets SIGKILL if this process dies without
// cleaning up (Pdeathsig), and our own roles exit when their stdin, a pipe
// from us, reaches EOF.

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/ampmux/ampmux/internal/benchkit"
)

const readyTimeout = 30 * time.Second

// proc is a started child.
type proc struct {
	name    string
	cmd     *exec.Cmd
	logPath string
	stdin   io.WriteCloser
	done    chan struct{} // closed once the child has exited
	err     error         // its exit status, set before done is closed
}

// exited reports whether the child has ended.
func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// logTail returns the last lines of the child's log.
func (p *proc) logTail(lines int) string {
	b, err := os.ReadFile(p.logPath)
	if err != nil {
		return "(no log: " + err.Error() + ")"
	}
	all := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(all) > lines {
		all = all[len(all)-lines:]
	}
	return strings.Join(all, "\n")
}

// cpuTime is the CPU time the child and the children it has reaped
// (sslh-fork's) have used so far.
func (p *proc) cpuTime() (time.Duration, error) { return benchkit.CPUTime(p.cmd.Process.Pid, true) }

// cpuTimes sums cpuTime over ps.
func cpuTimes(ps []*proc) (time.Duration, error) {
	var sum time.Duration
	for _, p := range ps {
		t, err := p.cpuTime()
		if err != nil {
			return 0, err
		}
		sum += t
	}
	return sum, nil
}

// procs are the children of one run.
type procs struct {
	dir  string
	logf func(format string, a ...any) // progress; nil: none
	mu   sync.Mutex
	list []*proc
	shut bool
}

// start runs path with args and, if ready is not nil, waits until a line
// of its standard output matches ready and returns the first submatch
// (the address it listens on). Its standard output and error go to
// NAME.log.
func (ps *procs) start(ctx context.Context, name string, ready *regexp.Regexp, env []string, path string, args ...string) (*proc, string, error) {
	logPath := filepath.Join(ps.dir, name+".log")
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, "", err
	}
	fmt.Fprintf(logf, "$ %s %s\n", path, strings.Join(args, " "))
	cmd := exec.Command(path, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stderr = logf
	cmd.SysProcAttr = childAttr()
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		logf.Close()
		return nil, "", err
	}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		logf.Close()
		return nil, "", err
	}
	p := &proc{name: name, cmd: cmd, logPath: logPath, stdin: stdin, done: make(chan struct{})}
	ps.mu.Lock()
	if ps.shut {
		ps.mu.Unlock()
		logf.Close()
		return nil, "", errors.New("shutting down")
	}
	if err := cmd.Start(); err != nil {
		ps.mu.Unlock()
		logf.Close()
		return nil, "", fmt.Errorf("starting %s: %w", name, err)
	}
	ps.list = append(ps.list, p)
	ps.mu.Unlock()
	if ps.logf != nil {
		ps.logf("started %s (pid %d): %s %s", name, cmd.Process.Pid, filepath.Base(path), strings.Join(args, " "))
	}

	addrc := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		found := ready == nil
		for sc.Scan() {
			line := sc.Text()
			fmt.Fprintln(logf, line)
			if !found {
				if m := ready.FindStringSubmatch(line); m != nil {
					found = true
					addrc <- m[1]
				}
			}
		}
		io.Copy(logf, stdout) // a line too long for the scanner
		p.err = cmd.Wait()
		fmt.Fprintf(logf, "[exited: %v]\n", exitText(p.err))
		logf.Close()
		close(p.done)
	}()
	if ready == nil {
		return p, "", nil
	}
	t := time.NewTimer(readyTimeout)
	defer t.Stop()
	select {
	case addr := <-addrc:
		return p, addr, nil
	case <-p.done:
		return p, "", fmt.Errorf("%s exited before it was ready (%s); its log:\n%s", name, exitText(p.err), indent(p.logTail(20)))
	case <-t.C:
		return p, "", fmt.Errorf("%s not ready after %v; its log:\n%s", name, readyTimeout, indent(p.logTail(20)))
	case <-ctx.Done():
		return p, "", ctx.Err()
	}
}

// checkAlive fails if a child has ended while it should be serving.
func (ps *procs) checkAlive() error {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	for _, p := range ps.list {
		if p.exited() {
			return fmt.Errorf("%s exited during the run (%s); its log:\n%s", p.name, exitText(p.err), indent(p.logTail(20)))
		}
	}
	return nil
}

// report describes every child, for an error message: which ended, and
// the end of each log.
func (ps *procs) report() string {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	var b strings.Builder
	for _, p := range ps.list {
		state := "running"
		if p.exited() {
			state = "exited: " + exitText(p.err)
		}
		fmt.Fprintf(&b, "--- %s (%s), %s:\n%s\n", p.name, state, p.logPath, indent(p.logTail(8)))
	}
	return b.String()
}

// stop kills one child and forgets it.
func (ps *procs) stop(p *proc) {
	p.stdin.Close()
	killGroup(p.cmd.Process)
	<-p.done
	ps.mu.Lock()
	defer ps.mu.Unlock()
	for i, q := range ps.list {
		if q == p {
			ps.list = append(ps.list[:i], ps.list[i+1:]...)
			break
		}
	}
}

// killAll kills every child and its process group, and waits for them.
func (ps *procs) killAll() {
	ps.mu.Lock()
	ps.shut = true
	list := ps.list
	ps.mu.Unlock()
	for _, p := range list {
		p.stdin.Close()
		killGroup(p.cmd.Process)
	}
	for _, p := range list {
		select {
		case <-p.done:
		case <-time.After(5 * time.Second):
			fmt.Fprintf(os.Stderr, "tunnel: %s (pid %d) did not exit after SIGKILL\n", p.name, p.cmd.Process.Pid)
		}
	}
}

func exitText(err error) string {
	if err == nil {
		return "status 0"
	}
	return err.Error()
}

func indent(s string) string {
	return "    " + strings.ReplaceAll(s, "\n", "\n    ")
}

// freePort returns a loopback address nothing listens on: listened on
// with port 0, then closed (for sslh, which cannot report a port it
// picked itself).
func freePort() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	addr := l.Addr().String()
	l.Close()
	return addr, nil
}

// waitListening waits until addr accepts connections, or p exits.
func waitListening(ctx context.Context, p *proc, addr string) error {
	deadline := time.Now().Add(readyTimeout)
	for {
		var d net.Dialer
		c, err := d.DialContext(ctx, "tcp", addr)
		if err == nil {
			c.Close()
			return nil
		}
		if p.exited() {
			return fmt.Errorf("%s exited before it listened on %s (%s); its log:\n%s", p.name, addr, exitText(p.err), indent(p.logTail(20)))
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("%s does not accept on %s: %v", p.name, addr, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// runCmd runs a command to completion, with its output in the error if it
// fails.
func runCmd(ctx context.Context, dir string, name string, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &out
	if err := cmd.Run(); err != nil {
		return out.Bytes(), fmt.Errorf("%s %s: %v\n%s", name, strings.Join(args, " "), err, indent(strings.TrimSpace(out.String())))
	}
	return out.Bytes(), nil
}
