// Command scale measures calls/s over many connections with one call in
// flight on each: -conns connections, one caller per connection, each
// calling Sum(13, 81) and waiting for the answer.
//
//	scale amp   -addr A [-conns 1000] [-api raw|typed] [-duration 3s] [-warmup 500ms] [-parallel 64] [-cpuprofile F]
//	scale floor -addr A [-conns 1000] [-duration 3s] [-warmup 500ms] [-parallel 64]
//
// amp opens its connections with conn.Dial (against callbench serve-amp,
// or any AMP server with Sum, Twisted's included); floor opens raw TCP
// connections to callbench serve-floor and, on each, writes the 44 bytes
// of a Sum call box and reads the 29 of its answer, the least any
// protocol can do. Both print a RESULT line like callbench's.
package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"runtime/pprof"
	"time"

	"github.com/ampmux/ampmux/amp/box"
	"github.com/ampmux/ampmux/amp/conn"
	"github.com/ampmux/ampmux/internal/benchkit"
	"github.com/ampmux/ampmux/internal/benchkit/load"
)

type config struct {
	Kind     string // amp or floor
	API      string // amp: raw or typed
	Addr     string
	Conns    int
	Parallel int
	Duration time.Duration
	Warmup   time.Duration
}

var (
	floorReq, floorResp = benchkit.FloorMessages()
)

func run(ctx context.Context, cfg config) (load.Result, error) {
	res := load.Result{Kind: "scale-" + cfg.Kind, API: cfg.API, Inflight: cfg.Conns, Conns: cfg.Conns}
	if cfg.Conns < 1 || cfg.Parallel < 1 {
		return res, errors.New("-conns and -parallel must be at least 1")
	}
	if limit := load.RaiseFileLimit(uint64(cfg.Conns) + 256); limit != 0 && uint64(cfg.Conns)+64 > limit {
		return res, fmt.Errorf("%d connections need more open files than the limit of %d (ulimit -n)", cfg.Conns, limit)
	}
	dialCtx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	var (
		call  func(i int) error
		abort func()
	)
	switch cfg.Kind {
	case "amp":
		if cfg.API != "raw" && cfg.API != "typed" {
			return res, fmt.Errorf("-api must be raw or typed, not %q", cfg.API)
		}
		conns, err := benchkit.OpenAll(dialCtx, cfg.Conns, cfg.Parallel, func(ctx context.Context, _ int) (*conn.Conn, error) {
			c, err := conn.Dial(ctx, "tcp", cfg.Addr, nil)
			if err != nil {
				return nil, err
			}
			// One call before the clock starts, as the idle client does.
			if _, err := benchkit.Sum.Call(ctx, c, benchkit.SumArgs{A: 13, B: 81}); err != nil {
				c.Close()
				return nil, err
			}
			return c, nil
		})
		if err != nil {
			return res, err
		}
		abort = func() { benchkit.CloseAll(conns) }
		defer abort()
		type rawBoxes struct{ args, reply box.Box }
		boxes := make([]rawBoxes, cfg.Conns)
		for i := range boxes {
			boxes[i].args.SetString("a", "13")
			boxes[i].args.SetString("b", "81")
		}
		bg := context.Background()
		if cfg.API == "raw" {
			call = func(i int) error {
				b := &boxes[i]
				if err := conns[i].CallBox(bg, "Sum", &b.args, &b.reply); err != nil {
					return fmt.Errorf("Sum call: %w", err)
				}
				if v, _ := b.reply.Get("total"); string(v) != "94" {
					return fmt.Errorf("Sum(13, 81) answered %s, want total 94", b.reply.String())
				}
				return nil
			}
		} else {
			call = func(i int) error {
				r, err := benchkit.Sum.Call(bg, conns[i], benchkit.SumArgs{A: 13, B: 81})
				if err != nil {
					return fmt.Errorf("Sum call: %w", err)
				}
				if r.Total != 94 {
					return fmt.Errorf("Sum(13, 81) answered total %d, want 94", r.Total)
				}
				return nil
			}
		}
	case "floor":
		res.API = ""
		var d net.Dialer
		conns, err := benchkit.OpenAll(dialCtx, cfg.Conns, cfg.Parallel, func(ctx context.Context, _ int) (net.Conn, error) {
			nc, err := d.DialContext(ctx, "tcp", cfg.Addr)
			if err != nil {
				return nil, err
			}
			if err := floorCall(nc, make([]byte, len(floorResp))); err != nil {
				nc.Close()
				return nil, err
			}
			return nc, nil
		})
		if err != nil {
			return res, err
		}
		abort = func() { benchkit.CloseAll(conns) }
		defer abort()
		bufs := make([][]byte, cfg.Conns)
		for i := range bufs {
			bufs[i] = make([]byte, len(floorResp))
		}
		call = func(i int) error { return floorCall(conns[i], bufs[i]) }
	default:
		return res, fmt.Errorf("unknown kind %q", cfg.Kind)
	}
	r, err := load.Run(ctx, load.Config{Callers: cfg.Conns, Warmup: cfg.Warmup, Duration: cfg.Duration, Call: call, Abort: abort})
	r.Kind, r.API, r.Conns = res.Kind, res.API, res.Conns
	return r, err
}

