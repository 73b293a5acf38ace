package main

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"time"

	"github.com/ampmux/ampmux/amp"
	"github.com/ampmux/ampmux/amp/conn"
	"github.com/ampmux/ampmux/internal/benchkit"
	"github.com/ampmux/ampmux/internal/benchkit/load"
)

func init() {
	c := &command{
		name:    "bench",
		summary: "Load an AMP server with calls and report calls/s and latency (wrk for AMP).",
		example: `  ampmux bench --server 127.0.0.1:1234 --concurrency 64 --connections 4 --duration 30s
  ampmux bench --server 127.0.0.1:1234 --pipeline --concurrency 256 --json

Each of --concurrency callers loops: call, wait for the answer, call again;
callers are spread over --connections connections. With --pipeline there
are no caller goroutines: each of --concurrency slots keeps one call in
flight through Conn.Go and sends the next from the answer's callback. With
--command Sum (the default) each call is Sum a=13 b=81 and the answer must
be total=94; any other command is sent with no arguments and any answer
that is not an error counts. Declared errors (and wrong answers) are
counted and the run goes on; a lost connection ends it. After --warmup
(not counted), the run lasts --duration. A progress line goes to stderr
each second; the summary goes to stdout (--json: one JSON object):

  Sum on 127.0.0.1:1234, 64 callers over 4 connections, 30s
    1234567 calls in 30.00s, 0 errors
    41152 calls/s
    latency p50 1.43ms  p90 2.1ms  p99 3.85ms  max 12.4ms

One call in 16 is timed (max is the largest of those), so that timing
costs the load nothing. Exit status 1 if no call succeeded or a connection
was lost. It runs the load loop the project's benchmarks run.`,
	}
	c.run = func(e *env, args []string) error { return runBench(c, e, args) }
	register(c)
}

type benchConfig struct {
	server      string
	command     string
	concurrency int
	connections int
	duration    time.Duration
	warmup      time.Duration
	pipeline    bool
	json        bool
	resultLine  bool
	tls         *tls.Config
}

