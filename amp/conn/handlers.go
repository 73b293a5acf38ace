package conn

import (
	"sync/atomic"

	"github.com/ampmux/ampmux/amp"
	"github.com/ampmux/ampmux/amp/box"
)

// CodeOverloaded answers a command that found every handler busy and the
// handler queue full (Config.MaxHandlers, Config.MaxQueuedCommands), or,
// on a connection that has not authenticated, the requests its handlers
// hold past Allowance more than its Budget could cover. The connection
// goes on; the caller may try again later.
const CodeOverloaded = "OVERLOADED"

// task is one command for a handler goroutine; req is a copy that outlives
// the read buffer, of size bytes (requestBytes) counted in handlerQueue.held.
type task struct {
	r      *amp.Responder
	req    *box.Box
	hasAsk bool
	size   int64
}

// handlerQueue holds the commands waiting for a handler; under Conn.hmu.
type handlerQueue struct {
	running int
	queue   []task
	head    int
	// held is the bytes of the requests of the running and queued tasks,
	// counted on a connection with a Budget; written under hmu, and read
	// without it by the reader (the only one that adds to it) to learn
	// whether it must ask Config.Trusted before it takes hmu. charged is
	// what of held past the Budget's allowance is drawn from the Budget.
	// Invariant: 0 <= charged <= max(0, held-allowance); both are 0 once
	// the queue is dropped.
	held    atomic.Int64
	charged int64
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

// dropQueue releases what is left once every handler is gone (in finish).
func (c *Conn) dropQueue() {
	c.hmu.Lock()
	defer c.hmu.Unlock()
	for c.hq.len() > 0 {
		t := c.hq.pop()
		putBox(t.req)
		c.releaseLocked(t.size)
	}
}

// fieldIndexBytes is what a box's index costs per field (box's spanSize).
const fieldIndexBytes = 16

// requestBytes is the storage a copy of req holds: its bytes and its index.
func requestBytes(req *box.Box) int64 {
	return int64(req.EncodedLen() + req.Len()*fieldIndexBytes)
}

// holdLocked counts a request of size bytes in hq.held, drawing what the
// requests now hold past the allowance from the Budget unless trusted; it
// reports false, counting nothing, if the Budget cannot cover it.
func (c *Conn) holdLocked(size int64, trusted bool) bool {
	if size == 0 {
		return true
	}
	budget := c.cfg.Budget
	held := c.hq.held.Load() + size
	if over := held - budget.own - c.hq.charged; over > 0 && !trusted {
		if !budget.take(over) {
			return false
		}
		c.hq.charged += over
	}
	c.hq.held.Store(held)
	return true
}

// releaseLocked stops counting a request of size bytes, and gives back
// what the rest no longer needs.
func (c *Conn) releaseLocked(size int64) {
	if size == 0 {
		return
	}
	held := c.hq.held.Load() - size
	c.hq.held.Store(held)
	if excess := c.hq.charged - max(0, held-c.cfg.Budget.own); excess > 0 {
		c.cfg.Budget.give(excess)
		c.hq.charged -= excess
	}
}

// startHandler gives a command to a handler goroutine: a new one while
// fewer than MaxHandlers run, else the queue, else an OVERLOADED answer;
// OVERLOADED too when the connection has a Budget that cannot cover the
// request's copy (see holdLocked). It never waits: a responder waiting for
// the peer needs the reader. The request is copied only once it is
// admitted; only the reader adds to the running handlers, the queue and
// hq.held, so what it saw admitted stays so while it copies.
func (c *Conn) startHandler(r *amp.Responder, req *box.Box, hasAsk bool) error {
	var size int64
	trusted := false
	if c.cfg.Budget != nil {
		size = requestBytes(req)
		// hq.held can only have shrunk by the time hmu is ours: if the
		// budget is not needed now, it will not be then.
		trusted = c.hq.held.Load()+size > c.cfg.Budget.own && c.cfg.Trusted(c)
	}
	c.hmu.Lock()
	start := c.hq.running < c.cfg.MaxHandlers
	room := start || c.hq.len() < c.cfg.MaxQueuedCommands
	admitted := room && c.holdLocked(size, trusted)
	if admitted && start {
		c.hq.running++
	}
	c.hmu.Unlock()
	if !admitted {
		return c.overloaded(req, hasAsk, room)
	}
	own := getBox()
	own.CopyFrom(req)
	t := task{r: r, req: own, hasAsk: hasAsk, size: size}
	if !start {
		// A handler may have finished meanwhile, and left.
		c.hmu.Lock()
		if start = c.hq.running < c.cfg.MaxHandlers; start {
			c.hq.running++
		} else {
			c.hq.push(t)
		}
		c.hmu.Unlock()
	}
	if start {
		c.handlers.Add(1)
		go c.runHandlers(t)
	}
	return nil
}

// overloaded refuses a command startHandler could not admit (req aliases
// the read buffer): room, the handlers had room but the Budget did not.
func (c *Conn) overloaded(req *box.Box, hasAsk, room bool) error {
	c.active.Add(-1)
	why := "every handler is busy"
	if room {
		why = "the requests waiting for handlers hold all the memory allowed"
	}
	if !hasAsk {
		name, _ := req.Get(amp.KeyCommand)
		c.cfg.Logger.Warn("amp: dropping a command: "+why, "command", string(name), "remote", c.nc.RemoteAddr())
		return nil
	}
	ask, _ := req.Get(amp.KeyAsk)
	return c.answerError(ask, CodeOverloaded, why, true)
}

// runHandlers serves t, then the queued commands, until none is left.
func (c *Conn) runHandlers(t task) {
	defer c.handlers.Done()
	resp := getBox()
	defer putBox(resp)
	for {
		c.serveTask(t, resp)
		c.hmu.Lock()
		c.releaseLocked(t.size)
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
