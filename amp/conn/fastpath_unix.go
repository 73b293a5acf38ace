//go:build unix

package conn

import (
	"errors"
	"net"
	"syscall"
)

// fastWriter writes to a plain TCP or Unix socket without waiting: one
// non-blocking write(2), for the fast path. Its state lives in the struct
// and fn is made once, so that a write allocates nothing. Only the holder
// of ownerFast uses it.
type fastWriter struct {
	rc  syscall.RawConn
	p   []byte
	n   int
	err error
	fn  func(fd uintptr) bool
}

// newFastWriter opens the fast path for the concrete socket types only: a
// wrapper that overrides Write (byte counting, rate limiting) must see
// every byte, so it never gets here. A wrapper that only replays bytes on
// the read side (mux.Conn) names the connection its writes go to.
func newFastWriter(nc net.Conn) fastWriter {
	if wt, ok := nc.(interface{ WriteConn() net.Conn }); ok {
		nc = wt.WriteConn()
	}
	var sc syscall.Conn
	switch t := nc.(type) {
	case *net.TCPConn:
		sc = t
	case *net.UnixConn:
		sc = t
	default:
		return fastWriter{}
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return fastWriter{}
	}
	return fastWriter{rc: rc}
}

func (w *fastWriter) ok() bool { return w.rc != nil }

var errNoProgress = errors.New("conn: write returned no progress")

// write writes what the socket takes at once.
func (w *fastWriter) write(p []byte) (int, error) {
	if w.fn == nil {
		w.fn = w.do
	}
	w.p, w.n, w.err = p, 0, nil
	if err := w.rc.Write(w.fn); err != nil {
		return w.n, err
	}
	n, err := w.n, w.err
	w.p = nil
	return n, err
}

// do never returns false: returning false would wait for the socket.
func (w *fastWriter) do(fd uintptr) bool {
	for w.n < len(w.p) {
		m, e := syscall.Write(int(fd), w.p[w.n:])
		if m > 0 {
			w.n += m
		}
		switch {
		case e == syscall.EINTR:
			continue
		case e == syscall.EAGAIN:
			return true
		case e != nil:
			w.err = e
			return true
		case m == 0:
			w.err = errNoProgress
			return true
		}
	}
	return true
}
