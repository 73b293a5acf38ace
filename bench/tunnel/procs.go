package main

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/ampmux/ampmux/internal/benchkit"
)

const readyTimeout = 30 * time.Second

type proc = benchkit.Proc

// procs are the children of one run, each with its output in NAME.log
// under dir.
type procs struct {
	benchkit.Procs
	dir  string
	logf func(format string, a ...any) // progress; nil: none
}

// start runs path with args and, if ready is not nil, waits until a line
// of its standard output matches ready and returns the first submatch
// (the address it listens on).
func (ps *procs) start(ctx context.Context, name string, ready *regexp.Regexp, env []string, path string, args ...string) (*proc, string, error) {
	p, err := ps.Start(ctx, benchkit.Spec{Name: name, Argv: append([]string{path}, args...), Env: env,
		Ready: ready, Timeout: readyTimeout, LogFile: filepath.Join(ps.dir, name+".log")})
	if err != nil {
		return nil, "", err
	}
	if ps.logf != nil {
		ps.logf("started %s (pid %d): %s %s", name, p.Pid(), filepath.Base(path), strings.Join(args, " "))
	}
	return p, p.Addr, nil
}

// cpuTimes sums the CPU time of ps and the children they have reaped
// (sslh-fork's).
func cpuTimes(ps []*proc) (time.Duration, error) {
	var sum time.Duration
	for _, p := range ps {
		t, err := p.CPUTime(true)
		if err != nil {
			return 0, err
		}
		sum += t
	}
	return sum, nil
}

var indent = benchkit.Indent

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
		if p.Exited() {
			return fmt.Errorf("%s exited before it listened on %s (%v); its output:\n%s", p.Name, addr, p.Err(), indent(p.Tail(20)))
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("%s does not accept on %s: %v", p.Name, addr, err)
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
