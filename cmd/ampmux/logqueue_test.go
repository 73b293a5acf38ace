package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"runtime"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

// gatedWriter collects what is written; each Write first waits for gate
// to be closed.
type gatedWriter struct {
	gate chan struct{}
	mu   sync.Mutex
	buf  bytes.Buffer
}

func (g *gatedWriter) Write(p []byte) (int, error) {
	<-g.gate
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.buf.Write(p)
}

func openGate() *gatedWriter {
	g := &gatedWriter{gate: make(chan struct{})}
	close(g.gate)
	return g
}

// TestLogQueueLosesNothing: lines and postLog's records from several
// goroutines all come out once, each goroutine's in its order, and a line
// logged after Close comes out last.
func TestLogQueueLosesNothing(t *testing.T) {
	w := openGate()
	log, q := newQueuedLogger(w, "text")
	const writers, each = 8, 2000
	var wg sync.WaitGroup
	for g := range writers {
		wg.Go(func() {
			for i := range each {
				if i%2 == 0 {
					log.Info("line", "g", g, "i", i)
					continue
				}
				postLog(log, func(h slog.Handler) {
					r := slog.NewRecord(slog.Record{}.Time, slog.LevelInfo, "posted", 0)
					r.AddAttrs(slog.Int("g", g), slog.Int("i", i))
					h.Handle(context.Background(), r)
				})
			}
		})
	}
	wg.Wait()
	q.Close()
	log.Info("after close")

	lines := strings.Split(strings.TrimSuffix(w.buf.String(), "\n"), "\n")
	if len(lines) != writers*each+1 {
		t.Fatalf("%d lines, want %d", len(lines), writers*each+1)
	}
	if !strings.Contains(lines[len(lines)-1], "after close") {
		t.Errorf("last line %q, want the one logged after Close", lines[len(lines)-1])
	}
	next := make([]int, writers)
	for _, l := range lines[:len(lines)-1] {
		var g, i int
		k := strings.Index(l, " g=")
		if k < 0 {
			t.Fatalf("line without g: %q", l)
		}
		if _, err := fmt.Sscanf(l[k:], " g=%d i=%d", &g, &i); err != nil {
			t.Fatalf("%q: %v", l, err)
		}
		if i != next[g] {
			t.Fatalf("goroutine %d: line %d after %d", g, i, next[g]-1)
		}
		next[g]++
	}
}

// TestLogQueueWaitsWhenFull: while the output is stuck, logging stops at
// maxQueuedLog queued records (it waits rather than drop or grow), and
// everything comes out once the output moves.
func TestLogQueueWaitsWhenFull(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		w := &gatedWriter{gate: make(chan struct{})}
		log, q := newQueuedLogger(w, "text")
		// The goroutine may take up to maxQueuedLog in its first batch before
		// its Write sticks; then maxQueuedLog more may queue.
		const total = 2*maxQueuedLog + 100
		done := make(chan struct{})
		go func() {
			defer close(done)
			for i := range total {
				log.Info("line", "i", i)
			}
		}()
		synctest.Wait() // the writer is stuck in Write, the logger in Handle
		select {
		case <-done:
			t.Fatal("all lines logged with the output stuck: the queue is unbounded")
		default:
		}
		q.mu.Lock()
		n := len(q.queued)
		q.mu.Unlock()
		if n != maxQueuedLog {
			t.Errorf("%d records queued while stuck, want %d", n, maxQueuedLog)
		}
		close(w.gate)
		<-done
		q.Close()
		if got := strings.Count(w.buf.String(), "\n"); got != total {
			t.Errorf("%d lines out, want %d", got, total)
		}
	})
}

// TestLogQueueFormats: --log-format json gives JSON lines, text key=value,
// and With's attributes stay on the lines.
func TestLogQueueFormats(t *testing.T) {
	for _, tc := range []struct{ format, want string }{
		{"text", `level=INFO msg=hello route=ssh n=3`},
		{"json", `"level":"INFO","msg":"hello","route":"ssh","n":3}`},
	} {
		t.Run(tc.format, func(t *testing.T) {
			w := openGate()
			log, q := newQueuedLogger(w, tc.format)
			log.With("route", "ssh").Info("hello", "n", 3)
			q.Close()
			out := strings.TrimSpace(w.buf.String())
			if !strings.Contains(out, tc.want) {
				t.Errorf("got %s, want it to contain %s", out, tc.want)
			}
			if tc.format == "json" && !json.Valid([]byte(out)) {
				t.Errorf("not JSON: %s", out)
			}
		})
	}
}

