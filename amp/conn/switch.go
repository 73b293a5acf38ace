package conn

import (
	"context"
	"errors"
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
)

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
			c.resumeWriter(false)
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

// SwitchAfterAnswer, called by an inline responder, makes the connection
// stop speaking AMP once the responder's answer has been sent, and hands
// the underlying connection to serve (on a new goroutine). Bytes the peer
// sent after its request reach serve first. If the responder returns an
// error instead, nothing switches and serve is not called. If the
// connection fails while switching, serve is called with nil. serve owns
// the connection: it must close it.
func (c *Conn) SwitchAfterAnswer(ctx context.Context, serve func(net.Conn)) error {
	if FromContext(ctx) != c || !c.inInline {
		return ErrNotInline
	}
	c.switchTo = serve
	return nil
}

// takeOver ends AMP on the reader goroutine once the writer has sent
// everything up to the mark, and returns the connection for its new owner.
func (c *Conn) takeOver(paused chan struct{}) (net.Conn, error) {
	if err := c.waitPaused(paused); err != nil {
		return nil, err
	}
	c.wmu.Lock()
	wc := c.wconn
	c.wmu.Unlock()
	inner := newPrefixConn(wc, c.dec.Buffered())
	c.takenOver = true
	// The reader may have armed the box deadline while the answer came in
	// pieces; the new owner must not inherit it.
	c.nc.SetReadDeadline(time.Time{})
	c.resumeWriter(true)
	c.setErr(ErrSwitched)
	c.failPending(ErrSwitched)
	c.wmu.Lock()
	c.wclosing = true
	c.wmu.Unlock()
	return inner, nil
}

// switchAfter answers a switch request and hands the connection over.
func (c *Conn) switchAfter(ask []byte, resp *box.Box, serve func(net.Conn)) error {
	resp.Set(amp.KeyAnswer, ask)
	paused, err := c.enqueue(c.ctx, resp, 4*c.cfg.MaxWriteBuffer, true)
	if err != nil {
		go serve(nil)
		return err
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
