package conn

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"runtime"
	"time"

	"github.com/ampmux/ampmux/amp/box"
)

// writeState is the write queue; every field is under Conn.wmu.
type writeState struct {
	buf   []byte
	spare []byte // a written buffer kept for reuse
	owner socketOwner
	// mark, if >= 0: write buf[:mark], then lend the socket (StartTLS,
	// switch) and close paused.
	mark   int
	paused chan struct{}
	// unlend: the socket was given back before the writer lent it (the
	// answer came while the marked batch was still being written); the
	// lend that follows is void.
	unlend bool
	// locked refuses new boxes while a switch is pending.
	locked error
	// special, once a StartTLS or switch request (or answer) is queued
	// with a mark, refuses another until resumeWriter: one at a time.
	special error
	// inflight is what the writer (or the fast path) took from buf and has
	// not finished writing; it counts against the limits until then, so
	// that the bytes held for the peer are len(buf)+inflight.
	inflight int
	// charged is what of the bytes held for the peer (len(buf)+inflight)
	// past the Budget's allowance is drawn from Config.Budget, on a
	// connection that is not Trusted. Invariant: 0 <= charged <=
	// max(0, len(buf)+inflight-allowance), except that a call may hold
	// less than its share (see enqueue); settleLocked gives back what the
	// bytes still held no longer need, and finish all of it.
	charged int64
	// space, if not nil, is closed when room is made (a batch written, the
	// queue closing): callers wait on it for room.
	space   chan struct{}
	closing bool  // no new boxes; the writer sends the rest, then closes
	cause   error // why it is closing, for boxes refused meanwhile
	err     error // the connection failed: write nothing more
	stop    bool  // taken over: the writer exits without touching nc
	wconn   net.Conn
	// Descriptors to pass with the next write (Unix sockets).
	fdsOut   []int
	fdsClose []io.Closer
	sentFDs  int
	// total counts the bytes ever queued: the write stream's offset just
	// past the last box queued (a probe's end, see Conn.probeMark).
	total int64
}

type socketOwner uint8

const (
	ownerNone socketOwner = iota
	ownerWriter
	ownerFast
	ownerLent
)

// maxYields bounds how often the writer yields for more boxes before it
// writes.
const maxYields = 8

// flushEarly is how many queued bytes make the reader (or writer) send
// before the batch is complete: large enough to amortize the syscall over
// ~100 small boxes, small enough that both peers work at once.
const flushEarly = 4 << 10

// writeChunk bounds one Write, so that the write deadline measures
// progress rather than the size of a batch.
const writeChunk = 1 << 20