func runBench(c *command, e *env, args []string) error {
	fs := c.newFlags(e)
	var cfg benchConfig
	var tf tlsFlags
	fs.StringVar(&cfg.server, "server", "", "`HOST:PORT` of the AMP server (required)")
	fs.IntVar(&cfg.concurrency, "concurrency", 16, "callers (with --pipeline, slots), each with one call in flight")
	fs.IntVar(&cfg.connections, "connections", 1, "connections the callers share (at most --concurrency)")
	fs.DurationVar(&cfg.duration, "duration", 10*time.Second, "how long to measure")
	fs.DurationVar(&cfg.warmup, "warmup", 0, "how long to run first, not measured")
	fs.BoolVar(&cfg.pipeline, "pipeline", false, "keep the calls in flight with Conn.Go, without a goroutine per caller")
	fs.BoolVar(&cfg.json, "json", false, "print the summary as one JSON object")
	fs.BoolVar(&cfg.resultLine, "result-line", false, "print the summary as the RESULT line every client of bench/run.sh prints")
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
	case cfg.warmup < 0:
		return usagef("--warmup must not be negative")
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

// benchReport is the summary, and --json's object.
type benchReport struct {
	Command     string  `json:"command"`
	Server      string  `json:"server"`
	TLS         bool    `json:"tls"`
	Pipeline    bool    `json:"pipeline"`
	Callers     int     `json:"callers"`
	Connections int     `json:"connections"`
	Duration    string  `json:"duration"`
	Interrupted bool    `json:"interrupted"`
	Calls       int64   `json:"calls"`
	Errors      int64   `json:"errors"`
	Seconds     float64 `json:"seconds"`
	CallsPerSec float64 `json:"calls_per_sec"`
	Latency     struct {
		P50 float64 `json:"p50_us"`
		P90 float64 `json:"p90_us"`
		P99 float64 `json:"p99_us"`
		Max float64 `json:"max_us"`
	} `json:"latency"`
	FirstError string `json:"first_error,omitempty"`
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
	context.AfterFunc(parent, stop) // and a second Ctrl-C, the process
	for range cfg.connections {
		ctx, cancel := context.WithTimeout(parent, 10*time.Second)
		c, err := startAMP(ctx, cfg.server, cfg.tls)
		cancel()
		if err != nil {
			return err
		}
		conns = append(conns, c)
	}
	a := load.AMP{Conns: conns, Command: cfg.command, API: "raw"}
	if cfg.command == "Sum" {
		a = load.SumLoad(conns, "raw")
	}
	if cfg.pipeline {
		a.API = "async"
	}
	lc, err := a.Config(cfg.concurrency)
	if err != nil {
		return err
	}
	lc.Warmup, lc.Duration = cfg.warmup, cfg.duration
	lc.Tolerate = func(err error) bool { // declared errors and wrong answers; a lost connection ends the run
		var re *amp.RemoteError
		return errors.As(err, &re) || errors.Is(err, benchkit.ErrWrongAnswer)
	}
	var lastCalls int64
	var lastAt time.Duration
	lc.Progress = func(el time.Duration, calls, errs int64) {
		line := fmt.Sprintf("[%ds] %d calls, %d calls/s", int64(math.Round(el.Seconds())), calls,
			int64(float64(calls-lastCalls)/(el-lastAt).Seconds()))
		if errs > 0 {
			line += fmt.Sprintf(", %d errors", errs)
		}
		lastCalls, lastAt = calls, el
		fmt.Fprintln(e.stderr, line)
	}
	res, runErr := load.Run(parent, lc)

	r := benchReport{Command: cfg.command, Server: cfg.server, TLS: cfg.tls != nil, Pipeline: cfg.pipeline,
		Callers: cfg.concurrency, Connections: cfg.connections, Duration: cfg.duration.String(),
		Interrupted: parent.Err() != nil, Calls: res.Calls, Errors: res.Errors, Seconds: res.Seconds, CallsPerSec: res.CallsPerSec}
	r.Latency.P50, r.Latency.P90, r.Latency.P99, r.Latency.Max = res.P50us, res.P90us, res.P99us, res.MaxUs
	var lost error
	if runErr != nil && !r.Interrupted && !errors.Is(runErr, load.ErrNoCalls) {
		lost = runErr
	}
	var re *amp.RemoteError
	switch err := res.FirstTolerated; {
	case errors.As(err, &re):
		r.FirstError = remoteErrorLine(re)
	case err != nil:
		r.FirstError = err.Error()
	case lost != nil:
		r.FirstError = lost.Error()
	}
	switch {
	case cfg.resultLine:
		res.Kind, res.API, res.Conns = "ampmux-bench", a.API, cfg.connections
		fmt.Fprintln(e.stdout, res)
	case cfg.json:
		out, _ := json.MarshalIndent(r, "", "  ")
		fmt.Fprintf(e.stdout, "%s\n", out)
	default:
		printBench(e, r)
	}
	switch {
	case lost != nil:
		return fmt.Errorf("connection to %s lost during the run: %v", cfg.server, lost)
	case r.Calls == 0 && r.Errors > 0:
		return fmt.Errorf("every call failed (first error: %s)", r.FirstError)
	case r.Calls == 0 && r.Interrupted:
		return errors.New("interrupted before any call was measured")
	case r.Calls == 0:
		return fmt.Errorf("no call was answered within %v", cfg.duration)
	}
	return nil
}

// printBench writes the summary as text.
func printBench(e *env, r benchReport) {
	plural := func(n int, one string) string {
		if n == 1 {
			return "1 " + one
		}
		return strconv.Itoa(n) + " " + one + "s"
	}
	secure, stopped, who := "", "", "caller"
	if r.TLS {
		secure = " (TLS)"
	}
	if r.Interrupted {
		stopped = " (interrupted)"
	}
	if r.Pipeline {
		who = "pipelined slot"
	}
	w := e.stdout
	fmt.Fprintf(w, "%s on %s%s, %s over %s, %s%s\n", r.Command, r.Server, secure,
		plural(r.Callers, who), plural(r.Connections, "connection"), r.Duration, stopped)
	fmt.Fprintf(w, "  %d calls in %.2fs, %d errors\n", r.Calls, r.Seconds, r.Errors)
	fmt.Fprintf(w, "  %d calls/s\n", int64(math.Round(r.CallsPerSec)))
	if r.Calls > 0 {
		us := func(v float64) string { return benchkit.Dur(time.Duration(v * 1e3)) }
		fmt.Fprintf(w, "  latency p50 %s  p90 %s  p99 %s  max %s\n", us(r.Latency.P50), us(r.Latency.P90), us(r.Latency.P99), us(r.Latency.Max))
	}
	if r.FirstError != "" {
		fmt.Fprintf(w, "  first error: %s\n", r.FirstError)
	}
}
