// Package tunnel pipes two connections into each other, both directions,
// passing a half-close on (so that a client's EOF reaches the backend while
// the answer still flows back), and counts the bytes.
package tunnel

import (
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// closeWriter is implemented by *net.TCPConn, *net.UnixConn, *tls.Conn.
type closeWriter interface{ CloseWrite() error }

// Stats counts the bytes a Pipe has moved so far; safe to read while the
// pipe runs.
type Stats struct {
	AToB atomic.Int64
	BToA atomic.Int64
}

// Pipe copies a→b and b→a until both directions end, then closes both. When
// one side ends its direction (EOF), Pipe half-closes the other side's
// write half if it can, or closes it if it cannot. It returns the first
// error that was not an orderly end.
func Pipe(a, b net.Conn, st *Stats) error {
	if st == nil {
		st = &Stats{}
	}
	var wg sync.WaitGroup
	var errMu sync.Mutex
	var first error
	copyHalf := func(dst, src net.Conn, n *atomic.Int64) {
		defer wg.Done()
		_, err := io.Copy(countingWriter{dst, n}, src)
		if err != nil && !isClosed(err) {
			errMu.Lock()
			if first == nil {
				first = err
			}
			errMu.Unlock()
			// A broken direction ends both.
			a.Close()
			b.Close()
			return
		}
		if cw, ok := unwrap(dst).(closeWriter); ok {
			if cw.CloseWrite() == nil {
				return
			}
		}
		dst.Close()
	}
	wg.Add(2)
	go copyHalf(b, a, &st.AToB)
	go copyHalf(a, b, &st.BToA)
	wg.Wait()
	a.Close()
	b.Close()
	return first
}

// Echo sends back what c sends, counting it both ways, until c half-closes;
// then it closes c.
func Echo(c net.Conn, st *Stats) error {
	if st == nil {
		st = &Stats{}
	}
	n, err := io.Copy(countingWriter{c, &st.BToA}, c)
	st.AToB.Store(n)
	if err == nil || isClosed(err) {
		if cw, ok := unwrap(c).(closeWriter); ok {
			cw.CloseWrite()
		}
		err = nil
	}
	c.Close()
	return err
}

// unwrap reaches a connection under a wrapper that embeds it (such as
// switching.Conn), for CloseWrite.
func unwrap(c net.Conn) net.Conn {
	for {
		if _, ok := c.(closeWriter); ok {
			return c
		}
		u, ok := c.(interface{ NetConn() net.Conn })
		if !ok {
			return c
		}
		c = u.NetConn()
	}
}

func isClosed(err error) bool {
	return errors.Is(err, net.ErrClosed) || errors.Is(err, io.EOF)
}

type countingWriter struct {
	w io.Writer
	n *atomic.Int64
}

func (c countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n.Add(int64(n))
	return n, err
}

// StdioConn is stdin and stdout as a net.Conn, for ProxyCommand-style
// tunnels (`ampmux connect`). CloseWrite closes stdout.
type StdioConn struct {
	In  io.ReadCloser
	Out io.WriteCloser
}

func (s *StdioConn) Read(p []byte) (int, error)  { return s.In.Read(p) }
func (s *StdioConn) Write(p []byte) (int, error) { return s.Out.Write(p) }
func (s *StdioConn) CloseWrite() error           { return s.Out.Close() }
func (s *StdioConn) Close() error {
	s.Out.Close()
	return s.In.Close()
}
func (s *StdioConn) LocalAddr() net.Addr                { return stdioAddr{} }
func (s *StdioConn) RemoteAddr() net.Addr               { return stdioAddr{} }
func (s *StdioConn) SetDeadline(t time.Time) error      { return nil }
func (s *StdioConn) SetReadDeadline(t time.Time) error  { return nil }
func (s *StdioConn) SetWriteDeadline(t time.Time) error { return nil }

type stdioAddr struct{}

func (stdioAddr) Network() string { return "stdio" }
func (stdioAddr) String() string  { return "stdio" }
