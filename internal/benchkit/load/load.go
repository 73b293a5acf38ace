// Package load runs the load of every benchmark client (bench/callbench,
// the bench/ module's and ampmux bench): N callers, each calling and
// waiting for its answer, or N slots each keeping one pipelined call in
// flight; an unmeasured warm-up, then a measured window; one call in 16
// timed. Its RESULT line is what every client of the comparison prints.
//
// Each caller (or slot) owns its worker: its samples are its own, and its
// counts are atomic only so that Progress may read them while it runs.
package load

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ampmux/ampmux/internal/benchkit"
)

// SampleEvery: one call in this many is timed (as callbench does).
const SampleEvery = 16

// totalSamples bounds the latency samples kept, over all callers.
const totalSamples = 1 << 18

// ErrNoCalls: the run went its whole length and no call succeeded in the
// measured window (any errors were tolerated ones).
var ErrNoCalls = errors.New("load: no call completed in the measured window")

// WatchdogGrace is how long after the planned end a run gives up on a
// server that stopped answering.
const WatchdogGrace = 10 * time.Second

// Result is one client run; String is its RESULT line, the same fields as
// callbench's plus conns.
type Result struct {
	Kind         string // grpc, amp, floor, twisted ...
	API          string // optional
	Mode         string // optional: the floor's writing (batched, perwrite)
	Inflight     int    // callers at once, over all connections
	Conns        int    // connections
	Calls        int64  // completed in the measured window
	Seconds      float64
	CallsPerSec  float64
	P50us, P99us float64
	P90us, MaxUs float64 // of the timed calls (one in SampleEvery)
	Errors       int64
	// FirstTolerated is the first error Config.Tolerate let pass in the
	// window (not in the RESULT line).
	FirstTolerated error
	AllocsPerCall  float64 // client process, measured window
	GCs            int64
}

// String is the machine-readable RESULT line.
func (r Result) String() string {
	var sb strings.Builder
	sb.WriteString("RESULT kind=" + r.Kind)
	if r.API != "" {
		sb.WriteString(" api=" + r.API)
	}
	if r.Mode != "" {
		sb.WriteString(" mode=" + r.Mode)
	}
	fmt.Fprintf(&sb, " inflight=%d conns=%d calls=%d seconds=%.6f calls_per_sec=%.0f p50_us=%.1f p90_us=%.1f p99_us=%.1f max_us=%.1f errors=%d allocs_per_call=%.3f gcs=%d",
		r.Inflight, r.Conns, r.Calls, r.Seconds, r.CallsPerSec, r.P50us, r.P90us, r.P99us, r.MaxUs, r.Errors, r.AllocsPerCall, r.GCs)
	return sb.String()
}

// ParseResult reads a RESULT line printed by any client of the comparison
// (callbench, rpc, twisted/client.py). Fields it does not know are
// ignored; calls, seconds, calls_per_sec, p50_us, p99_us and errors are
// required. conns defaults to 1.
func ParseResult(line string) (Result, error) {
	var r Result
	kv, err := benchkit.ParseKV(line, "RESULT")
	if err != nil {
		return r, err
	}
	var errs []error
	num := func(k string, dst *float64, required bool) {
		v, ok := kv[k]
		if !ok {
			if required {
				errs = append(errs, fmt.Errorf("RESULT line lacks %s", k))
			}
			return
		}
		f, err := strconv.ParseFloat(v, 64)
		if err != nil {
			errs = append(errs, fmt.Errorf("RESULT %s: %w", k, err))
		}
		*dst = f
	}
	var inflight, conns, calls, nerr, gcs float64
	conns = 1
	r.Kind = kv["kind"]
	if r.Kind == "" {
		errs = append(errs, errors.New("RESULT line lacks kind"))
	}
	r.API, r.Mode = kv["api"], kv["mode"]
	num("inflight", &inflight, true)
	num("conns", &conns, false)
	num("calls", &calls, true)
	num("seconds", &r.Seconds, true)
	num("calls_per_sec", &r.CallsPerSec, true)
	num("p50_us", &r.P50us, true)
	num("p99_us", &r.P99us, true)
	num("p90_us", &r.P90us, false)
	num("max_us", &r.MaxUs, false)
	num("errors", &nerr, true)
	num("allocs_per_call", &r.AllocsPerCall, false)
	num("gcs", &gcs, false)
	r.Inflight, r.Conns, r.Calls, r.Errors, r.GCs = int(inflight), int(conns), int64(calls), int64(nerr), int64(gcs)
	if err := errors.Join(errs...); err != nil {
		return r, fmt.Errorf("%w (line %q)", err, line)
	}
	return r, nil
}

// Percentiles sets r's p50, p90, p99 and max from s; it sorts them.
func (r *Result) Percentiles(s Samples) { r.percentiles(s.buf) }

