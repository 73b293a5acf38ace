package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"runtime"
	"time"

	"github.com/ampmux/ampmux/amp/conn"
	"github.com/ampmux/ampmux/internal/benchkit"
	"github.com/ampmux/ampmux/internal/benchkit/load"
)

// clientConfig is what the amp and floor clients run.
type clientConfig struct {
	Addr     string
	Inflight int
	// Conns above 1 opens that many connections, Parallel at a time, with
	// one caller each (Inflight 1): the scale measure.
	Conns    int
	Parallel int
	Duration time.Duration
	Warmup   time.Duration
	API      string // amp only: raw or typed
	// FloorMode is the floor client's writing: batched (all the refills
	// of one read in one Write; "" means batched) or perwrite (one Write
	// per 44-byte request).
	FloorMode string
}

// Floor modes: how the floor client writes its requests.
const (
	floorBatched  = "batched"
	floorPerWrite = "perwrite"
)

func checkFloorMode(mode string) error {
	if mode != floorBatched && mode != floorPerWrite {
		return fmt.Errorf("-floor-mode must be batched or perwrite, not %q", mode)
	}
	return nil
}

// totalSamples bounds the latency samples the floor client keeps.
const totalSamples = 1 << 18

// memWindow measures allocations and GCs over the measured window.
type memWindow struct{ mallocs, gcs uint64 }

func readMem() memWindow {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return memWindow{ms.Mallocs, uint64(ms.NumGC)}
}

// many: -conns above 1, one caller per connection.
func (cfg clientConfig) many() bool { return cfg.Conns > 1 }

// callers is the load's callers: -inflight on one connection, or one per
// connection.
func (cfg clientConfig) callers() int {
	if cfg.many() {
		return cfg.Conns
	}
	return cfg.Inflight
}

// openConns opens the client's connections with dial. Several are opened
// cfg.Parallel at a time, each making its first call with first before
// the clock starts (as the idle client does), so that all are up when the
// warm-up begins.
func openConns[T io.Closer](ctx context.Context, cfg clientConfig, dial func(context.Context) (T, error), first func(context.Context, T) error) ([]T, error) {
	if !cfg.many() {
		dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		c, err := dial(dctx)
		if err != nil {
			return nil, err
		}
		return []T{c}, nil
	}
	n := uint64(cfg.Conns)
	if limit := load.RaiseFileLimit(n + 256); limit != 0 && n+64 > limit {
		return nil, fmt.Errorf("%d connections need more open files than the limit of %d (ulimit -n)", n, limit)
	}
	dctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	return benchkit.OpenAll(dctx, cfg.Conns, max(cfg.Parallel, 1), func(ctx context.Context, _ int) (T, error) {
		var none T
		c, err := dial(ctx)
		if err != nil {
			return none, err
		}
		if err := first(ctx, c); err != nil {
			c.Close()
			return none, err
		}
		return c, nil
	})
}

// runAMPClient runs cfg.Inflight goroutines, each calling Sum and waiting
// for its answer, on one shared connection (or one on each of cfg.Conns);
// with the async API, as many slots keep a call each in flight through
// conn.Go, with no goroutine.
func runAMPClient(ctx context.Context, cfg clientConfig) (load.Result, error) {
	res := load.Result{Conns: max(cfg.Conns, 1), Kind: "amp", API: cfg.API, Inflight: cfg.callers()}
	if cfg.many() {
		res.Kind = "scale-amp"
	}
	if err := checkAPI(cfg.API); err != nil {
		return res, err
	}
	if cfg.Inflight < 1 {
		return res, errors.New("-inflight must be at least 1")
	}
	conns, err := openConns(ctx, cfg, func(ctx context.Context) (*conn.Conn, error) {
		return conn.Dial(ctx, "tcp", cfg.Addr, nil)
	}, func(ctx context.Context, c *conn.Conn) error {
		_, err := benchkit.Sum.Call(ctx, c, benchkit.SumArgs{A: 13, B: 81})
		return err
	})
	if err != nil {
		return res, err
	}
	defer benchkit.CloseAll(conns)

	lc, err := load.SumLoad(conns, cfg.API).Config(res.Inflight)
	if err != nil {
		return res, err
	}
	lc.Warmup, lc.Duration = cfg.Warmup, cfg.Duration
	lr, err := load.Run(ctx, lc)
	lr.Kind, lr.API, lr.Conns = res.Kind, res.API, res.Conns
	return lr, err
}

func dialFloor(addr string) func(context.Context) (net.Conn, error) {
	var d net.Dialer
	return func(ctx context.Context) (net.Conn, error) { return d.DialContext(ctx, "tcp", addr) }
}

