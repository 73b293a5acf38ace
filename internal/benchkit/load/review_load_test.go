package load

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/ampmux/ampmux/amp"
	"github.com/ampmux/ampmux/amp/box"
	"github.com/ampmux/ampmux/amp/conn"
	"github.com/ampmux/ampmux/internal/benchkit"
)

// Review finding: Ctrl-C (ctx cancel) while calls are stuck on a server
// that never answers waited for the watchdog (Warmup+Duration+10 s); the
// cancel now calls Abort.
func TestReviewCancelWaitsForWatchdog(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		gate := make(chan struct{})
		started := make(chan struct{}, 2)
		var abortOnce sync.Once
		ctx, cancel := context.WithCancel(context.Background())
		type out struct {
			r   Result
			err error
			at  time.Duration
		}
		got := make(chan out, 1)
		t0 := time.Now()
		go func() {
			r, err := Run(ctx, Config{
				Callers: 2, Warmup: time.Second, Duration: time.Minute,
				Call: func(int) error {
					started <- struct{}{}
					<-gate
					return errors.New("connection lost")
				},
				Abort: func() { abortOnce.Do(func() { close(gate) }) },
			})
			got <- out{r, err, time.Since(t0)}
		}()
		<-started
		<-started
		cancel() // during the warm-up
		o := <-got
		t.Logf("cancel at 0s: Run returned after %v: err %v, errors=%d calls=%d", o.at, o.err, o.r.Errors, o.r.Calls)
		if o.at > time.Second {
			t.Errorf("Run returned %v after the cancel (the watchdog's time), not at once", o.at)
		}
		if o.r.Errors != 0 {
			t.Errorf("interrupted run with no failed call reports errors=%d", o.r.Errors)
		}
	})
}

// Review finding: an interrupted run counted the interruption as an error
// in Result.Errors (and so in the RESULT line and the summary).
func TestReviewInterruptCountsAsError(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		r, err := Run(ctx, Config{
			Callers: 1, Duration: time.Hour,
			Call:     func(int) error { time.Sleep(time.Millisecond); return nil },
			Progress: func(time.Duration, int64, int64) { cancel() },
		})
		t.Logf("err %v; %+v", err, r)
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("err %v", err)
		}
		if r.Seconds != 1 || r.Calls < 998 || r.Calls > 1001 {
			t.Errorf("window: %d calls in %vs", r.Calls, r.Seconds)
		}
		if r.Errors != 0 {
			t.Errorf("errors=%d though every call succeeded (the cancel is counted)", r.Errors)
		}
	})
}

// Figures of a completed run on the bubble's clock: one caller, 1 ms per
// call, every other call a tolerated error; errors in the warm-up and
// after the stop are not counted.
func TestReviewWindowFigures(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		declared := errors.New("declared")
		var n, tolerateCalls atomic.Int64
		var stopAt atomic.Int64
		r, err := Run(context.Background(), Config{
			Callers: 1, Warmup: 100 * time.Millisecond, Duration: time.Second,
			Call: func(int) error {
				time.Sleep(time.Millisecond)
				if n.Add(1)%2 == 0 {
					return declared
				}
				return nil
			},
			Tolerate: func(err error) bool { tolerateCalls.Add(1); return errors.Is(err, declared) },
		})
		stopAt.Store(n.Load())
		t.Logf("%+v err %v; %d calls made, Tolerate called %d times", r, err, n.Load(), tolerateCalls.Load())
		if err != nil {
			t.Fatal(err)
		}
		if r.Seconds != 1 || r.Calls < 499 || r.Calls > 501 || r.Errors < 499 || r.Errors > 501 {
			t.Errorf("window figures %+v", r)
		}
		if r.P50us != 1000 || r.MaxUs != 1000 {
			t.Errorf("latency %+v, want 1 ms", r)
		}
	})
}

// Every call tolerated-failing: ErrNoCalls, errors counted, no hang, and
// no percentiles.
func TestReviewAllTolerated(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		declared := errors.New("declared")
		r, err := Run(context.Background(), Config{
			Callers: 3, Warmup: 50 * time.Millisecond, Duration: 200 * time.Millisecond,
			Start: func(i int, done func(error)) error {
				time.AfterFunc(time.Millisecond, func() { done(declared) })
				return nil
			},
			Tolerate: func(err error) bool { return errors.Is(err, declared) },
		})
		t.Logf("%+v err %v", r, err)
		if !errors.Is(err, ErrNoCalls) || r.Calls != 0 || r.Errors < 590 || r.Errors > 603 || r.P50us != 0 || r.CallsPerSec != 0 {
			t.Errorf("%+v, %v", r, err)
		}
	})
}

// Start failing on the very first call, for every slot or for a later
// one: the run ends with that error, no hang, one error counted.
func TestReviewStartFailsFirst(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		boom := errors.New("boom")
		r, err := Run(context.Background(), Config{
			Callers: 4, Warmup: time.Second, Duration: time.Second,
			Start: func(int, func(error)) error { return boom },
		})
		if !errors.Is(err, boom) || r.Errors != 1 {
			t.Errorf("all fail: %+v, %v", r, err)
		}
		var pending []func(error)
		var mu sync.Mutex
		r, err = Run(context.Background(), Config{
			Callers: 4, Warmup: time.Second, Duration: time.Second,
			Start: func(i int, done func(error)) error {
				if i == 2 {
					return boom
				}
				mu.Lock()
				pending = append(pending, done)
				mu.Unlock()
				time.AfterFunc(time.Millisecond, func() { done(nil) })
				return nil
			},
		})
		if !errors.Is(err, boom) || r.Errors != 1 {
			t.Errorf("slot 2 fails: %+v, %v", r, err)
		}
	})
}

