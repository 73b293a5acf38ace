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

// runAMPClient runs cfg.Inflight goroutines, each calling Sum and waiting
// for its answer, on one shared connection; with the async API, as many
// slots keep a call each in flight through conn.Go, with no goroutine.
func runAMPClient(ctx context.Context, cfg clientConfig) (load.Result, error) {
	res := load.Result{Conns: 1, Kind: "amp", API: cfg.API, Inflight: cfg.Inflight}
	if err := checkAPI(cfg.API); err != nil {
		return res, err
	}
	if cfg.Inflight < 1 {
		return res, errors.New("-inflight must be at least 1")
	}
	dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	c, err := conn.Dial(dctx, "tcp", cfg.Addr, nil)
	cancel()
	if err != nil {
		return res, err
	}
	defer c.Close()

	lc, err := load.SumLoad([]*conn.Conn{c}, cfg.API).Config(cfg.Inflight)
	if err != nil {
		return res, err
	}
	lc.Warmup, lc.Duration = cfg.Warmup, cfg.Duration
	lr, err := load.Run(ctx, lc)
	lr.Kind, lr.API, lr.Conns = res.Kind, res.API, 1
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
// message would do.
func runFloorClient(ctx context.Context, cfg clientConfig) (load.Result, error) {
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
	var d net.Dialer
	dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	nc, err := d.DialContext(dctx, "tcp", cfg.Addr)
	cancel()
	if err != nil {
		return res, err
	}
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
	fs.IntVar(&cfg.Inflight, "inflight", 1, "calls in flight at once")
	fs.DurationVar(&cfg.Duration, "duration", 3*time.Second, "length of the measured window")
	fs.DurationVar(&cfg.Warmup, "warmup", 500*time.Millisecond, "unmeasured run before the window")
	cpuprofile := fs.String("cpuprofile", "", "write a CPU profile of the client (warmup included) to `file`")
	if cmd == "amp" {
		fs.StringVar(&cfg.API, "api", "raw", "raw (Conn.CallBox, reused boxes) or typed (Command.Call)")
	} else {
		fs.StringVar(&cfg.FloorMode, "floor-mode", floorBatched, "batched (one Write per Read: all its refills) or perwrite (one Write per 44-byte request)")
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
	if err != nil {
		return fmt.Errorf("%s client (inflight %d): %w", cmd, cfg.Inflight, err)
	}
	return nil
}
