package conn

import (
	"github.com/ampmux/ampmux/amp"
	"github.com/ampmux/ampmux/amp/box"
)

// CodeOverloaded answers a command that found every handler busy and the
// handler queue full (Config.MaxHandlers, Config.MaxQueuedCommands). The
// connection goes on; the caller may try again later.
const CodeOverloaded = "OVERLOADED"

// task is one command for a handler goroutine; req is a copy that outlives
// the read buffer.
type task struct {
	r      *amp.Responder
	req    *box.Box
	hasAsk bool
}

// handlerQueue holds the commands waiting for a handler; under Conn.hmu.
type handlerQueue struct {
	running int
	queue   []task
	head    int
}

func (q *handlerQueue) len() int { return len(q.queue) - q.head }

func (q *handlerQueue) push(t task) {
	if q.head > 0 && q.head == len(q.queue) {
		q.queue, q.head = q.queue[:0], 0
	}
	q.queue = append(q.queue, t)
}

func (q *handlerQueue) pop() task {
	t := q.queue[q.head]
	q.queue[q.head] = task{}
	q.head++
	return t
}

// drop releases what is left once every handler is gone.
func (q *handlerQueue) drop() {
	for q.len() > 0 {
		putBox(q.pop().req)
	}
}

// startHandler gives a command to a handler goroutine: a new one while
// fewer than MaxHandlers run, else the queue, else an OVERLOADED answer.
// It never waits: a responder waiting for the peer needs the reader.
func (c *Conn) startHandler(r *amp.Responder, req *box.Box, hasAsk bool) error {
	own := getBox()
	own.CopyFrom(req)
	t := task{r: r, req: own, hasAsk: hasAsk}
	c.hmu.Lock()
	start := c.hq.running < c.cfg.MaxHandlers
	queued := !start && c.hq.len() < c.cfg.MaxQueuedCommands
	switch {
	case start:
		c.hq.running++
	case queued:
		c.hq.push(t)
	}
	c.hmu.Unlock()
	switch {
	case start:
		c.handlers.Add(1)
		go c.runHandlers(t)
	case queued:
	default:
		defer putBox(own)
		c.active.Add(-1)
		name, _ := own.Get(amp.KeyCommand)
		if !hasAsk {
			c.cfg.Logger.Warn("amp: dropping a command: every handler is busy", "command", string(name), "remote", c.nc.RemoteAddr())
			return nil
		}
		ask, _ := own.Get(amp.KeyAsk)
		return c.answerError(ask, CodeOverloaded, "every handler is busy", true)
	}
	return nil
}

// runHandlers serves t, then the queued commands, until none is left.
func (c *Conn) runHandlers(t task) {
	defer c.handlers.Done()
	resp := getBox()
	defer putBox(resp)
	for {
		c.serveTask(t, resp)
		c.hmu.Lock()
		if c.hq.len() == 0 || c.ended.Load() {
			c.hq.running--
			c.hmu.Unlock()
			return // what is left goes when the connection finishes
		}
		t = c.hq.pop()
		c.hmu.Unlock()
		resp.Reset()
	}
}

func (c *Conn) serveTask(t task, resp *box.Box) {
	defer putBox(t.req)
	var ask []byte
	if t.hasAsk {
		ask, _ = t.req.Get(amp.KeyAsk)
	}
	name, _ := t.req.Get(amp.KeyCommand)
	err := t.r.Serve(c.ctx, t.req, resp)
	c.finishCommand(t.r, name, ask, t.hasAsk, resp, err, false)
}
