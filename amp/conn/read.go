package conn

import (
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
// one read leave in one write; from a handler it wakes the writer.
func (c *Conn) queueAnswer(b *box.Box, fromReader bool) error {
	if err := c.enqueue(c.ctx, b, nil, c.forAnswer(fromReader)); err != nil {
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
// instead of clearing the deadline.
func (k *kickReader) Read(p []byte) (int, error) {
	c := k.c
	if c.kick.Load() {
		c.kick.Store(false)
		c.flushNow()
	}
	midBox := len(c.rd.dec.Buffered()) > 0
	if !midBox && c.cfg.Heartbeat > 0 {
		c.rd.armed = false
		return c.readIdle(k.r, p)
	}
	if midBox != c.rd.armed {
		c.rd.armed = midBox
		c.rd.hb.due = time.Time{} // the deadline is no longer the heartbeat's
		if midBox {
			c.nc.SetReadDeadline(time.Now().Add(c.cfg.BoxTimeout))
		} else {
			c.nc.SetReadDeadline(time.Time{})
		}
	}
	return k.r.Read(p)
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