// floorCall writes one request and reads one answer on nc.
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

var errUsage = benchkit.ErrUsage

func main() {
	benchkit.Main("scale", func(ctx context.Context) error {
		return dispatch(ctx, os.Args[1:], os.Stdout, os.Stderr)
	})
}

const usageText = `usage: scale amp|floor -addr A [-conns 1000] [flags]

  amp    conn.Dial -conns connections to an AMP server, one Sum caller each
  floor  -conns raw TCP connections to callbench serve-floor, one 44-byte
         request then one 29-byte answer at a time on each
`

func dispatch(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || (args[0] != "amp" && args[0] != "floor") {
		if len(args) > 0 && (args[0] == "-h" || args[0] == "-help" || args[0] == "--help" || args[0] == "help") {
			fmt.Fprint(stdout, usageText)
			return nil
		}
		fmt.Fprint(stderr, usageText)
		return errUsage
	}
	cfg := config{Kind: args[0]}
	fs := flag.NewFlagSet(cfg.Kind, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&cfg.Addr, "addr", "", "server address (required)")
	fs.IntVar(&cfg.Conns, "conns", 1000, "connections, one caller each")
	fs.IntVar(&cfg.Parallel, "parallel", 64, "connections being opened at once")
	fs.DurationVar(&cfg.Duration, "duration", 3*time.Second, "length of the measured window")
	fs.DurationVar(&cfg.Warmup, "warmup", 500*time.Millisecond, "unmeasured run before the window")
	cpuprofile := fs.String("cpuprofile", "", "write a CPU profile of the client to `file`")
	if cfg.Kind == "amp" {
		fs.StringVar(&cfg.API, "api", "raw", "raw (Conn.CallBox, reused boxes) or typed (Command.Call)")
	}
	if err := fs.Parse(args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return errUsage
	}
	if fs.NArg() > 0 || cfg.Addr == "" || cfg.Duration <= 0 || cfg.Warmup < 0 {
		fmt.Fprintf(stderr, "scale %s: -addr is required, -duration must be positive; no arguments\n", cfg.Kind)
		return errUsage
	}
	stopProfile := func() {}
	if *cpuprofile != "" {
		f, err := os.Create(*cpuprofile)
		if err != nil {
			return err
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			f.Close()
			return err
		}
		stopProfile = func() { pprof.StopCPUProfile(); f.Close() }
	}
	res, err := run(ctx, cfg)
	stopProfile()
	if err == nil || res.Calls > 0 || res.Errors > 0 {
		fmt.Fprintln(stdout, res)
	}
	return err
}
