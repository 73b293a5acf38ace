package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/ampmux/ampmux/internal/benchkit"
	"github.com/ampmux/ampmux/internal/benchkit/load"
)

// Measures, in the order run makes them.
const (
	measureKeepAlive = "keepalive" // wrk, keep-alive
	measureClose     = "close"     // wrk, Connection: close
	measureAMP       = "amp"       // callbench amp
	measureIdle      = "idle"      // RSS holding idle AMP connections
)

var allMeasures = []string{measureKeepAlive, measureClose, measureAMP, measureIdle}

// Goals: shared / direct at least this (throughput); RSS below idleGoal.
var goals = map[string]float64{measureKeepAlive: 0.97, measureClose: 0.92, measureAMP: 0.97}

const idleGoal = 150e6 // bytes: 150 MB

var modes = []string{modeShared, modeDirect}

// runOptions is what the run subcommand measures.
type runOptions struct {
	Callbench    string   // callbench binary, for the amp measure
	Wrk          string   // wrk binary
	Measures     []string // of allMeasures, in that order
	Runs         int
	Duration     time.Duration // wrk -d (whole seconds, at least 1) and callbench -duration
	Warmup       time.Duration // a wrk run of this length before a server's first measure (0: none); callbench -warmup
	Threads      int           // wrk -t
	Connections  int           // wrk -c
	AMPInflight  int
	IdleConns    int
	IdleParallel int
	Settle       time.Duration // from idle connections all answered to reading RSS
	ProfileDir   string        // if set, servers write CPU profiles there
}

