package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/ampmux/ampmux/internal/benchkit"
	"github.com/ampmux/ampmux/internal/benchkit/load"
)

// runOptions is what the run subcommand measures.
type runOptions struct {
	Inflight []int
	APIs     []string
	// Floors are the floor modes measured (batched, perwrite); nil means
	// batched alone, and the table keeps its one-floor form.
	Floors   []string
	Duration time.Duration
	Warmup   time.Duration
	Runs     int
}

func runMain(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	fs.SetOutput(stderr)
	inflight := fs.String("inflight", "1,16,256", "comma-separated calls in flight")
	apis := fs.String("api", "raw,typed,async", "comma-separated AMP APIs to measure (raw, typed; async: conn.Go, pipelined with no goroutine per call)")
	floors := fs.String("floor-mode", "batched,perwrite", "comma-separated floor modes to measure (batched, perwrite)")
	var opt runOptions
	fs.DurationVar(&opt.Duration, "duration", 3*time.Second, "measured window of each client run")
	fs.DurationVar(&opt.Warmup, "warmup", 500*time.Millisecond, "unmeasured run before each window")
	fs.IntVar(&opt.Runs, "runs", 3, "runs of each cell; the table shows the median")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	for _, s := range strings.Split(*inflight, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n < 1 {
			fmt.Fprintf(stderr, "callbench run: bad -inflight %q\n", *inflight)
			return errUsage
		}
		opt.Inflight = append(opt.Inflight, n)
	}
	for _, s := range strings.Split(*apis, ",") {
		s = strings.TrimSpace(s)
		if checkAPI(s) != nil || slices.Contains(opt.APIs, s) {
			fmt.Fprintf(stderr, "callbench run: bad -api %q\n", *apis)
			return errUsage
		}
		opt.APIs = append(opt.APIs, s)
	}
	for _, s := range strings.Split(*floors, ",") {
		s = strings.TrimSpace(s)
		if checkFloorMode(s) != nil || slices.Contains(opt.Floors, s) {
			fmt.Fprintf(stderr, "callbench run: bad -floor-mode %q\n", *floors)
			return errUsage
		}
		opt.Floors = append(opt.Floors, s)
	}
	if opt.Runs < 1 || opt.Duration <= 0 || opt.Warmup < 0 {
		fmt.Fprintln(stderr, "callbench run: -runs and -duration must be positive")
		return errUsage
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	return runBench(ctx, self, opt, stdout, stderr)
}

// column is one measured kind: a floor mode or one AMP API.
type column struct {
	kind, api string
	mode      string // floor mode
	alone     bool   // the only floor: labelled plain "floor"
	server    *benchkit.Server
}

func (c column) label() string {
	switch {
	case c.kind != "floor":
		return "amp " + c.api
	case c.alone:
		return "floor"
	}
	return "floor " + c.short()
}

// short names a floor in "% of ..." headers.
func (c column) short() string {
	switch {
	case c.alone:
		return "floor"
	case c.mode == floorPerWrite:
		return "per-write"
	}
	return c.mode
}

// runBench starts the servers, runs every client, and prints the table.
func runBench(ctx context.Context, self string, opt runOptions, stdout, stderr io.Writer) (err error) {
	started := time.Now()
	load0 := benchkit.LoadAvg()
	stderr = &benchkit.LockedWriter{W: stderr} // servers write to it concurrently
	floors := opt.Floors
	if len(floors) == 0 {
		floors = []string{floorBatched}
	}
	var cols []column
	for _, mode := range floors {
		cols = append(cols, column{kind: "floor", mode: mode, alone: len(floors) == 1})
	}
	for _, api := range opt.APIs {
		cols = append(cols, column{kind: "amp", api: api})
	}
	// Stop every server we started, whatever happens.
	var servers []*benchkit.Server
	defer func() {
		for _, s := range servers {
			if serr := s.Stop(); serr != nil && err == nil {
				err = serr
			}
		}
	}()
	for i := range cols {
		args := []string{"serve-floor", "-addr", "127.0.0.1:0"}
		if cols[i].kind == "amp" {
			args = []string{"serve-amp", "-addr", "127.0.0.1:0", "-api", cols[i].api}
		}
		s, err := benchkit.StartServer(ctx, cols[i].label(), append([]string{self}, args...), stderr, 10*time.Second)
		if err != nil {
			return err
		}
		servers = append(servers, s)
		cols[i].server = s
	}

	timeout := opt.Warmup + opt.Duration + load.WatchdogGrace + 20*time.Second
	results := make(map[int][][]load.Result) // inflight -> column -> runs
	for _, n := range opt.Inflight {
		results[n] = make([][]load.Result, len(cols))
		for run := 1; run <= opt.Runs; run++ {
			line := fmt.Sprintf("inflight %d, run %d/%d:", n, run, opt.Runs)
			for ci, col := range cols {
				args := []string{col.kind, "-addr", col.server.Addr, "-inflight", strconv.Itoa(n),
					"-duration", opt.Duration.String(), "-warmup", opt.Warmup.String()}
				if col.kind == "amp" {
					args = append(args, "-api", col.api)
				} else {
					args = append(args, "-floor-mode", col.mode)
				}
				r, err := load.RunClient(ctx, append([]string{self}, args...), timeout, stderr)
				if err != nil {
					return err
				}
				results[n][ci] = append(results[n][ci], r)
				line += fmt.Sprintf("  %s %s/s", col.label(), humanInt(r.CallsPerSec))
			}
			fmt.Fprintln(stderr, line)
		}
	}
	printTable(stdout, opt, cols, len(floors), results, started, load0)
	return nil
}

// medianRun returns the run with the median calls/s (the lower middle one
// for an even count).
func medianRun(runs []load.Result) load.Result {
	return benchkit.Median(runs, func(r load.Result) float64 { return r.CallsPerSec })
}

// printTable prints the medians and every run; cols holds nFloor floors
// first, then the AMP APIs.
func printTable(w io.Writer, opt runOptions, cols []column, nFloor int, results map[int][][]load.Result, started time.Time, load0 string) {
	fmt.Fprintf(w, "## AMP Sum calls/s on one loopback TCP connection vs a raw TCP floor\n\n")
	fmt.Fprintf(w, "- date: %s (took %s)\n", started.Format("2006-01-02 15:04:05 MST"), time.Since(started).Round(time.Second))
	fmt.Fprintf(w, "- machine: nproc %d, %s, Linux %s\n", runtime.NumCPU(), benchkit.CPUModel(), benchkit.Kernel())
	fmt.Fprintf(w, "- go: %s %s/%s, GOMAXPROCS default in each process\n", runtime.Version(), runtime.GOOS, runtime.GOARCH)
	fmt.Fprintf(w, "- load average: %s before, %s after\n", load0, benchkit.LoadAvg())
	fmt.Fprintf(w, "- each cell: median of %d runs (interleaved floor, amp ...), %v measured after %v warmup; client and server are separate processes; p50/p99 from the median run (1 call in %d timed)\n",
		opt.Runs, opt.Duration, opt.Warmup, load.SampleEvery)
	fmt.Fprintf(w, "- floor: %d-byte requests, %d-byte answers (a Sum call box and its answer), pipelined by one reader loop; the server makes one Write per Read\n", floorReqSize, floorRespSize)
	for _, c := range cols[:nFloor] {
		how := "the client writes all the refills of one Read in one Write"
		if c.mode == floorPerWrite {
			how = "the client makes one Write per request (a refill per answer, as callers sending their own calls would)"
		}
		fmt.Fprintf(w, "- %s: %s\n", c.label(), how)
	}
	fmt.Fprintln(w)

	head := []string{"in flight"}
	for _, c := range cols[:nFloor] {
		head = append(head, c.label()+" calls/s")
	}
	for _, c := range cols[nFloor:] {
		head = append(head, c.label()+" calls/s")
		for _, f := range cols[:nFloor] {
			head = append(head, "% of "+f.short())
		}
	}
	for _, c := range cols {
		head = append(head, c.label()+" p50/p99 µs")
	}
	fmt.Fprintf(w, "| %s |\n", strings.Join(head, " | "))
	seps := make([]string, len(head))
	for i := range seps {
		seps[i] = "---:"
	}
	fmt.Fprintf(w, "|%s|\n", strings.Join(seps, "|"))
	for _, n := range opt.Inflight {
		med := make([]load.Result, len(cols))
		for i := range cols {
			med[i] = medianRun(results[n][i])
		}
		row := []string{strconv.Itoa(n)}
		for _, r := range med[:nFloor] {
			row = append(row, humanInt(r.CallsPerSec))
		}
		for _, r := range med[nFloor:] {
			row = append(row, humanInt(r.CallsPerSec))
			for _, f := range med[:nFloor] {
				row = append(row, fmt.Sprintf("%.0f%%", 100*r.CallsPerSec/f.CallsPerSec))
			}
		}
		for _, r := range med {
			row = append(row, fmt.Sprintf("%s / %s", benchkit.HumanUs(r.P50us), benchkit.HumanUs(r.P99us)))
		}
		fmt.Fprintf(w, "| %s |\n", strings.Join(row, " | "))
	}

	fmt.Fprintf(w, "\nEvery run, calls/s in run order (client allocations per call at the median run):\n\n")
	head = []string{"in flight"}
	for _, c := range cols {
		head = append(head, c.label())
	}
	fmt.Fprintf(w, "| %s |\n", strings.Join(head, " | "))
	fmt.Fprintf(w, "|%s|\n", strings.Join(seps[:len(head)], "|"))
	for _, n := range opt.Inflight {
		row := []string{strconv.Itoa(n)}
		for i := range cols {
			var parts []string
			for _, r := range results[n][i] {
				parts = append(parts, humanInt(r.CallsPerSec))
			}
			row = append(row, fmt.Sprintf("%s (%.2f allocs)", strings.Join(parts, ", "), medianRun(results[n][i]).AllocsPerCall))
		}
		fmt.Fprintf(w, "| %s |\n", strings.Join(row, " | "))
	}
}

// humanInt writes 1234567.8 as 1,234,568.
func humanInt(f float64) string {
	s := strconv.FormatInt(int64(f+0.5), 10)
	var out []byte
	for i := range len(s) {
		if i > 0 && (len(s)-i)%3 == 0 {
			out = append(out, ',')
		}
		out = append(out, s[i])
	}
	return string(out)
}
