package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
)

// logQueue formats and writes serve's log lines on a goroutine of its own.
// The access log writes a line as each connection ends, on that
// connection's goroutine, whose stack is still small: formatting there
// cost the stack's growth too (measured: 5.4 µs a line on a new goroutine,
// 1.6 µs on a grown one). Queued, a line costs the caller a copy of its
// record (or, through postLog, a closure), and under load the lines of many
// connections share one write.
//
// Nothing is dropped: Handle waits while maxQueuedLog records are queued,
// Close writes out everything queued before it returns (lines queued while
// it drains included), and a line logged once the goroutine has stopped is
// written at once, after them.
//
// As with any asynchronous logger, a line's values are formatted later:
// they must not change after the call (ours are strings, numbers, errors
// and addresses). Code that runs on the goroutine (postLog's closures,
// LogValuers) must not log through a queued logger: with the queue full it
// would wait for itself. A closure logs its line through the handler it is
// given; one that panics loses its line, not the process.
type logQueue struct {
	w    io.Writer
	wake chan struct{} // buffered 1: a Handle found the queue empty
	done chan struct{} // the goroutine has exited

	// out holds the formatted lines of one batch: the inner handlers'
	// writer while the goroutine runs (only it writes to out); once it
	// has stopped (stopped), the handlers write to w directly.
	out     bytes.Buffer
	stopped atomic.Bool

	mu     sync.Mutex
	room   sync.Cond // signalled when the goroutine has taken the queue
	queued []queuedRecord
	closed bool        // Close was called; the goroutine drains, then stops
	later  *time.Timer // kicks the goroutine accessLogDelay after a postLog line found the queue empty
}

type queuedRecord struct {
	h  slog.Handler // an inner handler, writing to out
	r  slog.Record
	fn func(slog.Handler) // instead of r, postLog's function, given h
}

const maxQueuedLog = 4096

// newQueuedLogger returns a logger whose lines a logQueue writes to w, in
// format ("json" or text); Close the queue when done.
func newQueuedLogger(w io.Writer, format string) (*slog.Logger, *logQueue) {
	q := &logQueue{w: w, wake: make(chan struct{}, 1), done: make(chan struct{})}
	q.room.L = &q.mu
	q.later = time.AfterFunc(time.Hour, q.kick)
	q.later.Stop()
	var h slog.Handler = slog.NewTextHandler(outWriter{q}, nil)
	if format == "json" {
		h = slog.NewJSONHandler(outWriter{q}, nil)
	}
	go q.run()
	return slog.New(queueHandler{q, h}), q
}

// outWriter is the inner handlers' writer: only the goroutine, or a
// direct write under q.direct, calls them.
type outWriter struct{ q *logQueue }

func (o outWriter) Write(p []byte) (int, error) {
	if o.q.stopped.Load() {
		return o.q.w.Write(p)
	}
	return o.q.out.Write(p)
}

type queueHandler struct {
	q *logQueue
	h slog.Handler
}

func (qh queueHandler) Enabled(ctx context.Context, l slog.Level) bool { return qh.h.Enabled(ctx, l) }
func (qh queueHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return queueHandler{qh.q, qh.h.WithAttrs(as)}
}
func (qh queueHandler) WithGroup(name string) slog.Handler {
	return queueHandler{qh.q, qh.h.WithGroup(name)}
}

func (qh queueHandler) Handle(_ context.Context, r slog.Record) error {
	qh.q.put(queuedRecord{h: qh.h, r: r})
	return nil
}

// postLog runs fn with l's handler: if l's lines go through a logQueue, on
// the queue's goroutine, in order with the lines before, with a handler
// that writes at once, so that the caller neither formats nor grows its
// stack. fn makes a Record (with its time) and hands it to the handler.
//
// It is for the access log: its lines may wait up to accessLogDelay for
// company, so that a busy server writes them many to a syscall and wakes
// the queue's goroutine once for them all (measured: a wake and a write
// per line cost a connection's dial-call-close ~8% of its rate). Other
// lines go out at once, and take any waiting with them.
func postLog(l *slog.Logger, fn func(slog.Handler)) {
	if qh, ok := l.Handler().(queueHandler); ok {
		qh.q.put(queuedRecord{h: qh.h, fn: fn})
		return
	}
	fn(l.Handler())
}

// accessLogDelay bounds how long a postLog line waits to be written.
const accessLogDelay = 50 * time.Millisecond

// kick wakes the queue's goroutine.
func (q *logQueue) kick() {
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

func (q *logQueue) put(e queuedRecord) {
	q.mu.Lock()
	for len(q.queued) >= maxQueuedLog && !q.closed {
		q.room.Wait()
	}
	if q.stopped.Load() { // set under mu, after the last of the queue was written
		q.mu.Unlock()
		q.write([]queuedRecord{e})
		return
	}
	first := len(q.queued) == 0
	if e.fn == nil {
		e.r = e.r.Clone()
	} else if first {
		q.later.Reset(accessLogDelay)
	}
	q.queued = append(q.queued, e)
	q.mu.Unlock()
	if e.fn == nil {
		q.kick()
	}
}

// write formats rs into out and writes them to w in one Write; as slog
// does, a failed log write is not retried.
func (q *logQueue) write(rs []queuedRecord) {
	for i := range rs {
		rs[i].format()
		rs[i] = queuedRecord{}
	}
	if q.out.Len() > 0 {
		q.w.Write(q.out.Bytes())
		q.out.Reset()
	}
}

func (q *logQueue) run() {
	defer close(q.done)
	defer q.later.Stop()
	var batch []queuedRecord
	for range q.wake {
		// Let the goroutines that are ready run first: more lines then
		// share the write (a preference, not a wait).
		runtime.Gosched()
		for {
			q.mu.Lock()
			batch, q.queued = q.queued, batch[:0]
			closed := q.closed
			q.room.Broadcast()
			q.mu.Unlock()
			if len(batch) == 0 {
				if closed {
					q.mu.Lock()
					if len(q.queued) == 0 {
						q.stopped.Store(true)
						q.mu.Unlock()
						return
					}
					q.mu.Unlock()
					continue
				}
				break
			}
			q.write(batch)
		}
	}
}

// format hands e's line to its handler; a closure that panics leaves a
// line saying so instead.
func (e *queuedRecord) format() {
	defer func() {
		if v := recover(); v != nil {
			r := slog.NewRecord(time.Now(), slog.LevelError, "log line lost: its function panicked", 0)
			r.AddAttrs(slog.String("panic", fmt.Sprint(v)))
			e.h.Handle(context.Background(), r)
		}
	}()
	if e.fn != nil {
		e.fn(e.h)
		return
	}
	e.h.Handle(context.Background(), e.r)
}

// Close writes out what is queued and stops the goroutine.
func (q *logQueue) Close() error {
	q.mu.Lock()
	q.closed = true
	q.room.Broadcast()
	q.mu.Unlock()
	q.kick()
	<-q.done
	return nil
}
