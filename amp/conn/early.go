package conn

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"time"

	"github.com/ampmux/ampmux/amp/box"
)

// SwitchEarly is Switch without waiting for the answer: it returns once
// the request has been written, so that the caller's first bytes follow
// it in the same flight and setup costs one round trip (and whatever the
// peer does before answering, such as dialing a backend) less.
//
// Writes go out at once, behind the request. The first Read waits for the
// answer: if the peer refused, it returns the *amp.RemoteError (and every
// later Read and Write fails too) and the connection is closed, since the
// peer has by then read the caller's bytes as AMP. Use it only with peers
// that accept bytes right behind a switch request, as Twisted and this
// package do.
func (c *Conn) SwitchEarly(ctx context.Context, command string, args *box.Box) (net.Conn, error) {
	cl := &call{done: make(chan struct{}, 1)}
	e := &earlyConn{c: c, cl: cl, ready: make(chan struct{}), rdlChanged: make(chan struct{})}
	cl.after = func(isErr bool) error {
		if isErr {
			err := cl.err
			e.settle(nil, err)
			// Fail first: nothing may be queued or written once the
			// writer lets go of the socket.
			c.fail(fmt.Errorf("conn: early %s refused: %w", command, err))
			c.resumeWriter(true, nil)
			return err
		}
		inner, err := c.takeOver(cl.paused)
		e.settle(inner, err)
		return err
	}
	if err := c.sendSpecial(ctx, command, args, cl, true); err != nil {
		return nil, err
	}
	// Our bytes may only follow the request: wait until the writer has
	// sent it and paused; from then on the connection's write side is ours.
	select {
	case <-cl.paused:
	case <-cl.done:
		select {
		case <-e.ready:
			// Answered already (the writer closes paused a moment after
			// the request left): Read reports the outcome.
		default:
			return nil, cl.err // lost before the request left
		}
	case <-ctx.Done():
		c.fail(fmt.Errorf("conn: %s abandoned: %w", command, ctx.Err()))
		return nil, ctx.Err()
	}
	e.wc = c.writeConn()
	return e, nil
}

// earlyConn is the connection SwitchEarly returns: writable at once,
// readable once the switch has been answered.
type earlyConn struct {
	c  *Conn
	cl *call
	wc net.Conn // the connection (TLS or raw) that the writer paused on

	ready chan struct{} // closed by settle
	inner net.Conn      // after ready: the switched connection, or nil
	err   error         // after ready: why there is no inner connection

	mu         sync.Mutex
	closed     bool
	rdl        time.Time     // read deadline, applied to inner once it exists
	rdlChanged chan struct{} // closed and replaced when rdl changes
}

// settle runs on the reader goroutine when the answer has come, or in
// wait when the connection was lost first; the first call counts.
func (e *earlyConn) settle(inner net.Conn, err error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	select {
	case <-e.ready:
		return
	default:
	}
	e.inner, e.err = inner, err
	if inner != nil {
		if e.closed {
			inner.Close()
		} else if !e.rdl.IsZero() {
			inner.SetReadDeadline(e.rdl)
		}
	}
	close(e.ready)
}

// wait waits for the answer, honouring the read deadline.
func (e *earlyConn) wait() error {
	for {
		select {
		case <-e.ready:
			return e.err
		default:
		}
		e.mu.Lock()
		closed, dl, changed := e.closed, e.rdl, e.rdlChanged
		e.mu.Unlock()
		if closed {
			return net.ErrClosed
		}
		var expire <-chan time.Time
		var t *time.Timer
		if !dl.IsZero() {
			d := time.Until(dl)
			if d <= 0 {
				return os.ErrDeadlineExceeded
			}
			t = time.NewTimer(d)
			expire = t.C
		}
		var err error
		expired := false
		select {
		case <-e.ready:
			err = e.err
		case <-e.cl.done:
			// Answered (then ready is closed already) or lost.
			e.settle(nil, e.cl.err)
			err = e.err
		case <-expire:
			expired = true
		case <-changed:
		}
		if t != nil {
			t.Stop()
		}
		switch {
		case expired:
			return os.ErrDeadlineExceeded
		case isClosed(e.ready):
			return err
		}
	}
}

func isClosed(ch chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

func (e *earlyConn) Read(p []byte) (int, error) {
	if err := e.wait(); err != nil {
		return 0, err
	}
	return e.inner.Read(p)
}

func (e *earlyConn) Write(p []byte) (int, error) {
	n, err := e.wc.Write(p)
	if err != nil {
		select {
		case <-e.ready:
			if e.err != nil {
				return n, e.err // the refusal says more than "closed"
			}
		default:
		}
	}
	return n, err
}

// Close closes the connection; before the answer it ends the AMP
// connection too.
func (e *earlyConn) Close() error {
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return net.ErrClosed
	}
	e.closed = true
	close(e.rdlChanged) // wake a waiting Read
	e.rdlChanged = make(chan struct{})
	inner := e.inner
	e.mu.Unlock()
	if inner != nil {
		return inner.Close()
	}
	e.c.fail(net.ErrClosed)
	return nil
}

// CloseWrite half-closes the connection when the one underneath can.
func (e *earlyConn) CloseWrite() error {
	if cw, ok := e.wc.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return errors.ErrUnsupported
}

func (e *earlyConn) LocalAddr() net.Addr  { return e.wc.LocalAddr() }
func (e *earlyConn) RemoteAddr() net.Addr { return e.wc.RemoteAddr() }

func (e *earlyConn) SetDeadline(t time.Time) error {
	e.SetReadDeadline(t)
	return e.wc.SetWriteDeadline(t)
}

func (e *earlyConn) SetWriteDeadline(t time.Time) error { return e.wc.SetWriteDeadline(t) }

// SetReadDeadline applies to the wait for the answer, then to the
// switched connection (the AMP reader owns the socket's deadline until
// then).
func (e *earlyConn) SetReadDeadline(t time.Time) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.rdl = t
	close(e.rdlChanged)
	e.rdlChanged = make(chan struct{})
	if e.inner != nil {
		return e.inner.SetReadDeadline(t)
	}
	return nil
}
