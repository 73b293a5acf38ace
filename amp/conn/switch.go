package conn

import (
	"context"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/ampmux/ampmux/amp"
	"github.com/ampmux/ampmux/amp/box"
)

var (
	// ErrSwitched: the connection stopped speaking AMP after a protocol
	// switch; calls pending then fail with it.
	ErrSwitched = errors.New("conn: connection switched to another protocol")
	// ErrSwitchPending: nothing may be sent while a switch request awaits
	// its answer (Twisted's ProtocolSwitched).
	ErrSwitchPending = errors.New("conn: protocol switch pending")
	// ErrNotInline: SwitchAfterAnswer was called outside an inline
	// responder.
	ErrNotInline = errors.New("conn: SwitchAfterAnswer needs an inline responder")
	// ErrSwitchWithoutAsk: the peer asked for a switch with no _ask, so
	// it could not learn that the switch happened.
	ErrSwitchWithoutAsk = errors.New("conn: protocol switch requested without _ask")
	// ErrCrossed: the peer asked for StartTLS or a switch while our own
	// request was awaiting its answer. Neither end can go on (each holds
	// its writes for the other's answer), so the connection is closed.
	ErrCrossed = errors.New("conn: both ends asked for StartTLS or a protocol switch at once")
)

// crossed turns the refusal of a StartTLS or switch answer, because our
// own request is pending, into the protocol error that ends the
// connection.
func crossed(err error) error {
	if errors.Is(err, ErrTLSPending) || errors.Is(err, ErrSwitchPending) {
		return &ProtocolError{Err: fmt.Errorf("%w (%w)", ErrCrossed, err)}
	}
	return err
}

// Switch sends command (a protocol switch request, such as
// switching.ProtocolSwitch) and, if the peer answers without error, stops
// speaking AMP and returns the underlying connection (the TLS connection
// after StartTLS), whose first reads return whatever the peer sent after
// its answer. While the request is pending nothing else may be sent (calls
// fail with ErrSwitchPending); calls still waiting for answers fail with
// ErrSwitched. An error answer returns the *amp.RemoteError and the
// connection goes on as AMP.
func (c *Conn) Switch(ctx context.Context, command string, args *box.Box) (net.Conn, error) {
	cl := &call{done: make(chan struct{}, 1)}
	var inner net.Conn
	cl.after = func(isErr bool) error {
		if isErr {
			c.resumeWriter(false, nil)
			return nil
		}
		nc, err := c.takeOver(cl.paused)
		inner = nc
		return err
	}
	if err := c.specialCall(ctx, command, args, cl, true); err != nil {
		return nil, err
	}
	return inner, nil
}

// SwitchAfterAnswer, called by an inline responder with the context it
// was given, makes the connection stop speaking AMP once the responder's
// answer has been sent, and hands the underlying connection to serve (on
// a new goroutine). Bytes the peer sent after its request reach serve
// first. serve owns the connection: it must close it.
//
// Once SwitchAfterAnswer has returned nil, serve is called exactly once:
// with the connection, or with nil if the switch does not happen (the
// responder returned an error, the request had no _ask, the connection
// failed), so that serve can release what the responder prepared. From
// anywhere but a running inline responder it returns ErrNotInline.
func (c *Conn) SwitchAfterAnswer(ctx context.Context, serve func(net.Conn)) error {
	tok, _ := ctx.Value(inlineKey{}).(*inlineState)
	if tok == nil || tok.c != c || !tok.responding.Load() {
		return ErrNotInline
	}
	if prev := tok.switchTo.Swap(&serve); prev != nil {
		go (*prev)(nil) // asked twice: the last one counts
	}
	return nil
}

// takeOver ends AMP on the reader goroutine once the writer has sent
// everything up to the mark, and returns the connection for its new owner.
func (c *Conn) takeOver(paused chan struct{}) (net.Conn, error) {
	if err := c.waitPaused(paused); err != nil {
		return nil, err
	}
	inner := newPrefixConn(c.writeConn(), c.rd.dec.Buffered())
	c.rd.takenOver = true
	// The reader may have armed the box deadline while the answer came in
	// pieces; the new owner must not inherit it.
	c.nc.SetReadDeadline(time.Time{})
	c.resumeWriter(true, nil)
	c.setErr(ErrSwitched)
	if c.err != ErrSwitched {
		// The connection ended first (Close, or a Switch abandoned when its
		// context ended at this moment): the socket may already be closed,
		// and it is ours to close since takenOver is set. Once has
		// returned, so c.err is safe to read.
		inner.Close()
		c.failPending(c.err)
		return nil, &LostError{Cause: c.err}
	}
	c.failPending(ErrSwitched)
	return inner, nil
}

// switchAfter answers a switch request and hands the connection over.
func (c *Conn) switchAfter(ask []byte, resp *box.Box, serve func(net.Conn)) error {
	resp.Set(amp.KeyAnswer, ask)
	paused := make(chan struct{})
	// lock: what others queue behind the answer would never be sent.
	q := c.forAnswer(true)
	q.paused, q.lock = paused, true
	if err := c.enqueue(context.Background(), resp, nil, q); err != nil {
		go serve(nil)
		c.queueFull(err)
		return crossed(err)
	}
	c.signalWriter()
	inner, err := c.takeOver(paused)
	if err != nil {
		go serve(nil)
		return err
	}
	go serve(inner)
	return nil
}
