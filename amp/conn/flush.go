package conn

import (
	"errors"
	"net"
	"syscall"
	"time"
)

// flushDirect writes what is queued from the calling goroutine instead of
// waking the writer goroutine, which saves a goroutine hand-off per batch.
// The reader must never block on the network (two peers whose readers both
// wait to write would wait forever), so with nonblocking it writes only
// what the socket takes at once and leaves the rest to the writer.
// Whenever the direct path does not apply (a write in progress, a TLS
// connection for a non-blocking flush, a pause mark, descriptors to pass,
// closing), the writer goroutine is woken instead.
func (c *Conn) flushDirect(nonblocking bool) {
	if !c.flushMu.TryLock() {
		c.signalWriter() // the flusher at work picks our bytes up next
		return
	}
	c.wmu.Lock()
	raw := c.raw
	if c.wmark >= 0 || c.wholding || c.wclosing || len(c.fdsOut) > 0 || nonblocking && (raw == nil || c.wconn != c.nc) {
		c.wmu.Unlock()
		c.flushMu.Unlock()
		c.signalWriter()
		return
	}
	out := c.wbuf
	c.wbuf, c.wspare = c.wspare[:0], nil
	c.wbytes.Store(int64(len(c.wbuf)))
	if c.wspace != nil {
		close(c.wspace)
		c.wspace = nil
	}
	c.wmu.Unlock()
	if len(out) == 0 {
		c.returnSpare(out)
		c.flushMu.Unlock()
		return
	}
	var n int
	var err error
	if nonblocking {
		n, err = c.nbw.write(raw, out)
	} else {
		if c.cfg.WriteTimeout > 0 {
			c.nc.SetWriteDeadline(time.Now().Add(c.cfg.WriteTimeout))
		}
		n, err = c.wconn.Write(out)
	}
	if err != nil {
		c.flushMu.Unlock()
		c.fail(err)
		return
	}
	if n < len(out) {
		// The socket is full: the writer sends the rest, in order, before
		// anything queued since.
		c.wmu.Lock()
		rest := append(make([]byte, 0, len(out)-n+len(c.wbuf)), out[n:]...)
		c.wbuf = append(rest, c.wbuf...)
		if c.wmark >= 0 {
			// A pause mark set meanwhile counts from the old start.
			c.wmark += len(rest)
		}
		c.wbytes.Store(int64(len(c.wbuf)))
		c.wmu.Unlock()
		c.flushMu.Unlock()
		c.signalWriter()
		return
	}
	c.returnSpare(out)
	c.flushMu.Unlock()
}

// Flush sends what is queued now rather than when the reader next runs
// dry. An inline responder that is about to block (as a protocol switch
// that dials a backend does) calls it, so that answers to the boxes read
// before its own do not wait for it.
func (c *Conn) Flush() {
	c.kick.Store(false)
	c.flushDirect(true)
}

// returnSpare keeps a written buffer for reuse unless it grew large.
func (c *Conn) returnSpare(out []byte) {
	if cap(out) > 1<<20 {
		return
	}
	c.wmu.Lock()
	c.wspare = out[:0]
	c.wmu.Unlock()
}

var errShortWrite = errors.New("conn: write returned no progress")

// nbWriter writes as much as a socket accepts without waiting. Its state
// lives in the struct and fn is made once, so that a write allocates
// nothing.
type nbWriter struct {
	p   []byte
	n   int
	err error
	fn  func(fd uintptr) bool
}

func (w *nbWriter) write(rc syscall.RawConn, p []byte) (int, error) {
	if w.fn == nil {
		w.fn = w.do
	}
	w.p, w.n, w.err = p, 0, nil
	if err := rc.Write(w.fn); err != nil {
		return w.n, err
	}
	n, err := w.n, w.err
	w.p = nil
	return n, err
}

func (w *nbWriter) do(fd uintptr) bool {
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
			w.err = errShortWrite
			return true
		}
	}
	return true
}

// rawConnOf returns the socket under nc for non-blocking writes, or nil.
func rawConnOf(nc net.Conn) syscall.RawConn {
	sc, ok := nc.(syscall.Conn)
	if !ok {
		return nil
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return nil
	}
	return rc
}
