package conn

import (
	"context"

	"github.com/ampmux/ampmux/amp/box"
)

// Go sends command with the fields of args (which must not hold _ask or
// _command) without waiting: done is called exactly once, with the
// answer or with an error (a *amp.RemoteError for an error answer, a
// *LostError when the connection ends first). It is the pipelined
// counterpart of CallBox, for callers that keep many calls in flight
// without a goroutine each, as Twisted's callRemote does.
//
// done runs on the connection's reader goroutine (or, when the connection
// ends, on the goroutine that ends it), so it must not block: it may call
// Go again, but not CallBox or Close. reply is valid only until done
// returns; copy what you keep. Pass the ctx done gets to the Go calls it
// makes: it tells Go that it runs on the reader, so the call leaves with
// the reader's other writes, with no hand-off to the writer goroutine
// (any other context works too, with that hand-off). It ends with the
// connection; do not keep it.
//
// ctx bounds only the wait for room in the write buffer. With the ctx done
// got (a call made on the reader) Go never waits for room, since a reader
// that waits reads nothing, and a peer chaining calls the same way would
// wait for it in turn: such a call may go past MaxWriteBuffer, up to
// MaxWriteQueue as answers do, and past that Go fails at once with
// ErrWriteQueueFull (the connection goes on). An error returned by Go
// means the call was not sent, and done will not be called. args is
// encoded before Go returns: the caller may reuse it at once.
func (c *Conn) Go(ctx context.Context, command string, args *box.Box, done func(ctx context.Context, reply *box.Box, err error)) error {
	cl := c.getCall()
	cl.cb = done
	cl.refs.Store(2) // ours, and the answer's (or failure's)
	tag, alone, err := c.register(cl)
	if err != nil {
		c.putCall(cl)
		return err
	}
	if err := c.send(ctx, cl, command, tag, args, alone); err != nil {
		if c.unregister(tag, cl) {
			c.putCall(cl)
			return err
		}
		// failPending took it and calls done: the call was lost anyway.
	}
	c.releaseCall(cl)
	return nil
}

// deliver runs a Go call's done callback on the reader goroutine.
func (c *Conn) deliver(cl *call, reply *box.Box, err error) {
	done := cl.cb
	c.releaseCall(cl)
	c.inline.onReader.Store(true)
	done(c.inlineCtx, reply, err)
	c.inline.onReader.Store(false)
}