// done called synchronously inside Start with an error (as Conn.Go does
// when its own flush fails): the slot ends once, no double Done.
func TestReviewDoneInsideStartWithError(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		lost := errors.New("lost")
		var n atomic.Int64
		r, err := Run(context.Background(), Config{
			Callers: 4, Warmup: 10 * time.Millisecond, Duration: time.Second,
			Start: func(i int, done func(error)) error {
				if n.Add(1) > 40 {
					done(lost)
					return nil
				}
				time.AfterFunc(time.Millisecond, func() { done(nil) })
				return nil
			},
		})
		if !errors.Is(err, lost) {
			t.Errorf("%+v, %v", r, err)
		}
		// A tolerated error delivered inside Start: the next call is sent
		// from within Start (recursion); bounded here.
		declared := errors.New("declared")
		n.Store(0)
		r, err = Run(context.Background(), Config{
			Callers: 1, Duration: 100 * time.Millisecond,
			Start: func(i int, done func(error)) error {
				if n.Add(1)%1000 != 0 {
					done(declared)
					return nil
				}
				time.AfterFunc(time.Millisecond, func() { done(nil) })
				return nil
			},
			Tolerate: func(err error) bool { return errors.Is(err, declared) },
		})
		t.Logf("sync tolerated: %+v, %v", r, err)
	})
}

// Review finding: many callers failing at once (the server died) counted
// the fatal error more than once (each checked the phase, then failed);
// it counts once.
func TestReviewFatalErrorCountedOnce(t *testing.T) {
	worst := int64(0)
	for range 200 {
		gate := make(chan struct{})
		var started sync.WaitGroup
		const callers = 8
		started.Add(callers)
		ctx, cancel := context.WithCancel(context.Background())
		got := make(chan Result, 1)
		go func() {
			r, _ := Run(ctx, Config{
				Callers: callers, Duration: time.Hour,
				Call: func(int) error {
					started.Done()
					<-gate
					return errors.New("connection lost")
				},
			})
			got <- r
		}()
		started.Wait()
		close(gate)
		r := <-got
		cancel()
		worst = max(worst, r.Errors)
	}
	t.Logf("largest errors figure for one lost connection, 8 callers: %d", worst)
	if worst > 1 {
		t.Errorf("a single connection loss was counted %d times in Errors", worst)
	}
}

// Review finding: Progress during a warm-up where every call is a
// tolerated error counted the calls of the warm-up but not its errors.
func TestReviewProgressWarmupErrors(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		declared := errors.New("declared")
		var seenErrs int64 = -1
		var seenCalls int64 = -1
		_, err := Run(context.Background(), Config{
			Callers: 1, Warmup: 1500 * time.Millisecond, Duration: 100 * time.Millisecond,
			Call:     func(int) error { time.Sleep(time.Millisecond); return declared },
			Tolerate: func(err error) bool { return true },
			Progress: func(_ time.Duration, calls, errs int64) { seenCalls, seenErrs = calls, errs },
		})
		t.Logf("progress at 1s of warm-up where every call failed: calls=%d errors=%d (run err %v)", seenCalls, seenErrs, err)
		if seenErrs == 0 {
			t.Errorf("progress reported 0 errors after ~1000 failed warm-up calls")
		}
	})
}

// rvSumServer serves Sum on loopback; kill resets its connections.
func rvSumServer(t *testing.T, after int64, killed chan<- struct{}) (addr string, kill func()) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var n atomic.Int64
	var once sync.Once
	m := amp.NewMux()
	m.HandleBoxInline("Sum", func(ctx context.Context, req, resp *box.Box) error {
		if n.Add(1) == after {
			once.Do(func() { close(killed) })
		}
		return benchkit.RawSum(ctx, req, resp)
	})
	srv := &conn.Server{Config: conn.Config{Handler: m, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}}
	var mu sync.Mutex
	var ncs []net.Conn
	go func() {
		for {
			nc, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			ncs = append(ncs, nc)
			mu.Unlock()
			srv.ServeConn(nc)
		}
	}()
	kill = func() {
		mu.Lock()
		defer mu.Unlock()
		for _, nc := range ncs {
			nc.(*net.TCPConn).SetLinger(0)
			nc.Close()
		}
	}
	t.Cleanup(func() { l.Close(); kill(); srv.Close() })
	return l.Addr().String(), kill
}

// Review finding (a data race under -race): the async AMP load on a
// connection reset (server side) or closed (Conn.Close) mid-run: Go's
// callbacks then run on another goroutine than the reader (failPending)
// while the reader may still be in the slot's previous callback, which
// wrote slotCtx after its outcome.
func TestReviewAsyncLostMidRun(t *testing.T) {
	for _, how := range []string{"reset", "close"} {
		t.Run(how, func(t *testing.T) { rvAsyncLost(t, how) })
	}
}

func rvAsyncLost(t *testing.T, how string) {
	{
		for iter := range 300 {
			killed := make(chan struct{})
			addr, kill := rvSumServer(t, 500, killed)
			c, err := conn.Dial(context.Background(), "tcp", addr, &conn.Config{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
			if err != nil {
				t.Fatal(err)
			}
			cfg, err := SumLoad([]*conn.Conn{c}, "async").Config(32)
			if err != nil {
				t.Fatal(err)
			}
			cfg.Duration = time.Minute
			go func() {
				<-killed
				if how == "reset" {
					kill()
				} else {
					c.Close()
				}
			}()
			r, err := Run(context.Background(), cfg)
			if err == nil {
				t.Fatalf("%s %d: no error: %+v", how, iter, r)
			}
			if r.Errors != 1 {
				t.Logf("%s %d: errors=%d (%v)", how, iter, r.Errors, err)
			}
			c.Close()
		}
	}
}
