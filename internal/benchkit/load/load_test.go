package load

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func TestResultLine(t *testing.T) {
	in := Result{Kind: "grpc", Inflight: 16, Conns: 2, Calls: 1000, Seconds: 0.5, CallsPerSec: 2000, P50us: 12.5, P99us: 250, AllocsPerCall: 3, GCs: 1}
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
	s := make([]int64, 100)
	for i := range s {
		s[i] = int64(100-i) * 1000
	}
	p50, p99 := Percentiles(s)
	if p50 != 51 || p99 != 100 {
		t.Fatalf("p50 %v p99 %v", p50, p99)
	}
}