func runMain(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var opt runOptions
	fs.StringVar(&opt.Callbench, "callbench", "", "callbench binary (go build ./callbench in bench/); required for the amp measure")
	fs.StringVar(&opt.Wrk, "wrk", "wrk", "wrk binary")
	measures := fs.String("modes", strings.Join(allMeasures, ","), "comma-separated measures: keepalive, close (HTTP with wrk), amp (callbench), idle (memory)")
	fs.IntVar(&opt.Runs, "runs", 3, "runs of each cell, shared and direct interleaved; the table shows the median")
	fs.DurationVar(&opt.Duration, "duration", 5*time.Second, "measured window of each wrk and callbench run (wrk: rounded up to whole seconds)")
	fs.DurationVar(&opt.Warmup, "warmup", time.Second, "unmeasured wrk run on each new server before its first HTTP measure (rounded up to whole seconds; 0: none); callbench -warmup")
	fs.IntVar(&opt.Threads, "threads", 2, "wrk -t")
	fs.IntVar(&opt.Connections, "connections", 32, "wrk -c")
	fs.IntVar(&opt.AMPInflight, "inflight", 16, "AMP calls in flight (callbench amp -inflight)")
	fs.IntVar(&opt.IdleConns, "idle-conns", 10000, "idle AMP connections the memory measure holds")
	fs.IntVar(&opt.IdleParallel, "idle-parallel", 64, "idle connections being opened at once")
	fs.DurationVar(&opt.Settle, "settle", time.Second, "wait between the last idle connection answered and reading RSS")
	fs.StringVar(&opt.ProfileDir, "cpuprofile-dir", "", "write the servers' CPU profiles to `dir` (<measure>-<shared|direct>.pprof; idle: the last run's, and its heap profile idle-<mode>.heap.pprof)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	for _, s := range strings.Split(*measures, ",") {
		s = strings.TrimSpace(s)
		if !slices.Contains(allMeasures, s) || slices.Contains(opt.Measures, s) {
			fmt.Fprintf(stderr, "muxbench run: bad -modes %q (keepalive, close, amp, idle)\n", *measures)
			return errUsage
		}
		opt.Measures = append(opt.Measures, s)
	}
	slices.SortFunc(opt.Measures, func(a, b string) int { return slices.Index(allMeasures, a) - slices.Index(allMeasures, b) })
	if opt.Runs < 1 || opt.Duration <= 0 || opt.Warmup < 0 || opt.Threads < 1 || opt.Connections < opt.Threads ||
		opt.AMPInflight < 1 || opt.IdleConns < 1 || opt.IdleParallel < 1 || opt.Settle < 0 {
		fmt.Fprintln(stderr, "muxbench run: -runs, -duration, -threads, -inflight, -idle-conns, -idle-parallel must be positive, -connections >= -threads")
		return errUsage
	}
	if slices.Contains(opt.Measures, measureAMP) && opt.Callbench == "" {
		fmt.Fprintln(stderr, "muxbench run: the amp measure needs -callbench (cd bench && go build -o /tmp/callbench ./callbench)")
		return errUsage
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	return runBench(ctx, self, opt, stdout, stderr)
}

// sample is one run of one measure on one server.
type sample struct {
	Value        float64 // requests/s, calls/s, or RSS after (bytes)
	P50us, P99us float64
	Errors       int64   // wrk socket errors
	CPUus        float64 // server CPU time per request or call, µs (user + system)
	RSSBefore    int64
	Before       serverStats
	After        serverStats
	OpenSeconds  float64 // idle: time to open and call on every connection
}

// results holds every run: measure -> mode -> runs in order.
type results map[string]map[string][]sample

func (r results) add(measure, mode string, s sample) {
	if r[measure] == nil {
		r[measure] = map[string][]sample{}
	}
	r[measure][mode] = append(r[measure][mode], s)
}

// values is each run's value, in run order.
func values(runs []sample) []float64 {
	out := make([]float64, len(runs))
	for i, s := range runs {
		out[i] = s.Value
	}
	return out
}

// median returns the run with the median value (the lower middle one for
// an even count).
func median(runs []sample) sample {
	return benchkit.Median(runs, func(s sample) float64 { return s.Value })
}

// runBench makes every measure and prints the tables.
func runBench(ctx context.Context, self string, opt runOptions, stdout, stderr io.Writer) error {
	started := time.Now()
	load0 := benchkit.LoadAvg()
	stderr = &benchkit.LockedWriter{W: stderr}
	wrkVersion := ""
	if slices.Contains(opt.Measures, measureKeepAlive) || slices.Contains(opt.Measures, measureClose) {
		path, err := exec.LookPath(opt.Wrk)
		if err != nil {
			return fmt.Errorf("wrk not found (apt-get install -y wrk): %w", err)
		}
		opt.Wrk = path
		wrkVersion = versionOf(path)
	}
	if opt.ProfileDir != "" {
		if err := os.MkdirAll(opt.ProfileDir, 0o755); err != nil {
			return err
		}
	}
	res := results{}
	for _, m := range opt.Measures {
		var err error
		if m == measureIdle {
			err = measureIdleRuns(ctx, self, opt, res, stderr)
		} else {
			err = measureThroughput(ctx, self, m, opt, res, stderr)
		}
		if err != nil {
			return err
		}
	}
	printTables(stdout, opt, res, started, load0, wrkVersion)
	return nil
}

// startServer runs "self serve -mode mode" and waits for its addresses.
func startServer(ctx context.Context, self, mode, profile string, stderr io.Writer) (*benchkit.Proc, string, string, error) {
	args := []string{"serve", "-mode", mode, "-addr", "127.0.0.1:0"}
	if profile != "" {
		args = append(args, "-cpuprofile", profile)
	}
	c, err := startChild(ctx, self, mode+" server", args, stderr)
	if err != nil {
		return nil, "", "", err
	}
	line, err := c.Expect(ctx, "LISTENING", waitTimeout)
	if err == nil {
		var kv map[string]string
		if kv, err = parseKV(line, "LISTENING"); err == nil && (kv["http"] == "" || kv["amp"] == "") {
			err = fmt.Errorf("%s server printed %q", mode, line)
		}
		if err == nil {
			return c, kv["http"], kv["amp"], nil
		}
	}
	c.Stop(5 * time.Second)
	return nil, "", "", err
}

// checkHTTP makes sure addr serves the expected body.
func checkHTTP(ctx context.Context, addr string) error {
	req, err := http.NewRequestWithContext(ctx, "GET", "http://"+addr+"/", nil)
	if err != nil {
		return err
	}
	cl := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := cl.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode != 200 || string(body) != helloBody {
		return fmt.Errorf("GET http://%s/ answered %s %q", addr, resp.Status, body)
	}
	return nil
}

// wrkSeconds rounds d up to wrk's whole seconds.
func wrkSeconds(d time.Duration) int { return max(1, int(math.Ceil(d.Seconds()))) }

// runWrk runs wrk against addr for d.
func runWrk(ctx context.Context, opt runOptions, addr string, closeEach bool, d time.Duration) (wrkResult, error) {
	secs := wrkSeconds(d)
	args := []string{"-t", strconv.Itoa(opt.Threads), "-c", strconv.Itoa(opt.Connections), "-d", strconv.Itoa(secs) + "s", "--latency"}
	if closeEach {
		args = append(args, "-H", "Connection: close")
	}
	args = append(args, "http://"+addr+"/")
	out, err := runTool(ctx, opt.Wrk, args, time.Duration(secs)*time.Second+30*time.Second)
	if err != nil {
		return wrkResult{}, err
	}
	r, err := parseWrk(out)
	if err != nil {
		return r, err
	}
	if r.Non2xx > 0 || r.Requests == 0 {
		return r, fmt.Errorf("wrk %s: %d requests, %d not 2xx/3xx", strings.Join(args, " "), r.Requests, r.Non2xx)
	}
	return r, nil
}

// runTool runs a measuring process and returns its stdout.
func runTool(ctx context.Context, bin string, args []string, timeout time.Duration) (string, error) {
	cctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := exec.CommandContext(cctx, bin, args...)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	cmd.WaitDelay = 2 * time.Second
	if err := cmd.Run(); err != nil {
		msg := strings.TrimSpace(errOut.String())
		if ctx.Err() == nil && cctx.Err() != nil {
			msg += fmt.Sprintf(" (killed after %v)", timeout)
		}
		return "", fmt.Errorf("%s %s: %v: %s", filepath.Base(bin), strings.Join(args, " "), err, msg)
	}
	return out.String(), nil
}

// runCallbench runs "callbench amp" against addr.
func runCallbench(ctx context.Context, opt runOptions, addr string, stderr io.Writer) (sample, error) {
	r, err := load.RunClient(ctx, []string{opt.Callbench, "amp", "-addr", addr, "-inflight", strconv.Itoa(opt.AMPInflight), "-api", "raw",
		"-duration", opt.Duration.String(), "-warmup", opt.Warmup.String()}, opt.Warmup+opt.Duration+40*time.Second, stderr)
	return sample{Value: r.CallsPerSec, P50us: r.P50us, P99us: r.P99us}, err
}

// measureThroughput runs one HTTP or AMP measure: a shared and a direct
// server for it, runs interleaved.
func measureThroughput(ctx context.Context, self, measure string, opt runOptions, res results, stderr io.Writer) (err error) {
	type target struct {
		mode, addr string
		srv        *benchkit.Proc
	}
	var targets []target
	defer func() {
		for _, t := range targets {
			if serr := t.srv.Stop(10 * time.Second); serr != nil && err == nil {
				err = serr
			}
		}
	}()
	for _, mode := range modes {
		profile := ""
		if opt.ProfileDir != "" {
			profile = filepath.Join(opt.ProfileDir, measure+"-"+mode+".pprof")
		}
		srv, httpAddr, ampAddr, err := startServer(ctx, self, mode, profile, stderr)
		if err != nil {
			return err
		}
		t := target{mode: mode, addr: httpAddr, srv: srv}
		if measure == measureAMP {
			t.addr = ampAddr
		}
		targets = append(targets, t)
		if measure != measureAMP {
			if err := checkHTTP(ctx, httpAddr); err != nil {
				return fmt.Errorf("%s server: %w", mode, err)
			}
			if opt.Warmup > 0 {
				if _, err := runWrk(ctx, opt, httpAddr, measure == measureClose, opt.Warmup); err != nil {
					return fmt.Errorf("warm-up: %w", err)
				}
			}
		}
	}
	for run := 1; run <= opt.Runs; run++ {
		line := fmt.Sprintf("%s, run %d/%d:", measure, run, opt.Runs)
		for _, t := range targets {
			st0, err := stats(ctx, t.srv)
			if err != nil {
				return err
			}
			var s sample
			if measure == measureAMP {
				s, err = runCallbench(ctx, opt, t.addr, stderr)
			} else {
				var w wrkResult
				w, err = runWrk(ctx, opt, t.addr, measure == measureClose, opt.Duration)
				s = sample{Value: w.ReqPerSec, P50us: w.P50us, P99us: w.P99us, Errors: w.SocketErrors}
			}
			if err != nil {
				return err
			}
			st1, err := stats(ctx, t.srv)
			if err != nil {
				return err
			}
			ops := st1.Requests - st0.Requests
			if measure == measureAMP {
				ops = st1.Calls - st0.Calls
			}
			if ops > 0 {
				s.CPUus = float64(st1.CPUus-st0.CPUus) / float64(ops)
			}
			res.add(measure, t.mode, s)
			line += fmt.Sprintf("  %s %s/s (server %.1f µs CPU each)", t.mode, benchkit.HumanInt(s.Value), s.CPUus)
		}
		fmt.Fprintln(stderr, line)
	}
	return nil
}

// measureIdleRuns measures memory: for each run and mode, a fresh server,
// RSS before, the idle client's connections opened and answered, RSS after.
func measureIdleRuns(ctx context.Context, self string, opt runOptions, res results, stderr io.Writer) error {
	for run := 1; run <= opt.Runs; run++ {
		line := fmt.Sprintf("idle, run %d/%d:", run, opt.Runs)
		for _, mode := range modes {
			profile := ""
			if opt.ProfileDir != "" {
				profile = filepath.Join(opt.ProfileDir, measureIdle+"-"+mode+".pprof")
			}
			s, err := measureIdleOnce(ctx, self, mode, profile, opt, stderr)
			if err != nil {
				return err
			}
			res.add(measureIdle, mode, s)
			line += fmt.Sprintf("  %s %s (%.1f KB/conn)", mode, benchkit.HumanMB(s.Value), perConnKB(s, opt.IdleConns))
		}
		fmt.Fprintln(stderr, line)
	}
	return nil
}

func measureIdleOnce(ctx context.Context, self, mode, profile string, opt runOptions, stderr io.Writer) (s sample, err error) {
	srv, _, ampAddr, err := startServer(ctx, self, mode, profile, stderr)
	if err != nil {
		return s, err
	}
	defer func() {
		if serr := srv.Stop(30 * time.Second); serr != nil && err == nil {
			err = serr
		}
	}()
	pid := srv.Pid()
	if err := sleep(ctx, 200*time.Millisecond); err != nil {
		return s, err
	}
	if s.Before, err = stats(ctx, srv); err != nil {
		return s, err
	}
	if s.RSSBefore, err = benchkit.RSS(pid); err != nil {
		return s, err
	}
	cl, err := startChild(ctx, self, "idle client", []string{"idle", "-addr", ampAddr,
		"-conns", strconv.Itoa(opt.IdleConns), "-parallel", strconv.Itoa(opt.IdleParallel)}, stderr)
	if err != nil {
		return s, err
	}
	defer func() {
		if cerr := cl.Stop(30 * time.Second); cerr != nil && err == nil {
			err = cerr
		}
	}()
	line, err := cl.Expect(ctx, "READY", waitTimeout+time.Duration(opt.IdleConns)*time.Millisecond)
	if err != nil {
		return s, err
	}
	kv, err := parseKV(line, "READY")
	if err != nil {
		return s, err
	}
	if s.OpenSeconds, err = strconv.ParseFloat(kv["seconds"], 64); err != nil {
		return s, fmt.Errorf("idle client: %q: %w", line, err)
	}
	if err := sleep(ctx, opt.Settle); err != nil {
		return s, err
	}
	rss, err := benchkit.RSS(pid)
	if err != nil {
		return s, err
	}
	s.Value = float64(rss)
	if s.After, err = stats(ctx, srv); err != nil {
		return s, err
	}
	if s.After.AMPConns != int64(opt.IdleConns) {
		return s, fmt.Errorf("%s server holds %d AMP connections, want %d", mode, s.After.AMPConns, opt.IdleConns)
	}
	if profile != "" {
		if err := heapProfile(ctx, srv, strings.TrimSuffix(profile, ".pprof")+".heap.pprof"); err != nil {
			return s, err
		}
	}
	return s, nil
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func perConnKB(s sample, conns int) float64 {
	return (s.Value - float64(s.RSSBefore)) / float64(conns) / 1e3
}

func printTables(w io.Writer, opt runOptions, res results, started time.Time, load0, wrkVersion string) {
	fmt.Fprintf(w, "## Port sharing: HTTP and AMP through one mux.New port vs each on its own port\n\n")
	fmt.Fprintf(w, "- date: %s (took %s)\n", started.Format("2006-01-02 15:04:05 MST"), time.Since(started).Round(time.Second))
	fmt.Fprintf(w, "- machine: nproc %d, %s, Linux %s\n", runtime.NumCPU(), benchkit.CPUModel(), benchkit.Kernel())
	fmt.Fprintf(w, "- go: %s %s/%s, GOMAXPROCS default in each process", runtime.Version(), runtime.GOOS, runtime.GOARCH)
	if wrkVersion != "" {
		fmt.Fprintf(w, "; %s", wrkVersion)
	}
	fmt.Fprintf(w, "\n- load average: %s before, %s after\n", load0, benchkit.LoadAvg())
	fmt.Fprintf(w, "- each cell: median of %d runs, shared and direct interleaved (shared, direct, shared, direct ...); servers, wrk and clients are separate processes on loopback\n", opt.Runs)
	fmt.Fprintf(w, "- shared: mux.New(l, mux.Config{HTTP: httpfallback.Server(h), AMP: conn.Server}) on one port; direct: the same two servers, each on a plain port of its own; shared / own: the median of the per-run ratios\n")
	has := func(m string) bool { return len(res[m]) > 0 }
	if has(measureKeepAlive) || has(measureClose) {
		fmt.Fprintf(w, "- HTTP: h writes a %d-byte body; wrk -t%d -c%d -d%ds --latency (new connection: -H 'Connection: close'); a fresh pair of servers per HTTP row", len(helloBody), opt.Threads, opt.Connections, wrkSeconds(opt.Duration))
		if opt.Warmup > 0 {
			fmt.Fprintf(w, ", warmed by an unmeasured %ds wrk run each", wrkSeconds(opt.Warmup))
		}
		fmt.Fprintln(w)
	}
	if has(measureAMP) {
		fmt.Fprintf(w, "- AMP: callbench amp -inflight %d -api raw -duration %v -warmup %v (one connection; Sum answered inline through the box API)\n", opt.AMPInflight, opt.Duration, opt.Warmup)
	}
	if has(measureIdle) {
		fmt.Fprintf(w, "- idle: a fresh server per run; a client process opens %s TCP connections (%d at a time), makes one Sum call on each and holds them; server VmRSS before, and %v after the last answer; MB = 10^6 bytes, KB = 10^3\n", benchkit.HumanInt(float64(opt.IdleConns)), opt.IdleParallel, opt.Settle)
	}
	fmt.Fprintln(w)

	names := map[string]string{
		measureKeepAlive: "HTTP keep-alive",
		measureClose:     "HTTP new connection per request",
		measureAMP:       fmt.Sprintf("AMP Sum, %d in flight", opt.AMPInflight),
		measureIdle:      "server RSS, idle connections",
	}
	units := map[string]string{measureKeepAlive: ", requests/s", measureClose: ", requests/s", measureAMP: ", calls/s"}
	var measured []string
	for _, m := range opt.Measures {
		if has(m) {
			measured = append(measured, m)
		}
	}
	kb := func(s sample) float64 { return perConnKB(s, opt.IdleConns) }
	goalT := benchkit.Table{Head: []string{"measure", "shared port", "own port", "shared / own", "goal", "met"}}
	latT := benchkit.Table{Head: []string{"measure", "shared p50 / p99", "own p50 / p99", "shared CPU µs", "own CPU µs", "shared / own CPU"}}
	runsT := benchkit.Table{Head: []string{"measure", "shared port", "own port"}}
	for _, m := range measured {
		sh, di := median(res[m][modeShared]), median(res[m][modeDirect])
		runs := []string{names[m] + units[m]}
		for _, mode := range modes {
			var parts []string
			errs := int64(0)
			for _, s := range res[m][mode] {
				if m == measureIdle {
					parts = append(parts, benchkit.HumanMB(s.Value))
				} else {
					parts = append(parts, benchkit.HumanInt(s.Value))
				}
				errs += s.Errors
			}
			cell := strings.Join(parts, ", ")
			if errs > 0 {
				cell += fmt.Sprintf(" (wrk socket errors: %d)", errs)
			}
			runs = append(runs, cell)
		}
		runsT.Add(runs...)
		if m == measureIdle {
			goalT.Add(fmt.Sprintf("server RSS holding %s idle AMP connections", benchkit.HumanInt(float64(opt.IdleConns))), benchkit.HumanMB(sh.Value), benchkit.HumanMB(di.Value),
				fmt.Sprintf("%+.1f%%", 100*(benchkit.PairedRatio(values(res[m][modeShared]), values(res[m][modeDirect]))-1)), fmt.Sprintf("< %.0f MB (shared)", idleGoal/1e6), yesNo(sh.Value < idleGoal))
			goalT.Add("RSS growth per idle connection", fmt.Sprintf("%.1f KB", kb(sh)), fmt.Sprintf("%.1f KB", kb(di)), fmt.Sprintf("%+.1f KB", kb(sh)-kb(di)), "", "")
			continue
		}
		ratio := benchkit.PairedRatio(values(res[m][modeShared]), values(res[m][modeDirect]))
		goalT.Add(names[m]+units[m], benchkit.HumanInt(sh.Value), benchkit.HumanInt(di.Value), fmt.Sprintf("%.1f%%", 100*ratio), fmt.Sprintf(">= %.0f%%", 100*goals[m]), yesNo(ratio >= goals[m]))
		latT.Add(names[m], benchkit.HumanUs(sh.P50us)+" / "+benchkit.HumanUs(sh.P99us), benchkit.HumanUs(di.P50us)+" / "+benchkit.HumanUs(di.P99us),
			fmt.Sprintf("%.1f", sh.CPUus), fmt.Sprintf("%.1f", di.CPUus), benchkit.Ratio(sh.CPUus, di.CPUus, true))
	}
	goalT.Write(w)
	if len(latT.Rows) > 0 {
		fmt.Fprintf(w, "\nAt the median run: latency p50 / p99 µs (wrk --latency; callbench times 1 call in 16), and the server's CPU time (user + system, getrusage) per request or call over the whole run:\n\n")
		latT.Write(w)
	}
	if has(measureIdle) {
		fmt.Fprintf(w, "\nIdle connections at the median run (Go figures from runtime.ReadMemStats in the server, after):\n\n")
		t := benchkit.Table{Head: []string{"server", "RSS before", "RSS after", "per conn", "AMP conns", "goroutines", "heap in use", "stacks in use", "Go sys", "opening took"}}
		for _, mode := range modes {
			s := median(res[measureIdle][mode])
			mb := func(v int64) string { return benchkit.HumanMB(float64(v)) }
			t.Add(mode, mb(s.RSSBefore), benchkit.HumanMB(s.Value), fmt.Sprintf("%.1f KB", kb(s)), benchkit.HumanInt(float64(s.After.AMPConns)), benchkit.HumanInt(float64(s.After.Goroutines)),
				mb(s.After.HeapInuse), mb(s.After.StackInuse), mb(s.After.Sys), fmt.Sprintf("%.2f s", s.OpenSeconds))
		}
		t.Write(w)
	}
	fmt.Fprintf(w, "\nEvery run, in run order:\n\n")
	runsT.Write(w)
}

func yesNo(ok bool) string {
	if ok {
		return "yes"
	}
	return "**no**"
}

// versionOf returns the first line wrk -v prints ("wrk 4.1.0 ...").
func versionOf(bin string) string {
	out, _ := exec.Command(bin, "-v").CombinedOutput()
	line, _, _ := strings.Cut(string(out), "\n")
	line = strings.TrimSpace(line)
	if i := strings.Index(line, " Copyright"); i > 0 {
		line = line[:i]
	}
	return line
}
