package benchkit

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync"
	"time"
)

// Server is a benchmark server run as a child process: it serves until
// its stdin closes (or, with StopSignal, until that signal), and prints
// "LISTENING <addr>" (or, as ampmux serve does, "listening on <addr>") on
// stdout once it listens.
type Server struct {
	Name string
	Addr string
	Cmd  *exec.Cmd
	// StopSignal, if set, is sent when Stop closes stdin, for a server
	// that does not read it.
	StopSignal os.Signal
	stdin      io.WriteCloser
	done       chan struct{} // closed once Wait has returned
	err        error         // Wait's error, once done is closed
}

// StartServer runs argv and waits at most timeout for its LISTENING line.
// The server's stderr, and the rest of its stdout, go to stderr line by
// line, after "<name> server: ".
func StartServer(ctx context.Context, name string, argv []string, stderr io.Writer, timeout time.Duration) (*Server, error) {
	cmd := exec.Command(argv[0], argv[1:]...)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	prefix := name + " server: "
	cmd.Stderr = PrefixWriter(stderr, prefix)
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s server: %w", name, err)
	}
	s := &Server{Name: name, Cmd: cmd, stdin: stdin, done: make(chan struct{})}
	addr := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		seen := false
		for sc.Scan() {
			line := strings.TrimSpace(sc.Text())
			a, ok := strings.CutPrefix(line, "LISTENING ")
			if !ok {
				a, ok = strings.CutPrefix(line, "listening on ")
			}
			if ok && !seen {
				seen = true
				addr <- strings.TrimSpace(a)
				continue
			}
			fmt.Fprintf(stderr, "%s%s\n", prefix, line)
		}
		io.Copy(io.Discard, out)
		s.err = cmd.Wait()
		close(s.done)
	}()
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case s.Addr = <-addr:
		return s, nil
	case <-s.done:
		return nil, fmt.Errorf("%s server exited before listening: %v", name, s.err)
	case <-t.C:
		s.Stop()
		return nil, fmt.Errorf("%s server printed no LISTENING line in %v", name, timeout)
	case <-ctx.Done():
		s.Stop()
		return nil, ctx.Err()
	}
}

// serverGrace is how long Stop waits after closing stdin before it kills.
const serverGrace = 5 * time.Second

// Stop closes the server's stdin and waits for it to exit, killing it if
// it has not within a few seconds. It reports how the server ended.
func (s *Server) Stop() error {
	if s.StopSignal != nil {
		s.Cmd.Process.Signal(s.StopSignal)
	}
	if StopChild(s.stdin, s.Cmd, s.done, serverGrace) {
		return fmt.Errorf("%s server did not exit within %v of stdin closing; killed", s.Name, serverGrace)
	}
	return s.err
}

// Done is closed once the server has exited.
func (s *Server) Done() <-chan struct{} { return s.done }

// PrefixWriter writes each line written to it to w after prefix.
func PrefixWriter(w io.Writer, prefix string) io.Writer { return &lineWriter{w: w, prefix: prefix} }

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

// Announce is the serving side of StartServer: it prints "LISTENING
// <addr>" on stdout, then waits until stdin closes, ctx ends, or failed
// (which may be nil) delivers the server's own error, which it returns.
func Announce(ctx context.Context, stdout io.Writer, stdin io.Reader, addr net.Addr, failed <-chan error) error {
	if _, err := fmt.Fprintf(stdout, "LISTENING %s\n", addr); err != nil {
		return err
	}
	stdinClosed := make(chan struct{})
	go func() {
		io.Copy(io.Discard, stdin)
		close(stdinClosed)
	}()
	select {
	case <-stdinClosed:
	case <-ctx.Done():
	case err := <-failed:
		return err
	}
	return nil
}

// OpenAll runs open for i in [0, n), parallel at a time, and returns the
// results in order; on error it closes those opened and returns the first
// error.
func OpenAll[T io.Closer](ctx context.Context, n, parallel int, open func(ctx context.Context, i int) (T, error)) ([]T, error) {
	out := make([]T, n)
	ok := make([]bool, n)
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		first error
		next  = make(chan int)
	)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	for range min(parallel, n) {
		wg.Go(func() {
			for i := range next {
				c, err := open(ctx, i)
				if err != nil {
					mu.Lock()
					if first == nil {
						first = fmt.Errorf("connection %d: %w", i+1, err)
					}
					mu.Unlock()
					cancel()
					continue
				}
				out[i], ok[i] = c, true
			}
		})
	}
feed:
	for i := range n {
		select {
		case next <- i:
		case <-ctx.Done():
			break feed
		}
	}
	close(next)
	wg.Wait()
	if first == nil && ctx.Err() != nil {
		first = ctx.Err()
	}
	if first != nil {
		for i, c := range out {
			if ok[i] {
				c.Close()
			}
		}
		return nil, first
	}
	return out, nil
}
