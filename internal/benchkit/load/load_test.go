package load

import (
	"context"
	"errors"
	"io"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"
)

func TestResultLine(t *testing.T) {
	in := Result{Kind: "grpc", Inflight: 16, Conns: 2, Calls: 1000, Seconds: 0.5, CallsPerSec: 2000, P50us: 12.5, P90us: 40, P99us: 250, MaxUs: 900, AllocsPerCall: 3, GCs: 1}
	floor := Result{Kind: "floor", Mode: "perwrite", Inflight: 1, Conns: 1, Calls: 1, Seconds: 1, CallsPerSec: 1}
	if out, err := ParseResult(floor.String()); err != nil || out != floor || !strings.Contains(floor.String(), " mode=perwrite ") {
		t.Fatalf("floor line %q parsed %+v, %v", floor.String(), out, err)
	}
	out, err := ParseResult(in.String())
	if err != nil {
		t.Fatal(err)
	}
	if out != in {
		t.Fatalf("round trip: %+v, want %+v", out, in)
	}
	// callbench's and client.py's lines parse too: no conns (1), no allocs.
	for _, line := range []string{
		"RESULT kind=amp api=raw inflight=16 calls=123 seconds=1.000000 calls_per_sec=123 p50_us=1.0 p99_us=2.0 errors=0 allocs_per_call=0.000 gcs=0",
		"RESULT kind=twisted inflight=1 conns=1 calls=5 seconds=1.000000 calls_per_sec=5 p50_us=1.0 p99_us=2.0 errors=0",
	} {
		r, err := ParseResult(line)
		if err != nil || r.Conns != 1 || r.Calls <= 0 {
			t.Errorf("ParseResult(%q) = %+v, %v", line, r, err)
		}
	}
	for _, bad := range []string{"", "RESULTS kind=x", strings.Replace(in.String(), " calls=1000", "", 1), in.String() + " junk"} {
		if _, err := ParseResult(bad); err == nil {
			t.Errorf("ParseResult(%q) accepted it", bad)
		}
	}
}

