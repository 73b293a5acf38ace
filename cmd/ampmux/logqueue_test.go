package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
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
		const total = maxQueuedLog + 100
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
