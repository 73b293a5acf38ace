package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os/exec"
	"strings"
	"time"

	"github.com/ampmux/ampmux/internal/benchkit"
)

// child is a muxbench serve or idle process. Its tagged stdout lines
// (LISTENING, STATS, READY, DONE) come on tagged; every other line goes to the
// run's stderr.
type child struct {
	name   string
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	tagged chan string
	done   chan struct{} // closed once Wait has returned
	err    error         // Wait's error, once done is closed
}

var tags = []string{"LISTENING ", "STATS ", "READY ", "DONE "}

func startChild(self, name string, args []string, stderr io.Writer) (*child, error) {
	cmd := exec.Command(self, args...)
	cmd.Stderr = benchkit.PrefixWriter(stderr, name+": ")
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	c := &child{name: name, cmd: cmd, stdin: stdin, tagged: make(chan string, 64), done: make(chan struct{})}
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			line := strings.TrimSpace(sc.Text())
			tagged := false
			for _, t := range tags {
				tagged = tagged || strings.HasPrefix(line, t)
			}
			if tagged {
				c.tagged <- line
			} else {
				fmt.Fprintf(stderr, "%s: %s\n", name, line)
			}
		}
		io.Copy(io.Discard, stdout)
		close(c.tagged)
		c.err = cmd.Wait()
		close(c.done)
	}()
	return c, nil
}

// expect waits for the next tagged line, which must start with tag.
func (c *child) expect(ctx context.Context, tag string, timeout time.Duration) (string, error) {
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case line, ok := <-c.tagged:
		if !ok {
			<-c.done
			return "", fmt.Errorf("%s exited before printing %s: %v", c.name, tag, c.err)
		}
		if !strings.HasPrefix(line, tag+" ") {
			return "", fmt.Errorf("%s printed %q, want a %s line", c.name, line, tag)
		}
		return line, nil
	case <-t.C:
		return "", fmt.Errorf("%s printed no %s line in %v", c.name, tag, timeout)
	case <-ctx.Done():
		return "", ctx.Err()
	}
}

// stats asks a server for its STATS line.
func (c *child) stats(ctx context.Context) (serverStats, error) {
	if _, err := io.WriteString(c.stdin, "stats\n"); err != nil {
		return serverStats{}, fmt.Errorf("%s: %w", c.name, err)
	}
	line, err := c.expect(ctx, "STATS", 10*time.Second)
	if err != nil {
		return serverStats{}, err
	}
	return parseStats(line)
}

// heapProfile makes a server write a heap profile to path.
func (c *child) heapProfile(ctx context.Context, path string) error {
	if _, err := io.WriteString(c.stdin, "heap "+path+"\n"); err != nil {
		return fmt.Errorf("%s: %w", c.name, err)
	}
	_, err := c.expect(ctx, "DONE", 30*time.Second)
	return err
}

// stop closes the child's stdin, and kills it if it has not exited within
// grace. It reports how the child ended.
func (c *child) stop(grace time.Duration) error {
	if benchkit.StopChild(c.stdin, c.cmd, c.done, grace) {
		return fmt.Errorf("%s did not exit within %v of stdin closing; killed", c.name, grace)
	}
	if c.err != nil {
		return fmt.Errorf("%s: %w", c.name, c.err)
	}
	return nil
}
