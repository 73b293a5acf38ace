package conn

import (
	"context"
	"strconv"
	"sync/atomic"

	"github.com/ampmux/ampmux/amp"
	"github.com/ampmux/ampmux/amp/box"
)

type call struct {
	done  chan struct{} // buffered 1
	reply *box.Box
	err   error
	// For StartTLS and switches: run on the reader goroutine when the
	// answer arrives, before the caller is woken.
	after  func(isErr bool) error
	paused chan struct{}
	// counted: the reader counted this caller in Conn.waking when it
	// woke it.
	counted bool
	// The request's wire form, built outside the write lock.
	enc []byte
	// cb: a call made by Go; the answer goes to it on the reader.
	cb func(context.Context, *box.Box, error)
	// refs: a Go call is recycled once both its sender and whoever calls
	// cb back are done with it (a peer may answer, or the connection
	// fail, before the sender has finished).
	refs atomic.Int32
}

// getCall takes a call from the connection's own pool: its channel never
// serves two connections (nor two synctest bubbles).
func (c *Conn) getCall() *call {
	if cl, ok := c.calls.Get().(*call); ok {
		return cl
	}
	return &call{done: make(chan struct{}, 1)}
}

// putCall recycles cl, unless it held a large request.
func (c *Conn) putCall(cl *call) {
	cl.reply, cl.err, cl.cb, cl.counted = nil, nil, nil, false
	if cap(cl.enc) > 64<<10 {
		return
	}
	c.calls.Put(cl)
}

// releaseCall drops one of a Go call's two references.
func (c *Conn) releaseCall(cl *call) {
	if cl.refs.Add(-1) == 0 {
		c.putCall(cl)
	}
}

// CallBox sends command with the fields of args (which must not hold
// _ask or _command: that is a *box.DuplicateKeyError) and waits for the
// answer, whose fields it copies into reply. An error answer returns a
// *amp.RemoteError. If ctx ends first, CallBox returns ctx.Err() at once,
// whether or not the request has left yet, and the late answer is dropped.
// args (nil: no arguments) is encoded before the request is queued and
// never kept.
func (c *Conn) CallBox(ctx context.Context, command string, args, reply *box.Box) error {
	cl := c.getCall()
	cl.reply = reply
	tag, alone, err := c.register(cl)
	if err != nil {
		c.putCall(cl)
		return err
	}
	if err := c.send(ctx, cl, command, tag, args, alone); err != nil {
		if !c.unregister(tag, cl) {
			<-cl.done // failPending (or an early answer) signalled it
			if cl.counted {
				c.waking.Add(-1)
			}
		}
		c.putCall(cl)
		return err
	}
	if done := ctx.Done(); done == nil {
		<-cl.done // no select for contexts that never end
	} else {
		select {
		case <-cl.done:
		case <-done:
			if c.abandon(tag, cl) {
				return ctx.Err()
			}
			<-cl.done // answered or failed while we looked
		}
	}
	if cl.counted {
		cl.counted = false
		c.waking.Add(-1)
	}
	err = cl.err
	c.putCall(cl)
	return err
}

// register gives cl a tag and makes it pending. alone: no other call is
// waiting for an answer, nor was just answered (its caller may be about to
// call again, and the writer batches the two).
func (c *Conn) register(cl *call) (tag uint64, alone bool, err error) {
	c.pmu.Lock()
	defer c.pmu.Unlock()
	if c.lost != nil {
		return 0, false, c.lost
	}
	c.nextTag++
	tag = c.nextTag
	c.pending.put(tag, cl)
	return tag, c.pending.len() == 1 && c.waking.Load() == 0, nil
}

// unregister takes back a call that could not be sent; false means
// failPending has it and signals (or calls back) it.
func (c *Conn) unregister(tag uint64, cl *call) bool {
	c.pmu.Lock()
	defer c.pmu.Unlock()
	cur, _ := c.pending.lookup(tag)
	if c.lost != nil || cur != cl {
		return false
	}
	c.pending.remove(tag)
	return true
}