func (r *Result) percentiles(samples []int64) {
	if len(samples) == 0 {
		return
	}
	slices.Sort(samples)
	at := func(q float64) float64 {
		i := min(int(q*float64(len(samples))), len(samples)-1)
		return float64(samples[i]) / 1e3
	}
	r.P50us, r.P90us, r.P99us, r.MaxUs = at(0.50), at(0.90), at(0.99), at(1)
}

const (
	phaseWarmup int32 = iota
	phaseMeasure
	phaseStop
)

type worker struct {
	calls  atomic.Int64 // in the measured window
	errors atomic.Int64 // tolerated (Config.Tolerate), in the window
	all    atomic.Int64 // answered, warm-up included (Progress)
	// allErrs: tolerated, warm-up included (Progress); firstErr: the
	// first tolerated in the window.
	allErrs  atomic.Int64
	firstErr atomic.Pointer[error]
	Samples
	_ [64]byte // keep workers on separate cache lines
}

// Samples keeps latency samples in memory allocated up front; once full
// it overwrites the oldest.
type Samples struct {
	buf []int64 // nanoseconds
	n   int
}

// NewSamples keeps up to capacity samples.
func NewSamples(capacity int) Samples { return Samples{buf: make([]int64, 0, capacity)} }

// Add records one latency in nanoseconds.
func (s *Samples) Add(ns int64) {
	if len(s.buf) < cap(s.buf) {
		s.buf = append(s.buf, ns)
	} else {
		s.buf[s.n%len(s.buf)] = ns
	}
	s.n++
}

// Config is one run.
type Config struct {
	Callers  int
	Warmup   time.Duration
	Duration time.Duration
	// Call makes one call for caller i and checks its answer; callers
	// never share an i. Calls get no context (as callbench's): a stuck
	// server is the watchdog's, which calls Abort.
	Call func(i int) error
	// Start, instead of Call, sends one call for slot i without waiting
	// and returns; done must run once, after Start has returned, with the
	// checked outcome (on any goroutine, such as a connection's reader).
	// The next call of the slot is started from done: no goroutine per
	// caller.
	Start func(i int, done func(error)) error
	// Abort, if set, runs when the watchdog fires (the server stopped
	// answering), to fail the calls still waiting: close the connections.
	Abort func()
	// Tolerate, if set, says which errors of Call (or done) are counted
	// and called past (a declared error, a wrong answer); any other ends
	// the run with it.
	Tolerate func(error) bool
	// Progress, if set, is called about once a second, from Run's
	// goroutine, with the time since the start (warm-up included) and the
	// calls answered and errors tolerated so far.
	Progress func(elapsed time.Duration, calls, errors int64)
}

// outcome counts one call's end for w; it reports whether the caller
// goes on.
func (cfg *Config) outcome(w *worker, err error, phase *atomic.Int32, fail func(error), timed bool, t0 time.Time) bool {
	switch {
	case err == nil:
		w.all.Add(1)
		if phase.Load() == phaseMeasure {
			w.calls.Add(1)
			if timed {
				w.Add(int64(time.Since(t0)))
			}
		}
		return true
	case cfg.Tolerate != nil && cfg.Tolerate(err):
		w.allErrs.Add(1)
		if phase.Load() == phaseMeasure {
			w.errors.Add(1)
			// A copy, so that err itself stays off the heap: taking its
			// address would cost every call, answered or not, an alloc.
			first := err
			w.firstErr.CompareAndSwap(nil, &first)
		}
		return phase.Load() != phaseStop
	}
	if phase.Load() != phaseStop {
		fail(err)
	}
	return false
}

