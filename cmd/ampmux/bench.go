package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ampmux/ampmux/amp"
	"github.com/ampmux/ampmux/amp/box"
	"github.com/ampmux/ampmux/amp/conn"
)

func init() {
	c := &command{
		name:    "bench",
		summary: "Load an AMP server with calls and report calls/s and latency (wrk for AMP).",
		example: `  ampmux bench --server 127.0.0.1:1234 --concurrency 64 --connections 4 --duration 30s

Each of --concurrency callers loops: call, wait for the answer, call again;
callers are spread over --connections connections. With --command Sum (the
default) each call is Sum a=13 b=81 and the answer must be total=94; any
other command is sent with no arguments and any answer that is not an error
counts. Progress goes to stderr about once a second; the summary goes to
stdout:

  Sum on 127.0.0.1:1234, 64 callers over 4 connections, 30s
    1234567 calls in 30.00s, 0 errors
    41152 calls/s
    latency p50 1.43ms  p90 2.1ms  p99 3.85ms  max 12.4ms

Latency is timed on every call (max is exact; the percentiles come from up to
a million samples, thinned evenly on long runs). Exit status 1 if no call
succeeded or a connection was lost.`,
	}
	c.run = func(e *env, args []string) error { return runBench(c, e, args) }
	register(c)
}

// benchSamples bounds the latency samples kept over all callers.
const benchSamples = 1 << 20

type benchConfig struct {
	server      string
	command     string
	concurrency int
	connections int
	duration    time.Duration
	tls         *tls.Config
}

func runBench(c *command, e *env, args []string) error {
	fs := c.newFlags(e)
	var cfg benchConfig
	var tf tlsFlags
	fs.StringVar(&cfg.server, "server", "", "`HOST:PORT` of the AMP server (required)")
	fs.IntVar(&cfg.concurrency, "concurrency", 16, "callers, each with one call in flight")
	fs.IntVar(&cfg.connections, "connections", 1, "connections the callers share (at most --concurrency)")
	fs.DurationVar(&cfg.duration, "duration", 10*time.Second, "how long to run")
	fs.StringVar(&cfg.command, "command", "Sum", "`command` to call: Sum is called with a=13 b=81 and checked; any other is sent without arguments")
	tf.register(fs)
	if err := parseQuiet(fs, args); err != nil {
		return err
	}
	switch {
	case fs.NArg() > 0:
		return usagef("unexpected argument %q", fs.Arg(0))
	case cfg.server == "":
		return usagef("--server is required")
	case cfg.concurrency < 1:
		return usagef("--concurrency must be at least 1")
	case cfg.connections < 1:
		return usagef("--connections must be at least 1")
	case cfg.connections > cfg.concurrency:
		return usagef("--connections (%d) is more than --concurrency (%d): some connections would carry no calls", cfg.connections, cfg.concurrency)
	case cfg.duration <= 0:
		return usagef("--duration must be positive")
	case cfg.command == "":
		return usagef("--command must not be empty")
	}
	if err := checkHostPort(cfg.server); err != nil {
		return err
	}
	if tf.given() {
		t, err := tf.config(cfg.server)
		if err != nil {
			return err
		}
		cfg.tls = t
	}
	return bench(e, cfg)
}

// benchCaller is one caller's tally, on its own cache lines.
type benchCaller struct {
	calls  atomic.Int64 // successful calls, read by the progress line
	errors atomic.Int64
	lat    latencySampler
	_      [64]byte
}