// floorCall writes one request and reads one answer into buf.
func floorCall(nc net.Conn, buf []byte) error {
	if _, err := nc.Write(floorReq); err != nil {
		return err
	}
	if _, err := io.ReadFull(nc, buf); err != nil {
		return err
	}
	if !bytes.Equal(buf, floorResp) {
		return fmt.Errorf("floor answer %q, want %q", buf, floorResp)
	}
	return nil
}

// runFloorConns calls on cfg.Conns raw TCP connections, one caller each
// writing a request and reading its answer: the least any protocol can do
// per call.
func runFloorConns(ctx context.Context, cfg clientConfig) (load.Result, error) {
	res := load.Result{Kind: "scale-floor", Inflight: cfg.Conns, Conns: cfg.Conns}
	conns, err := openConns(ctx, cfg, dialFloor(cfg.Addr), func(_ context.Context, nc net.Conn) error {
		return floorCall(nc, make([]byte, floorRespSize))
	})
	if err != nil {
		return res, err
	}
	defer benchkit.CloseAll(conns)
	bufs := make([][]byte, len(conns))
	for i := range bufs {
		bufs[i] = make([]byte, floorRespSize)
	}
	lr, err := load.Run(ctx, load.Config{Callers: len(conns), Warmup: cfg.Warmup, Duration: cfg.Duration,
		Call:  func(i int) error { return floorCall(conns[i], bufs[i]) },
		Abort: func() { benchkit.CloseAll(conns) }})
	lr.Kind, lr.Conns = res.Kind, res.Conns
	return lr, err
}

// newFloorSender returns the function that writes k requests (k <= n) to
// w: in one Write (batched), or in k Writes of one request (perwrite).
func newFloorSender(w io.Writer, mode string, n int) func(k int) error {
	reqs := bytes.Repeat(floorReq, n)
	if mode == floorPerWrite {
		return func(k int) error {
			for range k {
				if _, err := w.Write(reqs[:floorReqSize]); err != nil {
					return err
				}
			}
			return nil
		}
	}
	return func(k int) error {
		_, err := w.Write(reqs[:k*floorReqSize])
		return err
	}
}

// runFloorClient keeps cfg.Inflight 44-byte requests outstanding on one
// connection: one reader loop reads answers in bulk and sends one new
// request per complete answer. Batched, all of one read's refills (and the
// first cfg.Inflight requests) go in one Write; per-write, every request
// has a Write of its own, as a client whose callers each send their own
// message would do. With -conns above 1 it is runFloorConns.
func runFloorClient(ctx context.Context, cfg clientConfig) (load.Result, error) {
	if cfg.many() {
		return runFloorConns(ctx, cfg)
	}
	mode := cfg.FloorMode
	if mode == "" {
		mode = floorBatched
	}
	res := load.Result{Kind: "floor", Mode: mode, Inflight: cfg.Inflight, Conns: 1}
	if err := checkFloorMode(mode); err != nil {
		return res, err
	}
	n := cfg.Inflight
	if n < 1 {
		return res, errors.New("-inflight must be at least 1")
	}
	conns, err := openConns(ctx, cfg, dialFloor(cfg.Addr), nil)
	if err != nil {
		return res, err
	}
	nc := conns[0]
	defer nc.Close()
	stopCtx := context.AfterFunc(ctx, func() { nc.SetDeadline(time.Now()) })
	defer stopCtx()

	base := time.Now()
	warmEnd := cfg.Warmup.Nanoseconds()
	end := (cfg.Warmup + cfg.Duration).Nanoseconds()
	nc.SetDeadline(base.Add(cfg.Warmup + cfg.Duration + load.WatchdogGrace))

	send := newFloorSender(nc, mode, n)
	sentAt := make([]int64, n) // request i was sent at sentAt[i%n]
	samples := load.NewSamples(totalSamples)
	buf := make([]byte, floorBufSize)

	now := time.Since(base).Nanoseconds()
	for i := range sentAt {
		sentAt[i] = now
	}
	if err := send(n); err != nil {
		return res, err
	}
	var (
		sent, rcvd      = int64(n), int64(0)
		have            int // bytes of buf holding unread answers
		started, ending bool
		mStart, mEnd    int64
		m0, m1          memWindow
	)
	for sent > rcvd {
		k0, err := nc.Read(buf[have:])
		if err != nil {
			if ctx.Err() != nil {
				return res, ctx.Err()
			}
			if err == io.EOF {
				err = errors.New("server closed the connection")
			}
			res.Errors++
			return res, fmt.Errorf("after %d answers: %w", rcvd, err)
		}
		now = time.Since(base).Nanoseconds()
		have += k0
		k := have / floorRespSize
		counting := started && !ending
		for j := range k {
			if !bytes.Equal(buf[j*floorRespSize:(j+1)*floorRespSize], floorResp) {
				res.Errors++
				return res, fmt.Errorf("answer %d is %q, want %q", rcvd, buf[j*floorRespSize:(j+1)*floorRespSize], floorResp)
			}
			if counting && rcvd%load.SampleEvery == 0 {
				samples.Add(now - sentAt[rcvd%int64(n)])
			}
			rcvd++
		}
		copy(buf, buf[k*floorRespSize:have])
		have -= k * floorRespSize
		switch {
		case counting:
			res.Calls += int64(k)
			mEnd = now
			if now >= end {
				ending = true
				m1 = readMem()
			}
		case !started && now >= warmEnd:
			started = true
			mStart = now
			m0 = readMem()
		}
		if ending || k == 0 {
			continue
		}
		for range k {
			sentAt[sent%int64(n)] = now
			sent++
		}
		if err := send(k); err != nil {
			res.Errors++
			return res, err
		}
	}
	if have != 0 {
		res.Errors++
		return res, fmt.Errorf("%d stray bytes after the last answer", have)
	}
	res.Seconds = float64(mEnd-mStart) / 1e9
	if res.Calls == 0 || res.Seconds <= 0 {
		return res, errors.New("no answer in the measured window")
	}
	res.CallsPerSec = float64(res.Calls) / res.Seconds
	res.Percentiles(samples)
	res.AllocsPerCall = float64(m1.mallocs-m0.mallocs) / float64(res.Calls)
	res.GCs = int64(m1.gcs - m0.gcs)
	return res, nil
}

