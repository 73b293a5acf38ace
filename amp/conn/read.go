package conn

import (
	"context"
	"errors"
	"io"
	"time"

	"github.com/ampmux/ampmux/amp/box"
)

func (c *Conn) readLoop() {
	defer close(c.readerDone)
	defer c.releaseBuffer()
	for {
		err := c.rd.dec.Next(&c.rd.in)
		if err == nil {
			c.rd.boxes++
			err = c.dispatch(&c.rd.in)
		}
		if c.rd.takenOver {
			return
		}
		if err != nil {
			c.readFailed(err)
			return
		}
		if c.kick.Load() && c.wbytes.Load() >= flushEarly {
			// Much is queued and more input waits: send it now, so that
			// the peer works on it while we go on.
			c.kick.Store(false)
			c.flushNow()
		}
	}
}

// queueAnswer queues an answer or error box. From the reader it leaves the
// write for when the input runs dry (kickReader), so that all answers to
// one read leave in one write; from a handler it wakes the writer. An
// answer waits for room as long as the connection lives (closing ends the
// wait), not as long as c.ctx: BaseContext's end does not close it.
func (c *Conn) queueAnswer(b *box.Box, fromReader bool) error {
	if err := c.enqueue(context.Background(), b, nil, c.forAnswer(fromReader)); err != nil {
		c.queueFull(err)
		return err
	}
	if fromReader {
		c.kick.Store(true)
	} else {
		c.signalWriter()
	}
	return nil
}

// queueFull closes the connection when an answer found the write queue
// full and could not wait, or needed more of the Budget than it had left
// with nothing queued to wait for.
func (c *Conn) queueFull(err error) {
	switch {
	case errors.Is(err, ErrWriteQueueFull):
		c.cfg.Logger.Warn("amp: closing connection: write queue full", "remote", c.nc.RemoteAddr(), "err", err)
		c.fail(err)
	case errors.Is(err, ErrBufferBudget):
		c.cfg.Logger.Warn("amp: closing connection: buffer budget exhausted", "remote", c.nc.RemoteAddr(), "err", err)
		c.fail(err)
	}
}

// kickReader sends the reader's queued answers before it blocks on the
// network, and arms the box deadline while a box is partly read.
type kickReader struct {
	c *Conn
	r io.Reader
}

// Between boxes, with Config.Heartbeat on, readIdle arms the heartbeat
// instead of clearing the deadline. Inside a box, each box gets
// BoxTimeout from when it is first seen partly read: a box that begins in
// the read that ended the one before (a pipelined stream) gets its own,
// from when the reader comes back for it (c.rd.boxes has moved). To spare
// a timer update per box, a deadline armed less than BoxTimeout/16 ago is
// kept; if it expires before the box has had BoxTimeout, it is re-armed
// for the rest.
func (k *kickReader) Read(p []byte) (int, error) {
	n, err := k.read(p)
	k.c.rcvd.Add(int64(n))
	return n, err
}

func (k *kickReader) read(p []byte) (int, error) {
	c := k.c
	if c.kick.Load() {
		c.kick.Store(false)
		c.flushNow()
	}
	midBox := len(c.rd.dec.Buffered()) > 0
	if !midBox {
		if c.cfg.Heartbeat > 0 {
			c.rd.armed = false
			return c.readIdle(k.r, p)
		}
		if c.rd.armed {
			c.rd.armed = false
			c.nc.SetReadDeadline(time.Time{})
		}
		return k.r.Read(p)
	}
	if !c.rd.armed || c.rd.boxAt != c.rd.boxes {
		now := time.Now()
		c.rd.boxStart, c.rd.boxAt = now, c.rd.boxes
		if !c.rd.armed || now.Sub(c.rd.boxArmedAt) >= c.cfg.BoxTimeout/16 {
			c.armBox(now, now)
		}
		c.rd.armed = true
		c.rd.hb.due = time.Time{} // the deadline is no longer the heartbeat's
	}
	for {
		n, err := k.r.Read(p)
		if n > 0 || !isTimeout(err) {
			if n > 0 && isTimeout(err) {
				err = nil
			}
			return n, err
		}
		now := time.Now()
		if now.Sub(c.rd.boxStart) >= c.cfg.BoxTimeout {
			return n, err
		}
		c.armBox(now, c.rd.boxStart) // kept, and expired early: the rest
	}
}

// armBox arms the box deadline, BoxTimeout after from, at now.
func (c *Conn) armBox(now, from time.Time) {
	c.rd.boxArmedAt = now
	c.nc.SetReadDeadline(from.Add(c.cfg.BoxTimeout))
}

func (c *Conn) readFailed(err error) {
	if c.ended.Load() {
		// We closed it; whatever the read says is a consequence.
		c.fail(c.err)
		return
	}
	if errors.Is(err, ErrHeartbeatTimeout) {
		// Nothing to flush to a peer that is gone.
		c.cfg.Logger.Warn("amp: closing connection: peer silent", "remote", c.nc.RemoteAddr(), "err", err)
		c.fail(err)
		return
	}
	err = c.tlsReadError(err)
	var pe *ProtocolError
	switch {
	case err == io.EOF:
	case errors.As(err, &pe):
	case isDecodeError(err):
		err = &ProtocolError{Err: err}
	}
	switch {
	case pe != nil || isDecodeError(err):
		c.cfg.Logger.Warn("amp: closing connection after bad input", "remote", c.nc.RemoteAddr(), "err", err)
	case errors.Is(err, ErrBufferBudget):
		c.cfg.Logger.Warn("amp: closing connection: read buffer budget exhausted", "remote", c.nc.RemoteAddr(), "err", err)
	}
	// Let answers already queued go out, then close.
	c.closeAfterFlush(err)
}

func isDecodeError(err error) bool {
	var tl *box.TooLongError
	return errors.As(err, &tl) || errors.Is(err, box.ErrBoxTooLarge) || errors.Is(err, box.ErrTooManyFields) ||
		errors.Is(err, box.ErrDuplicateKey) || errors.Is(err, io.ErrUnexpectedEOF)
}