func (c *Conn) signalWriter() {
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// queueing says where a box goes in the write queue and how long it may
// wait for room.
type queueing struct {
	// limit: wait while the queue holds this many bytes or more (queued
	// and being written): MaxWriteBuffer for calls, MaxWriteQueue for
	// answers.
	limit int
	// reader: the box comes from the reader goroutine, which waits only
	// while the writer can write (see waitSpace).
	reader bool
	// paused (if not nil) marks the end of this box: the writer lends the
	// socket once it is written.
	paused chan struct{}
	// lock refuses every later box until the switch is decided.
	lock bool
	// noWait: refuse with ErrWriteQueueFull rather than wait (a probe, a
	// call made on the reader).
	noWait bool
	// call: a request made on this end, which never waits for the Budget
	// (it draws what the Budget has left; MaxWriteBuffer bounds it).
	call bool
	// probe: a heartbeat probe; enqueue marks where it ends (probeMark).
	probe bool
}

// forCall and forAnswer are the queueing of calls and answers. A call made
// on the reader (holding its token) never waits for room, since the reader
// that waits reads nothing, and a peer doing the same would wait for it in
// turn: like an answer it may go past MaxWriteBuffer, up to MaxWriteQueue,
// and past that it fails at once with ErrWriteQueueFull.
func (c *Conn) forCall(reader bool) queueing {
	if reader {
		return queueing{limit: c.cfg.MaxWriteQueue, reader: true, noWait: true, call: true}
	}
	return queueing{limit: c.cfg.MaxWriteBuffer, call: true}
}

func (c *Conn) forAnswer(reader bool) queueing {
	return queueing{limit: c.cfg.MaxWriteQueue, reader: reader}
}

// enqueue appends a box to the write queue, waiting for room as q says:
// b encoded in place, or enc already encoded (when b is nil). The caller
// then wakes the writer or flushes.
//
// On a connection with a Budget, the bytes held for the peer past the
// allowance are drawn from it (coverLocked) once the box is appended; a
// box the Budget cannot cover is taken out again, and enqueue waits for
// the writer to send what is queued (waitBudget) and tries again. Config.
// Trusted is asked, with wmu released, before the first box that would
// draw is appended.
func (c *Conn) enqueue(ctx context.Context, b *box.Box, enc []byte, q queueing) error {
	paused, lock := q.paused, q.lock
	c.wmu.Lock()
	defer c.wmu.Unlock()
	trust := trustUnknown
	for {
		if err := c.waitSpace(ctx, q.limit, q.reader, q.noWait); err != nil {
			return err
		}
		if c.w.locked != nil {
			return c.w.locked
		}
		if paused != nil && c.w.special != nil {
			return c.w.special
		}
		if paused != nil && !lock && c.w.wconn != c.nc {
			// A StartTLS (the marked box that does not lock) after a
			// handshake that ran while this one waited for room.
			return ErrTLSActive
		}
		if c.cfg.Budget != nil && trust == trustUnknown && c.uncoveredLocked()+int64(len(enc)+boxLen(b)) > 0 {
			// The box would draw on the budget: is the peer trusted?
			c.wmu.Unlock()
			trust = trustNo
			if c.cfg.Trusted(c) {
				trust = trustYes
			}
			c.wmu.Lock()
			continue
		}
		prev := len(c.w.buf)
		if b != nil {
			var err error
			if c.w.buf, err = box.Append(c.w.buf, b); err != nil {
				return err
			}
		} else {
			c.w.buf = append(c.w.buf, enc...)
		}
		if trust == trustNo && c.uncoveredLocked() > 0 && !c.coverLocked(q.call) {
			size := len(c.w.buf) - prev
			c.w.buf = c.w.buf[:prev]
			if err := c.waitBudget(ctx, q, size); err != nil {
				return err
			}
			continue
		}
		c.wseq.Add(1)
		c.wbytes.Store(int64(len(c.w.buf)))
		c.w.total += int64(len(c.w.buf) - prev)
		if q.probe { // on the reader
			c.rd.hb.end = c.w.total
			c.probeMark.Store(c.w.total)
		}
		if paused != nil {
			c.w.mark = len(c.w.buf)
			c.w.paused = paused
			c.w.special = ErrTLSPending
		}
		if lock {
			c.w.locked = ErrSwitchPending
			c.w.special = ErrSwitchPending
		}
		return nil
	}
}

const (
	trustUnknown = iota // Config.Trusted not asked yet
	trustNo
	trustYes
)

func boxLen(b *box.Box) int {
	if b == nil {
		return 0
	}
	return b.EncodedLen()
}

// uncoveredLocked is how many of the bytes held for the peer past the
// allowance are not drawn from the Budget.
func (c *Conn) uncoveredLocked() int64 {
	return int64(len(c.w.buf)+c.w.inflight) - c.cfg.Budget.own - c.w.charged
}

// coverLocked draws the uncovered bytes from the Budget. It reports false,
// drawing nothing, if the Budget cannot cover them, except for a call,
// which draws what is left and is admitted all the same.
func (c *Conn) coverLocked(call bool) bool {
	need := c.uncoveredLocked()
	if call {
		c.w.charged += c.cfg.Budget.takeUpTo(need)
		return true
	}
	if !c.cfg.Budget.take(need) {
		return false
	}
	c.w.charged += need
	return true
}

// settleLocked gives back to the Budget what the bytes still held for the
// peer no longer need, as the writer (or the fast path) lets some go.
func (c *Conn) settleLocked() {
	if c.w.charged == 0 {
		return
	}
	if excess := c.w.charged - max(0, int64(len(c.w.buf)+c.w.inflight)-c.cfg.Budget.own); excess > 0 {
		c.cfg.Budget.give(excess)
		c.w.charged -= excess
	}
}

// releaseQueue gives back all the write queue drew, once the writer is
// gone (in finish): nothing is queued after closing.
func (c *Conn) releaseQueue() {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.w.charged > 0 {
		c.cfg.Budget.give(c.w.charged)
		c.w.charged = 0
	}
}

// waitBudget waits, with wmu held, for the writer to send some of what is
// queued, since the Budget could not cover a box of size bytes: as
// waitSpace does for room under the limit, with the same rule for the
// reader, so that the writer's deadline bounds the wait. The Budget itself
// is never waited for: with nothing queued or being written, there is
// nothing this connection can give back, and the answer is refused with
// ErrBufferBudget (the connection closes, see queueFull).
func (c *Conn) waitBudget(ctx context.Context, q queueing, size int) error {
	queued := len(c.w.buf) + c.w.inflight
	if queued == 0 || q.noWait || q.reader && c.w.owner == ownerLent {
		if c.w.locked != nil {
			return c.w.locked
		}
		budget := c.cfg.Budget
		return fmt.Errorf("%w: a %d-byte box with %d bytes queued for the peer needs more than the %d the connection holds on its own, and %d of %d are in use",
			ErrBufferBudget, size, queued, budget.own, budget.InUse(), budget.Limit())
	}
	return c.waitRoomLocked(ctx)
}

// waitSpace waits, with wmu held, until the write queue (queued and being
// written) is under limit. The reader waits only while the writer can
// write, so that the writer's deadline (WriteTimeout without progress)
// bounds its wait: with the socket lent for a StartTLS that the reader
// itself must complete, it gets ErrWriteQueueFull at once instead (a
// switch's lock refuses first, as it would after a wait).
func (c *Conn) waitSpace(ctx context.Context, limit int, reader, noWait bool) error {
	for {
		if c.w.closing {
			switch {
			case c.w.err != nil:
				return &LostError{Cause: c.w.err}
			case c.w.cause != nil:
				return &LostError{Cause: c.w.cause}
			}
			return &LostError{Cause: net.ErrClosed}
		}
		queued := len(c.w.buf) + c.w.inflight
		if queued < limit {
			return nil
		}
		if noWait || reader && c.w.owner == ownerLent {
			if c.w.locked != nil {
				return c.w.locked
			}
			return fmt.Errorf("%w: %d bytes queued for the peer, limit %d, and the writer cannot send them now", ErrWriteQueueFull, queued, limit)
		}
		if err := c.waitRoomLocked(ctx); err != nil {
			return err
		}
	}
}

// waitRoomLocked waits, with wmu held (released meanwhile), until the
// writer has made room (a batch written, the queue closing), ctx ends or
// the connection is done.
func (c *Conn) waitRoomLocked(ctx context.Context) error {
	if c.w.space == nil {
		c.w.space = make(chan struct{})
	}
	// Whoever filled the queue may have left the write to the reader.
	c.signalWriter()
	ch := c.w.space
	c.wmu.Unlock()
	var err error
	select {
	case <-ch:
	case <-ctx.Done():
		err = ctx.Err()
	case <-c.done:
	}
	c.wmu.Lock()
	return err
}

// flushNow sends what is queued: through the fast path when it is open,
// else by waking the writer.
func (c *Conn) flushNow() {
	if !c.tryFastWrite() {
		c.signalWriter()
	}
}

// Flush sends what is queued now rather than when the reader next runs
// dry. An inline responder that is about to block (as a protocol switch
// that dials a backend does) calls it, so that answers to the boxes read
// before its own do not wait for it.
func (c *Conn) Flush() { c.flushNow() }

// tryFastWrite is the fast path: it writes the queue with one
// non-blocking system call if the socket is free and nothing needs the
// writer. It reports false if it did not apply; the writer must be woken.
// Bytes the socket does not take go back to the front of the queue. While
// it writes, its bytes count in w.inflight, so the queue's bounds hold
// them; once it returns they count no longer, written or back in buf
// (TestFastPathReleasesTheBound).
func (c *Conn) tryFastWrite() bool {
	if !c.fast.ok() {
		return false
	}
	c.wmu.Lock()
	if c.w.owner != ownerNone || c.w.mark >= 0 || c.w.closing || len(c.w.fdsOut) > 0 || c.w.wconn != c.nc {
		c.wmu.Unlock()
		return false
	}
	out := c.w.buf
	if len(out) == 0 {
		c.wmu.Unlock()
		return true
	}
	c.w.owner = ownerFast
	c.w.buf, c.w.spare = c.w.spare[:0], nil
	c.w.inflight = len(out)
	c.wbytes.Store(0)
	c.wmu.Unlock()

	n, err := c.fast.write(out)
	if n > 0 {
		c.noteSent(n)
	}
	if err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
		// The stream is broken mid-box: nothing later may follow.
		c.wmu.Lock()
		c.w.owner = ownerNone
		c.w.inflight = 0
		c.settleLocked()
		c.wmu.Unlock()
		c.fail(err)
		return true
	}
	// An expired deadline (armed by the writer long ago) writes nothing:
	// the writer re-arms it and sends.
	c.wmu.Lock()
	c.w.owner = ownerNone
	c.w.inflight = 0
	if n > 0 {
		c.releaseSpaceLocked()
	}
	more := n < len(out) || len(c.w.buf) > 0 || c.w.mark >= 0 || c.w.closing
	if n < len(out) {
		rest := append(make([]byte, 0, len(out)-n+len(c.w.buf)), out[n:]...)
		c.w.buf = append(rest, c.w.buf...)
		if c.w.mark >= 0 {
			c.w.mark += len(rest) // a mark set meanwhile counts from the old start
		}
		c.wbytes.Store(int64(len(c.w.buf)))
	} else {
		c.keepSpareLocked(out)
	}
	c.settleLocked()
	c.wmu.Unlock()
	if more {
		c.signalWriter()
	}
	return true
}