func TestRun(t *testing.T) {
	var calls atomic.Int64
	r, err := Run(context.Background(), Config{
		Callers: 8, Warmup: 20 * time.Millisecond, Duration: 100 * time.Millisecond,
		Call: func(i int) error {
			calls.Add(1)
			time.Sleep(50 * time.Microsecond)
			return nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	if r.Calls <= 0 || r.Calls > calls.Load() || r.CallsPerSec <= 0 || r.P50us <= 0 || r.P99us < r.P50us || r.Inflight != 8 {
		t.Fatalf("implausible %+v", r)
	}
}

func TestRunStart(t *testing.T) {
	var calls atomic.Int64
	r, err := Run(context.Background(), Config{
		Callers: 8, Warmup: 20 * time.Millisecond, Duration: 100 * time.Millisecond,
		Start: func(i int, done func(error)) error {
			calls.Add(1)
			time.AfterFunc(50*time.Microsecond, func() { done(nil) })
			return nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	if r.Calls <= 0 || r.Calls > calls.Load() || r.CallsPerSec <= 0 || r.P50us <= 0 || r.P99us < r.P50us || r.Inflight != 8 {
		t.Fatalf("implausible %+v", r)
	}
	boom := errors.New("boom")
	var n atomic.Int64
	_, err = Run(context.Background(), Config{
		Callers: 4, Warmup: 10 * time.Millisecond, Duration: time.Second,
		Start: func(i int, done func(error)) error {
			if n.Add(1) > 20 {
				time.AfterFunc(0, func() { done(boom) })
				return nil
			}
			time.AfterFunc(0, func() { done(nil) })
			return nil
		},
	})
	if !errors.Is(err, boom) {
		t.Fatalf("err %v, want boom", err)
	}
}

func TestRunFails(t *testing.T) {
	boom := errors.New("boom")
	var n atomic.Int64
	_, err := Run(context.Background(), Config{
		Callers: 4, Warmup: 10 * time.Millisecond, Duration: time.Second,
		Call: func(int) error {
			if n.Add(1) > 20 {
				return boom
			}
			return nil
		},
	})
	if !errors.Is(err, boom) {
		t.Fatalf("err %v, want boom", err)
	}
}

func TestPercentiles(t *testing.T) {
	s := NewSamples(100)
	for i := range 100 {
		s.Add(int64(100-i) * 1000)
	}
	var r Result
	r.Percentiles(s)
	if r.P50us != 51 || r.P90us != 91 || r.P99us != 100 || r.MaxUs != 100 {
		t.Fatalf("p50 %v p90 %v p99 %v max %v", r.P50us, r.P90us, r.P99us, r.MaxUs)
	}
}

// TestRunTolerates: errors Tolerate accepts are counted and called past;
// the first other one ends the run with it (on the bubble's clock).
func TestRunTolerates(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		declared := errors.New("declared")
		var n atomic.Int64
		r, err := Run(context.Background(), Config{
			Callers: 4, Warmup: 100 * time.Millisecond, Duration: time.Second,
			Call: func(int) error {
				time.Sleep(time.Millisecond)
				if n.Add(1)%2 == 0 {
					return declared
				}
				return nil
			},
			Tolerate: func(err error) bool { return errors.Is(err, declared) },
		})
		if err != nil {
			t.Fatal(err)
		}
		if r.Errors == 0 || r.Calls == 0 || r.Errors < r.Calls-4 || r.Errors > r.Calls+4 {
			t.Fatalf("%d calls and %d errors, want about as many of each", r.Calls, r.Errors)
		}
		_, err = Run(context.Background(), Config{
			Callers: 2, Duration: time.Second,
			Call:     func(int) error { time.Sleep(time.Millisecond); return io.ErrUnexpectedEOF },
			Tolerate: func(err error) bool { return errors.Is(err, declared) },
		})
		if !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Fatalf("err %v, want the untolerated error", err)
		}
	})
}

// TestRunProgress: Progress comes once a second with growing counts, and
// a cancelled run still reports its window so far.
func TestRunProgress(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var seen []time.Duration
		var last int64
		ctx, cancel := context.WithCancel(context.Background())
		r, err := Run(ctx, Config{
			Callers: 2, Duration: time.Hour,
			Call: func(int) error { time.Sleep(time.Millisecond); return nil },
			Progress: func(el time.Duration, calls, _ int64) {
				if calls <= last {
					t.Errorf("progress at %v: %d calls, not more than %d", el, calls, last)
				}
				last = calls
				seen = append(seen, el)
				if len(seen) == 3 {
					cancel()
				}
			},
		})
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("err %v, want context.Canceled", err)
		}
		if want := []time.Duration{time.Second, 2 * time.Second, 3 * time.Second}; !slices.Equal(seen, want) {
			t.Errorf("progress at %v, want %v", seen, want)
		}
		if r.Calls == 0 || r.Seconds != 3 {
			t.Errorf("interrupted run reports %d calls in %vs, want its 3 s window", r.Calls, r.Seconds)
		}
	})
}

// The loop itself must allocate nothing per call: every client's
// allocs_per_call in BENCHMARKS.md includes it (an escaping error once
// added one to each).
func TestRunAllocatesNothingPerCall(t *testing.T) {
	cases := []struct {
		name string
		cfg  func() (Config, func())
	}{
		{"call", func() (Config, func()) {
			return Config{Callers: 2, Call: func(int) error { return nil }}, func() {}
		}},
		{"start", func() (Config, func()) {
			// One goroutine answers every slot, as a connection's reader.
			queue := make(chan func(error), 4)
			quit := make(chan struct{})
			exited := make(chan struct{})
			go func() {
				defer close(exited)
				for {
					select {
					case done := <-queue:
						done(nil)
					case <-quit:
						return
					}
				}
			}()
			cfg := Config{Callers: 4, Start: func(_ int, done func(error)) error {
				queue <- done
				return nil
			}}
			return cfg, func() { close(quit); <-exited }
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg, cleanup := tc.cfg()
			t.Cleanup(cleanup)
			cfg.Warmup, cfg.Duration = 10*time.Millisecond, 100*time.Millisecond
			r, err := Run(context.Background(), cfg)
			if err != nil {
				t.Fatal(err)
			}
			if r.Calls < 1000 || r.AllocsPerCall > 0.05 {
				t.Fatalf("%d calls at %.3f allocs each; want at least 1,000 at none", r.Calls, r.AllocsPerCall)
			}
		})
	}
}