// Run runs cfg.Callers goroutines, each calling then waiting (or as many
// slots through cfg.Start), and returns what the measured window saw
// (Kind, API, Conns are left to the caller).
func Run(ctx context.Context, cfg Config) (Result, error) {
	res := Result{Inflight: cfg.Callers}
	if cfg.Callers < 1 {
		return res, errors.New("callers must be at least 1")
	}
	var (
		phase    atomic.Int32
		errCount atomic.Int64
		firstErr atomic.Pointer[error]
		failed   = make(chan struct{})
		failOnce sync.Once
		wg       sync.WaitGroup
	)
	// stop ends the run with err, once; a failure (not an interruption)
	// counts as one error, however many callers see it.
	stop := func(err error, failure bool) {
		failOnce.Do(func() {
			if failure {
				errCount.Add(1)
			}
			firstErr.Store(&err)
			phase.Store(phaseStop)
			close(failed)
		})
		phase.Store(phaseStop)
	}
	fail := func(err error) { stop(err, true) }
	perWorker := max(totalSamples/cfg.Callers, 64)
	workers := make([]*worker, cfg.Callers)
	for i := range workers {
		w := &worker{Samples: NewSamples(perWorker)}
		workers[i] = w
		wg.Add(1)
		if cfg.Start != nil {
			startSlot(cfg, i, w, &phase, fail, wg.Done)
			continue
		}
		go func() {
			defer wg.Done()
			for n := uint(0); ; n++ {
				before := phase.Load()
				if before == phaseStop {
					return
				}
				// Callers start their count at different offsets, so that
				// callers making few calls each (many connections) are
				// still sampled, one call in SampleEvery over all.
				timed := before == phaseMeasure && (n+uint(i))%SampleEvery == 0
				var t0 time.Time
				if timed {
					t0 = time.Now()
				}
				if !cfg.outcome(w, cfg.Call(i), &phase, fail, timed, t0) {
					return
				}
			}
		}()
	}
	watchdog := time.AfterFunc(cfg.Warmup+cfg.Duration+WatchdogGrace, func() {
		fail(errors.New("server stopped answering (watchdog)"))
		if cfg.Abort != nil {
			cfg.Abort()
		}
	})
	defer watchdog.Stop()

	begun := time.Now()
	var tick <-chan time.Time
	if cfg.Progress != nil {
		t := time.NewTicker(time.Second)
		defer t.Stop()
		tick = t.C
	}
	progress := func(now time.Time) {
		var calls, errs int64
		for _, w := range workers {
			calls += w.all.Load()
			errs += w.allErrs.Load()
		}
		cfg.Progress(now.Sub(begun), calls, errs)
	}
	wait := func(d time.Duration) bool {
		t := time.NewTimer(d)
		defer t.Stop()
		for {
			select {
			case <-t.C:
				return true
			case now := <-tick:
				progress(now)
				continue
			case <-failed:
			case <-ctx.Done():
				// Interrupted: not an error of the server's; calls still
				// waiting (a server that stopped answering) are failed
				// now rather than at the watchdog.
				stop(ctx.Err(), false)
				if cfg.Abort != nil {
					cfg.Abort()
				}
			}
			return false
		}
	}
	var start, end time.Time
	var ms0, ms1 runtime.MemStats
	stopped := false
	if wait(cfg.Warmup) {
		runtime.ReadMemStats(&ms0)
		start = time.Now()
		phase.Store(phaseMeasure)
		if wait(cfg.Duration) {
			phase.Store(phaseStop)
			end = time.Now()
			runtime.ReadMemStats(&ms1)
			stopped = true
		}
	}
	if !stopped && !start.IsZero() {
		end = time.Now() // a failed or interrupted run still reports its window
		runtime.ReadMemStats(&ms1)
	}
	phase.Store(phaseStop)
	wg.Wait()

	// The figures so far, whether or not the run completed.
	res.Errors = errCount.Load()
	var all []int64
	for _, w := range workers {
		res.Calls += w.calls.Load()
		res.Errors += w.errors.Load()
		if p := w.firstErr.Load(); p != nil && res.FirstTolerated == nil {
			res.FirstTolerated = *p
		}
		all = append(all, w.buf...)
	}
	if !start.IsZero() {
		res.Seconds = end.Sub(start).Seconds()
		res.CallsPerSec = float64(res.Calls) / res.Seconds
		res.percentiles(all)
		if res.Calls > 0 {
			res.AllocsPerCall = float64(ms1.Mallocs-ms0.Mallocs) / float64(res.Calls)
		}
		res.GCs = int64(ms1.NumGC - ms0.NumGC)
	}
	if p := firstErr.Load(); p != nil {
		return res, *p
	}
	if !stopped {
		return res, errors.New("run stopped early")
	}
	if res.Calls == 0 {
		return res, ErrNoCalls
	}
	return res, nil
}

// startSlot keeps slot i's call in flight through cfg.Start; finished
// runs once the slot stops.
func startSlot(cfg Config, i int, w *worker, phase *atomic.Int32, fail func(error), finished func()) {
	var n uint
	var t0 time.Time
	var timed bool
	var done func(error)
	send := func() {
		before := phase.Load()
		if before == phaseStop {
			finished()
			return
		}
		timed = before == phaseMeasure && (n+uint(i))%SampleEvery == 0
		if timed {
			t0 = time.Now()
		}
		n++
		if err := cfg.Start(i, done); err != nil {
			if phase.Load() != phaseStop {
				fail(err)
			}
			finished()
		}
	}
	done = func(err error) {
		if !cfg.outcome(w, err, phase, fail, timed, t0) {
			finished()
			return
		}
		send()
	}
	send()
}

// RaiseFileLimit lifts the soft limit on open files towards want (Go
// already raises it to the hard limit at start-up; this also tries the
// hard limit, as root) and returns the soft limit in force.
func RaiseFileLimit(want uint64) uint64 { return benchkit.RaiseFileLimit(want) }
