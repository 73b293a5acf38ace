package benchkit

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"sync"
)

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