// clientMain runs the amp or floor client and prints its RESULT line.
func clientMain(ctx context.Context, cmd string, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet(cmd, flag.ContinueOnError)
	fs.SetOutput(stderr)
	var cfg clientConfig
	fs.StringVar(&cfg.Addr, "addr", "", "server address (required)")
	fs.IntVar(&cfg.Inflight, "inflight", 1, "calls in flight at once (1 with -conns above 1)")
	fs.IntVar(&cfg.Conns, "conns", 1, "connections; above 1, one caller each, every connection making one call before the clock starts")
	fs.IntVar(&cfg.Parallel, "parallel", 64, "connections being opened at once")
	fs.DurationVar(&cfg.Duration, "duration", 3*time.Second, "length of the measured window")
	fs.DurationVar(&cfg.Warmup, "warmup", 500*time.Millisecond, "unmeasured run before the window")
	cpuprofile := fs.String("cpuprofile", "", "write a CPU profile of the client (warmup included) to `file`")
	if cmd == "amp" {
		fs.StringVar(&cfg.API, "api", "raw", "raw (Conn.CallBox, reused boxes) or typed (Command.Call)")
	} else {
		fs.StringVar(&cfg.FloorMode, "floor-mode", floorBatched, "batched (one Write per Read: all its refills) or perwrite (one Write per 44-byte request); moot with -conns above 1")
	}
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if cfg.Addr == "" {
		fmt.Fprintf(stderr, "callbench %s: -addr is required\n", cmd)
		return errUsage
	}
	if cfg.Duration <= 0 || cfg.Warmup < 0 {
		fmt.Fprintf(stderr, "callbench %s: -duration must be positive and -warmup not negative\n", cmd)
		return errUsage
	}
	if cfg.Conns < 1 || cfg.Parallel < 1 || cfg.many() && cfg.Inflight != 1 {
		fmt.Fprintf(stderr, "callbench %s: -conns and -parallel must be at least 1, and -inflight 1 with -conns above 1\n", cmd)
		return errUsage
	}
	if cmd == "floor" {
		if err := checkFloorMode(cfg.FloorMode); err != nil {
			fmt.Fprintf(stderr, "callbench floor: %v\n", err)
			return errUsage
		}
	}
	stopProfile, err := benchkit.StartCPUProfile(*cpuprofile)
	if err != nil {
		return err
	}
	var res load.Result
	if cmd == "amp" {
		res, err = runAMPClient(ctx, cfg)
	} else {
		res, err = runFloorClient(ctx, cfg)
	}
	stopProfile()
	if err == nil || res.Calls > 0 || res.Errors > 0 {
		fmt.Fprintln(stdout, res)
	}
	if err != nil && cfg.many() {
		return fmt.Errorf("%s client (%d connections): %w", cmd, cfg.Conns, err)
	}
	if err != nil {
		return fmt.Errorf("%s client (inflight %d): %w", cmd, cfg.Inflight, err)
	}
	return nil
}