// releaseSpaceLocked wakes callers waiting for room.
func (c *Conn) releaseSpaceLocked() {
	if c.w.space != nil {
		close(c.w.space)
		c.w.space = nil
	}
}

// keepSpareLocked keeps a written buffer for reuse unless it grew large.
func (c *Conn) keepSpareLocked(out []byte) {
	if cap(out) <= 1<<20 {
		c.w.spare = out[:0]
	}
}

// batch is what the writer takes from the queue for one write.
type batch struct {
	out     []byte
	fds     []int
	closers []io.Closer
	wc      net.Conn
	lend    chan struct{} // the batch ends at a mark: lend the socket after it
}

func (c *Conn) writeLoop() {
	defer func() {
		close(c.writerDone)
		<-c.readerDone
		c.handlers.Wait()
		c.finish()
	}()
	var b batch
	for {
		<-c.wake
		c.gather()
		ok, exit := c.takeBatch(&b)
		if exit {
			return
		}
		if !ok {
			continue // nothing to do, or the socket is someone else's
		}
		if len(b.out) > 0 {
			if err := c.write(&b); err != nil {
				c.fail(c.writeFailed(err, len(b.out)))
				return
			}
			for _, f := range b.closers {
				f.Close()
			}
		}
		c.endBatch(&b)
		b = batch{}
	}
}