// closedYet waits, without sleeping, until Close has marked q closed.
func closedYet(q *logQueue) {
	for {
		q.mu.Lock()
		c := q.closed
		q.mu.Unlock()
		if c {
			return
		}
		runtime.Gosched()
	}
}

// TestLogQueueNestedWhileClosing (review): code on the queue's goroutine
// (a postLog closure, a LogValuer) that logs while Close drains used to
// wait for the goroutine to stop, on that goroutine: Close never
// returned. Its line now joins the queue and Close writes it out.
func TestLogQueueNestedWhileClosing(t *testing.T) {
	for _, via := range []string{"postLog", "LogValuer"} {
		t.Run(via, func(t *testing.T) {
			w := openGate()
			log, q := newQueuedLogger(w, "text")
			entered, gate := make(chan struct{}), make(chan struct{})
			nested := func() {
				close(entered)
				<-gate
				log.Info("nested")
			}
			if via == "postLog" {
				postLog(log, func(h slog.Handler) {
					nested()
					h.Handle(context.Background(), slog.NewRecord(time.Now(), slog.LevelInfo, "outer", 0))
				})
			} else {
				log.Info("outer", "v", valuer(func() slog.Value { nested(); return slog.StringValue("x") }))
			}
			<-entered
			closed := make(chan struct{})
			go func() { q.Close(); close(closed) }()
			closedYet(q)
			close(gate)
			<-closed // hung before the fix
			if out := w.buf.String(); !strings.Contains(out, "msg=nested") || !strings.Contains(out, "msg=outer") {
				t.Errorf("lines lost:\n%s", out)
			}
		})
	}
}

type valuer func() slog.Value

func (f valuer) LogValue() slog.Value { return f() }

// TestLogQueueAfterClose (review): once stopped, a postLog closure runs in
// the caller; one that logs used to re-lock a mutex it held.
func TestLogQueueAfterClose(t *testing.T) {
	w := openGate()
	log, q := newQueuedLogger(w, "text")
	log.Info("before")
	q.Close()
	postLog(log, func(h slog.Handler) {
		log.Info("nested")
		h.Handle(context.Background(), slog.NewRecord(time.Now(), slog.LevelInfo, "outer", 0))
	})
	lines := strings.Split(strings.TrimSpace(w.buf.String()), "\n")
	if len(lines) != 3 || !strings.Contains(lines[0], "before") || !strings.Contains(lines[1], "nested") || !strings.Contains(lines[2], "outer") {
		t.Errorf("lines after Close:\n%s", w.buf.String())
	}
}

// TestLogQueuePanickingClosure (review): a postLog closure that panics
// ran on the queue's goroutine, out of its caller's recover: the process
// died with every queued line. Now that line is lost, said so, and the
// others are written.
func TestLogQueuePanickingClosure(t *testing.T) {
	w := openGate()
	log, q := newQueuedLogger(w, "text")
	log.Info("first")
	postLog(log, func(slog.Handler) { panic("boom") })
	log.Info("last")
	q.Close()
	out := w.buf.String()
	for _, want := range []string{"msg=first", `msg="log line lost: its function panicked" panic=boom`, "msg=last"} {
		if !strings.Contains(out, want) {
			t.Errorf("no %q in:\n%s", want, out)
		}
	}
}

// TestLogQueueAccessLinesWait: a postLog line waits up to accessLogDelay
// for company (on the bubble's clock), then is written without Close; a
// plain line goes out at once and takes those waiting with it.
func TestLogQueueAccessLinesWait(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		w := openGate()
		log, q := newQueuedLogger(w, "text")
		defer q.Close()
		post := func(msg string) {
			postLog(log, func(h slog.Handler) {
				h.Handle(context.Background(), slog.NewRecord(time.Now(), slog.LevelInfo, msg, 0))
			})
		}
		out := func() string { w.mu.Lock(); defer w.mu.Unlock(); return w.buf.String() }
		post("a1")
		time.Sleep(accessLogDelay - time.Millisecond)
		synctest.Wait()
		if strings.Contains(out(), "a1") {
			t.Errorf("access line written before accessLogDelay:\n%s", out())
		}
		time.Sleep(time.Millisecond)
		synctest.Wait()
		if !strings.Contains(out(), "msg=a1") {
			t.Errorf("access line not written after accessLogDelay:\n%s", out())
		}
		post("a2")
		log.Warn("plain")
		synctest.Wait()
		if o := out(); !strings.Contains(o, "msg=a2") || !strings.Contains(o, "msg=plain") || strings.Index(o, "a2") > strings.Index(o, "plain") {
			t.Errorf("a plain line did not take the waiting one with it, in order:\n%s", o)
		}
	})
}