// abandon forgets a call whose caller gave up; it reports false if the
// answer (or a failure) got there first and cl.done is about to fire.
func (c *Conn) abandon(tag uint64, cl *call) bool {
	c.pmu.Lock()
	cur, _ := c.pending.lookup(tag)
	owned := c.lost == nil && cur == cl
	if owned {
		c.pending.cancel(tag) // the answer is still due; drop it then
	}
	c.pmu.Unlock()
	if owned {
		cl.reply = nil
		c.putCall(cl)
	}
	return owned
}

// failPending fails every pending call once: their callers get a
// *LostError, Go callbacks run here.
func (c *Conn) failPending(cause error) {
	lost := &LostError{Cause: cause}
	c.pmu.Lock()
	if c.lost != nil {
		c.pmu.Unlock()
		return
	}
	c.lost = lost
	calls := c.pending.drain()
	c.pmu.Unlock()
	for _, cl := range calls {
		switch {
		case cl == nil:
		case cl.cb != nil:
			done := cl.cb
			c.releaseCall(cl)
			done(c.ctx, nil, lost)
		default:
			cl.err = lost
			cl.done <- struct{}{}
		}
	}
}

// Call is CallBox returning a new reply box.
func (c *Conn) Call(ctx context.Context, command string, args *box.Box) (*box.Box, error) {
	reply := new(box.Box)
	if err := c.CallBox(ctx, command, args, reply); err != nil {
		return nil, err
	}
	return reply, nil
}

// SendBox sends command with args and no _ask: the peer answers nothing
// (Twisted's requiresAnswer=False). It returns once the box is queued; ctx
// bounds the wait for room in the write queue.
func (c *Conn) SendBox(ctx context.Context, command string, args *box.Box) error {
	c.pmu.Lock()
	lost := c.lost
	c.pmu.Unlock()
	if lost != nil {
		return lost
	}
	cl := c.getCall() // for its encoding buffer
	defer c.putCall(cl)
	var err error
	cl.enc, err = box.AppendWith(cl.enc[:0], args, box.Field{Key: amp.KeyCommand, Value: []byte(command)})
	if err != nil {
		return err
	}
	if err := c.enqueue(ctx, nil, cl.enc, c.forCall(c.onReader(ctx))); err != nil {
		return err
	}
	c.signalWriter()
	return nil
}

// send queues a call and sees it sent. Code on the reader holding its
// token leaves it to the reader, which writes everything queued once its
// input runs dry; a caller alone writes it through the fast path, sparing
// the hand-off to the writer (a third of the latency at one call in
// flight); otherwise the writer batches it with the boxes of other
// callers.
func (c *Conn) send(ctx context.Context, cl *call, command string, tag uint64, args *box.Box, alone bool) error {
	if err := c.encodeCall(cl, command, tag, args); err != nil {
		return err
	}
	reader := c.onReader(ctx)
	if err := c.enqueue(ctx, nil, cl.enc, c.forCall(reader)); err != nil {
		return err
	}
	switch {
	case reader:
		// Sent with the reader's other writes when its input runs dry.
		c.kick.Store(true)
	case alone:
		c.flushNow()
	default:
		c.signalWriter()
	}
	return nil
}

// onReader reports whether ctx is the token of user code running on the
// reader goroutine right now (an inline responder or a Go callback).
func (c *Conn) onReader(ctx context.Context) bool {
	tok, _ := ctx.Value(inlineKey{}).(*inlineState)
	return tok == &c.inline && tok.onReader.Load()
}

// encodeCall puts the wire form of a call into cl.enc.
func (c *Conn) encodeCall(cl *call, command string, tag uint64, args *box.Box) error {
	var tmp [16]byte
	var err error
	cl.enc, err = box.AppendWith(cl.enc[:0], args,
		box.Field{Key: amp.KeyAsk, Value: strconv.AppendUint(tmp[:0], tag, 16)},
		box.Field{Key: amp.KeyCommand, Value: []byte(command)})
	return err
}