// gather lets the callers woken by the same read queue their boxes before
// the writer takes the queue: one write for a whole wave.
func (c *Conn) gather() {
	runtime.Gosched()
	for range maxYields {
		n := c.wseq.Load()
		runtime.Gosched()
		if c.wseq.Load() == n && c.waking.Load() == 0 || c.wbytes.Load() >= flushEarly {
			return
		}
	}
}

// takeBatch fills b with the writer's next batch; !ok: there is none to
// write now; exit: the writer is done.
func (c *Conn) takeBatch(b *batch) (ok, exit bool) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	switch {
	case c.w.err != nil || c.w.stop:
		return false, true
	case c.w.owner == ownerLent && c.w.closing:
		// Closed while lent (a handshake, a switch answer awaited): the
		// borrower learns it from the socket.
		c.nc.Close()
		return false, true
	case c.w.owner != ownerNone:
		return false, false // its owner wakes us when it is done
	case len(c.w.buf) == 0:
		if c.w.closing {
			c.nc.Close()
			return false, true
		}
		return false, false
	}
	*b = batch{out: c.w.buf, wc: c.w.wconn}
	if c.w.mark >= 0 {
		// Up to the mark now; the rest waits for the socket to come back.
		c.w.buf = append(c.w.spare[:0], b.out[c.w.mark:]...)
		b.out = b.out[:c.w.mark]
		b.lend = c.w.paused
		c.w.mark, c.w.paused = -1, nil
	} else {
		c.w.buf = c.w.spare[:0]
	}
	c.w.spare = nil
	c.wbytes.Store(int64(len(c.w.buf)))
	if len(b.out) > 0 { // descriptors need stream bytes to ride on
		b.fds, b.closers = c.w.fdsOut, c.w.fdsClose
		c.w.fdsOut, c.w.fdsClose = nil, nil
	}
	c.w.owner = ownerWriter
	c.w.inflight = len(b.out)
	return true, false
}

// endBatch gives the socket back, or lends it at a mark.
func (c *Conn) endBatch(b *batch) {
	c.wmu.Lock()
	c.keepSpareLocked(b.out)
	c.w.owner = ownerNone
	c.w.inflight = 0
	c.releaseSpaceLocked()
	c.settleLocked()
	if b.lend != nil && c.w.unlend {
		c.w.unlend = false
	} else if b.lend != nil {
		c.w.owner = ownerLent
		// The new user of the socket must not inherit our deadline.
		b.wc.SetWriteDeadline(time.Time{})
		c.dlSet = time.Time{}
	}
	more := len(c.w.buf) > 0 && c.w.owner == ownerNone || c.w.closing
	c.wmu.Unlock()
	if b.lend != nil {
		close(b.lend)
	}
	if more {
		c.signalWriter()
	}
}

