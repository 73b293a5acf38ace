package amp

import (
	"context"

	"github.com/ampmux/ampmux/amp/box"
)

// AsyncCaller is a Caller that can also pipeline calls, as Twisted's
// callRemote does: Go sends a command box and returns at once, and done
// runs later with the answer. *conn.Conn implements it (see conn.Conn.Go
// for where done runs and what it may do).
type AsyncCaller interface {
	Caller
	// Go sends a command box with args without waiting. done is called
	// exactly once with the answer's fields (valid only while done runs)
	// or an error; an error returned by Go means nothing was sent and done
	// will not be called.
	Go(ctx context.Context, command string, args *box.Box, done func(ctx context.Context, reply *box.Box, err error)) error
}

// Go is the pipelined Call: it sends the command with args over c and
// returns once the box is queued; done then receives the response decoded
// as Call decodes it, or the error Call would have returned (declared
// error answers are *RemoteError matching the declared error). done runs
// where c runs it (for *conn.Conn, on the reader goroutine: it must not
// block, and may call Go again, best with the ctx it was given). The R it
// gets is its own: nothing in it aliases the connection's buffers.
//
// An error returned by Go (an argument that cannot be encoded, a closed
// connection) means nothing was sent, and done will not be called. For a
// NoAnswer command done is called with a zero R before Go returns.
func (c *Command[A, R]) Go(ctx context.Context, conn AsyncCaller, args A, done func(ctx context.Context, r R, err error)) error {
	req := getBox()
	defer putBox(req)
	if c.spec.NoAnswer {
		h := c.getHolder()
		defer c.putHolder(h)
		h.a = args
		if err := c.EncodeArgs(req, &h.a, fdsOf(conn)); err != nil {
			return err
		}
		if err := conn.SendBox(ctx, c.name, req); err != nil {
			return err
		}
		done(ctx, h.r, nil)
		return nil
	}
	g := c.getPending()
	g.h.a = args
	g.fds = fdsOf(conn)
	if err := c.EncodeArgs(req, &g.h.a, g.fds); err != nil {
		c.putPending(g)
		return err
	}
	g.done = done
	if err := conn.Go(ctx, c.name, req, g.complete); err != nil {
		c.putPending(g)
		return err
	}
	// g may be back in the pool already: the answer can beat this line.
	return nil
}

// pendingGo is one Go call in flight. It is pooled with its callback
// bound, so that a call allocates no closure.
type pendingGo[A, R any] struct {
	cmd      *Command[A, R]
	h        holder[A, R]
	fds      FDTransport
	done     func(context.Context, R, error)
	complete func(ctx context.Context, reply *box.Box, err error) // g.finish, bound once
}

func (c *Command[A, R]) getPending() *pendingGo[A, R] {
	if g, ok := c.pend.Get().(*pendingGo[A, R]); ok {
		return g
	}
	g := &pendingGo[A, R]{cmd: c}
	g.complete = g.finish
	return g
}

func (c *Command[A, R]) putPending(g *pendingGo[A, R]) {
	g.h = holder[A, R]{} // drop references the values hold
	g.fds, g.done = nil, nil
	c.pend.Put(g)
}

func (g *pendingGo[A, R]) finish(ctx context.Context, reply *box.Box, err error) {
	c, done := g.cmd, g.done
	var r R
	if err != nil {
		err = c.mapRemote(err)
	} else {
		err = c.DecodeResponse(reply, &g.h.r, g.fds)
		r = g.h.r
	}
	// Recycled before done runs, so that a done that calls Go again finds
	// it in the pool.
	c.putPending(g)
	done(ctx, r, err)
}