func bench(e *env, cfg benchConfig) error {
	conns := make([]*conn.Conn, 0, cfg.connections)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	parent, stop := interruptContext(e) // Ctrl-C ends the run early, with a summary
	defer stop()
	for range cfg.connections {
		ctx, cancel := context.WithTimeout(parent, 10*time.Second)
		c, err := startAMP(ctx, cfg.server, cfg.tls)
		cancel()
		if err != nil {
			return err
		}
		conns = append(conns, c)
	}

	var (
		firstErr   atomic.Pointer[string]
		wrongReply = fmt.Sprintf("%s(a=13, b=81) did not answer total=94", cfg.command)
		wg         sync.WaitGroup
	)
	noteErr := func(msg string) { firstErr.CompareAndSwap(nil, &msg) }
	callers := make([]*benchCaller, cfg.concurrency)
	perCaller := max(benchSamples/cfg.concurrency, 1024)
	start := time.Now()
	runCtx, cancel := context.WithDeadline(parent, start.Add(cfg.duration))
	defer cancel()
	for i := range callers {
		bc := &benchCaller{lat: newLatencySampler(perCaller)}
		callers[i] = bc
		ac := conns[i%len(conns)]
		wg.Add(1)
		go func() {
			defer wg.Done()
			var args, reply box.Box
			isSum := cfg.command == "Sum"
			if isSum {
				args.SetString("a", "13")
				args.SetString("b", "81")
			}
			for runCtx.Err() == nil {
				t0 := time.Now()
				err := ac.CallBox(runCtx, cfg.command, &args, &reply)
				d := time.Since(t0)
				if err != nil {
					if runCtx.Err() != nil {
						return // the run is over; this call does not count
					}
					bc.errors.Add(1)
					var re *amp.RemoteError
					if errors.As(err, &re) {
						noteErr(remoteErrorLine(re))
						continue
					}
					noteErr(err.Error())
					return // the connection is gone
				}
				if isSum {
					if v, _ := reply.Get("total"); string(v) != "94" {
						bc.errors.Add(1)
						noteErr(wrongReply + ": " + reply.String())
						continue
					}
				}
				bc.lat.add(d)
				bc.calls.Add(1)
			}
		}()
	}

	stopProgress := make(chan struct{})
	progressDone := make(chan struct{})
	go benchProgress(e.stderr, start, callers, stopProgress, progressDone)
	wg.Wait()
	elapsed := time.Since(start)
	close(stopProgress)
	<-progressDone
	interrupted := parent.Err() != nil

	var lost error
	for _, c := range conns {
		select {
		case <-c.Done():
			if lost == nil {
				lost = c.Err()
				if lost == nil {
					lost = errors.New("closed by the server")
				}
			}
		default:
		}
	}

	var calls, errs int64
	var maxLat time.Duration
	var samples []weightedSample
	for _, bc := range callers {
		calls += bc.calls.Load()
		errs += bc.errors.Load()
		maxLat = max(maxLat, bc.lat.max)
		samples = bc.lat.appendTo(samples)
	}
	secure := ""
	if cfg.tls != nil {
		secure = " (TLS)"
	}
	plural := func(n int, one string) string {
		if n == 1 {
			return "1 " + one
		}
		return strconv.Itoa(n) + " " + one + "s"
	}
	rate := 0.0
	if elapsed > 0 {
		rate = float64(calls) / elapsed.Seconds()
	}
	w := e.stdout
	stopped := ""
	if interrupted {
		stopped = " (interrupted)"
	}
	fmt.Fprintf(w, "%s on %s%s, %s over %s, %v%s\n", cfg.command, cfg.server, secure,
		plural(cfg.concurrency, "caller"), plural(cfg.connections, "connection"), cfg.duration, stopped)
	fmt.Fprintf(w, "  %d calls in %.2fs, %d errors\n", calls, elapsed.Seconds(), errs)
	fmt.Fprintf(w, "  %d calls/s\n", int64(math.Round(rate)))
	if calls > 0 {
		p := latencyPercentiles(samples, 0.50, 0.90, 0.99)
		fmt.Fprintf(w, "  latency p50 %s  p90 %s  p99 %s  max %s\n",
			fmtLatency(p[0]), fmtLatency(p[1]), fmtLatency(p[2]), fmtLatency(maxLat))
	}
	if msg := firstErr.Load(); msg != nil {
		fmt.Fprintf(w, "  first error: %s\n", *msg)
	}
	switch {
	case lost != nil:
		return fmt.Errorf("connection to %s lost during the run: %v", cfg.server, lost)
	case calls == 0 && errs > 0:
		return fmt.Errorf("every call failed (first error: %s)", *firstErr.Load())
	case calls == 0:
		return fmt.Errorf("no call was answered within %v", cfg.duration)
	}
	return nil
}

// benchProgress writes a progress line about once a second until stop.
func benchProgress(w io.Writer, start time.Time, callers []*benchCaller, stop <-chan struct{}, done chan<- struct{}) {
	defer close(done)
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case now := <-t.C:
			var calls, errs int64
			for _, bc := range callers {
				calls += bc.calls.Load()
				errs += bc.errors.Load()
			}
			el := now.Sub(start)
			line := fmt.Sprintf("[%ds] %d calls, %d calls/s", int64(math.Round(el.Seconds())), calls, int64(float64(calls)/el.Seconds()))
			if errs > 0 {
				line += fmt.Sprintf(", %d errors", errs)
			}
			fmt.Fprintln(w, line)
		}
	}
}

// latencySampler keeps latencies in preallocated memory. It times every
// call; once full it keeps every other sample and from then on records
// every second call (then every fourth...), so that the samples stay
// spread evenly over the run. Each sample stands for stride calls.
type latencySampler struct {
	buf    []int64 // nanoseconds
	stride int64
	n      int64 // calls seen
	max    time.Duration
}

func newLatencySampler(capacity int) latencySampler {
	return latencySampler{buf: make([]int64, 0, capacity), stride: 1}
}

func (s *latencySampler) add(d time.Duration) {
	s.max = max(s.max, d)
	n := s.n
	s.n++
	if n%s.stride != 0 {
		return
	}
	if len(s.buf) == cap(s.buf) {
		// Keep samples 0, 2, 4...: the calls at multiples of 2*stride.
		half := (len(s.buf) + 1) / 2
		for i := range half {
			s.buf[i] = s.buf[2*i]
		}
		s.buf = s.buf[:half]
		s.stride *= 2
		if n%s.stride != 0 {
			return
		}
	}
	s.buf = append(s.buf, int64(d))
}

type weightedSample struct {
	ns, weight int64
}

func (s *latencySampler) appendTo(dst []weightedSample) []weightedSample {
	for _, v := range s.buf {
		dst = append(dst, weightedSample{v, s.stride})
	}
	return dst
}

// latencyPercentiles returns the latencies at quantiles qs (ascending), each
// sample counting for its weight.
func latencyPercentiles(samples []weightedSample, qs ...float64) []time.Duration {
	out := make([]time.Duration, len(qs))
	if len(samples) == 0 {
		return out
	}
	slices.SortFunc(samples, func(a, b weightedSample) int { return int(min(max(a.ns-b.ns, -1), 1)) })
	var total int64
	for _, s := range samples {
		total += s.weight
	}
	var cum int64
	j := 0
	for i, q := range qs {
		target := int64(math.Ceil(q * float64(total)))
		for j < len(samples)-1 && cum+samples[j].weight < target {
			cum += samples[j].weight
			j++
		}
		out[i] = time.Duration(samples[j].ns)
	}
	return out
}

// fmtLatency rounds d to three significant digits, in Go's duration
// syntax (time.ParseDuration reads it back): 87.3µs, 1.24ms, 12s.
func fmtLatency(d time.Duration) string {
	if d <= 0 {
		return "0s"
	}
	unit := time.Duration(1)
	for v := d; v >= 1000; v /= 10 {
		unit *= 10
	}
	return d.Round(unit).String()
}