// write sends one batch, in chunks whose deadline measures progress.
func (c *Conn) write(b *batch) error {
	if len(b.fds) > 0 {
		c.armDeadline(b, true)
		if err := c.writeWithFDs(b.out, b.fds); err != nil {
			return err
		}
		c.noteSent(len(b.out))
		return nil
	}
	for out := b.out; len(out) > 0; {
		n := min(len(out), writeChunk)
		c.armDeadline(b, len(b.out) > writeChunk)
		if _, err := b.wc.Write(out[:n]); err != nil {
			return err
		}
		c.noteSent(n)
		out = out[n:]
	}
	return nil
}

// noteSent counts n more bytes of the write stream taken by the socket
// (Conn.wsent, the heartbeat's sign of the peer's progress), and notes
// when the probe awaiting its write has been written (Conn.probeMark).
// The writer or the fast path calls it, as the socket's owner.
func (c *Conn) noteSent(n int) {
	sent := c.wsent.Add(int64(n))
	if end := c.probeMark.Load(); end > 0 && sent >= end {
		c.probeMark.CompareAndSwap(end, -time.Now().UnixNano())
	}
}

// writeFailed names the error of a write that made no progress for
// WriteTimeout: the peer reads nothing.
func (c *Conn) writeFailed(err error, batch int) error {
	if errors.Is(err, os.ErrDeadlineExceeded) && c.finalBy.Load() == 0 {
		return fmt.Errorf("%w (%d bytes unsent after %v): %w", ErrWriteTimeout, batch, c.cfg.WriteTimeout, err)
	}
	return err
}

// armDeadline sets the write deadline for the writer's next Write. To
// spare a timer update per write, a deadline armed less than half a
// timeout ago is kept unless force is set: a Write always has between
// half and all of WriteTimeout. Once Close has set the final flush's
// deadline, every chunk gets that one, never a later one, so that a peer
// reading a trickle cannot hold Close. Only the writer calls it, as owner.
func (c *Conn) armDeadline(b *batch, force bool) {
	if c.finalBy.Load() != 0 {
		c.armFinal(b.wc)
		return
	}
	if c.cfg.WriteTimeout < 0 {
		return
	}
	now := time.Now()
	if !force && !c.dlSet.IsZero() && now.Sub(c.dlSet) < c.cfg.WriteTimeout/2 {
		return
	}
	b.wc.SetWriteDeadline(now.Add(c.cfg.WriteTimeout))
	c.dlSet = now
	// Close may have set the final deadline since we looked: it stores
	// finalBy before it sets its deadline, so either it overrides ours or
	// we see it here.
	if c.finalBy.Load() != 0 {
		c.armFinal(b.wc)
	}
}

func (c *Conn) armFinal(wc net.Conn) {
	wc.SetWriteDeadline(time.Unix(0, c.finalBy.Load()))
	c.dlSet = time.Time{}
}

// resumeWriter gives a lent socket back to the writer; with stop the
// writer exits instead, leaving the connection to whoever took it over.
// Stopping also closes the queue in the same critical section, so that no
// caller (the fast path included) finds the socket free in between.
func (c *Conn) resumeWriter(stop bool, wconn net.Conn) {
	c.wmu.Lock()
	c.w.stop = stop
	switch {
	case c.w.owner == ownerLent:
		c.w.owner = ownerNone
	case c.w.mark >= 0:
		// The writer has not taken the marked batch yet: drop the mark, so
		// that a later StartTLS or switch can set its own and the bytes
		// queued behind it wait for it.
		close(c.w.paused)
		c.w.mark, c.w.paused = -1, nil
	default:
		c.w.unlend = true // the writer is writing the marked batch: no lend
	}
	c.w.locked, c.w.special = nil, nil
	if stop {
		c.w.closing = true
		c.w.cause = ErrSwitched
		c.releaseSpaceLocked()
		// A deadline Close armed is not the new owner's; one the new owner
		// set (SwitchEarly hands the write side over early) stays.
		if c.finalBy.Load() != 0 {
			c.nc.SetWriteDeadline(time.Time{})
		}
	}
	if wconn != nil {
		c.w.wconn = wconn
	}
	c.wmu.Unlock()
	// Wake the writer: to send what queued up behind the mark, or to exit.
	c.signalWriter()
}

// writeConn is the connection the writer writes to (nc, or TLS over it).
func (c *Conn) writeConn() net.Conn {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	return c.w.wconn
}
