package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/ampmux/ampmux/internal/benchkit"
	"github.com/ampmux/ampmux/internal/benchkit/load"
)

// tools are the binaries and scripts the comparison runs.
type tools struct {
	Callbench  string // go build ./callbench (bench/)
	Ampmux     string // go build ./cmd/ampmux: serve --demo and ampmux bench ("": those contenders are left out)
	RPC        string // go build ./rpc (bench/): grpc-go and net/rpc
	Python     string // a python3 with Twisted
	TwistedDir string // bench/twisted
	Go         string // go, for go tool pprof
}

type runOptions struct {
	tools
	Inflight    []int
	Runs        int
	Duration    time.Duration
	Warmup      time.Duration
	ScaleConns  int    // 0: no scale measure
	Profile     bool   // profile ampmux where a goal is missed
	ProfileDir  string // where profiles go ("": a temporary directory)
	PprofNodes  int
	JSON        string // write the figures there too
	Contenders  []string
	ProfileTime time.Duration
}

// A contender is one client against one server.
type contender struct {
	id, label string
	server    string // key in serverArgs
	note      string
}

// Contenders of the one-connection measure, in run order (interleaved
// within each run).
var contenders = []contender{
	{"amp-raw", "ampmux raw", "amp-raw", "callbench amp -api raw → callbench serve-amp -api raw (Conn.CallBox, reused boxes; inline box responder)"},
	{"amp-typed", "ampmux typed", "amp-typed", "callbench amp -api typed → callbench serve-amp -api typed (Command.Call; amp.HandleInline)"},
	{"amp-async", "ampmux async", "amp-raw", "callbench amp -api async → callbench serve-amp -api raw (Conn.Go: each answer's callback, on the reader goroutine, sends the next call; no goroutine per call)"},
	{"twisted", "Twisted AMP", "twisted", "bench/twisted/client.py → bench/twisted/server.py (Twisted, callRemote / @responder, epoll reactor)"},
	{"grpc", "grpc-go", "grpc", "rpc grpc → rpc serve (grpc-go unary, h2c with insecure credentials, raw-bytes codec: two varints in, one out; default options: static 1 MiB windows and shared write buffers were tried and were no faster)"},
	{"netrpc", "net/rpc", "netrpc", "rpc netrpc → rpc serve-netrpc (the standard library's net/rpc: rpc.Client.Call / rpc.Server.ServeConn, gob codec over plain TCP, Calc.Sum(SumArgs{A, B}) → SumReply{Total})"},
	{"floor-batched", "floor batched", "floor", "callbench floor -floor-mode batched → callbench serve-floor (raw TCP, 44-byte requests / 29-byte answers; all the refills of one read in one write)"},
	{"floor-perwrite", "floor per-write", "floor", "callbench floor -floor-mode perwrite → callbench serve-floor (one write per 44-byte request)"},
	{"twisted-to-amp", "Twisted → ampmux", "amp-raw", "bench/twisted/client.py → callbench serve-amp -api raw (interop)"},
	{"amp-to-twisted", "ampmux → Twisted", "twisted", "callbench amp -api raw → bench/twisted/server.py (interop)"},
	{"demo-raw", "callbench raw → serve --demo", "serve-demo", "callbench amp -api raw → ampmux serve --demo (its Sum takes and returns *big.Int, amp.HandleInline)"},
	{"demo-async", "callbench async → serve --demo", "serve-demo", "callbench amp -api async → ampmux serve --demo"},
	{"demo-bench", "ampmux bench → serve --demo", "serve-demo", "ampmux bench (a goroutine per caller, Conn.CallBox, every answer checked, 1 call in 16 timed, progress line) → ampmux serve --demo"},
	{"demo-bench-pipeline", "ampmux bench --pipeline → serve --demo", "serve-demo", "ampmux bench --pipeline (Conn.Go slots) → ampmux serve --demo"},
}

// needsAmpmux: the contenders of ampmux bench against ampmux serve --demo
// (and the goals' "a|b" series of them).
func needsAmpmux(id string) bool {
	first, _, _ := strings.Cut(id, "|")
	return contenderByID(contenders, first).server == "serve-demo"
}

// Series of goals: "a|b" is, in each run, the faster of a and b.
var seriesLabels = map[string]string{
	"demo-bench|demo-bench-pipeline": "ampmux bench → serve --demo, its faster mode",
	"demo-raw|demo-async":            "the fastest callbench client → serve --demo",
}

// label names a contender or a goal's series.
func label(id string) string {
	if l, ok := seriesLabels[id]; ok {
		return l
	}
	return contenderByID(contenders, id).label
}

// Contenders of the scale measure.
var scaleContenders = []contender{
	{"amp-raw", "ampmux raw", "amp-raw", "callbench amp -conns {N} -api raw: conn.Dial per connection, Conn.CallBox → callbench serve-amp -api raw"},
	{"twisted", "Twisted AMP", "twisted", "bench/twisted/client.py --conns {N} --inflight {N} → bench/twisted/server.py"},
	{"grpc", "grpc-go", "grpc", "rpc grpc -conns {N} -inflight {N}: a grpc.ClientConn (one HTTP/2 connection) each → rpc serve"},
	{"netrpc", "net/rpc", "netrpc", "rpc netrpc -conns {N} -inflight {N}: an rpc.Client (one TCP connection, gob) each → rpc serve-netrpc"},
	{"floor", "floor", "floor", "callbench floor -conns {N}: write 44 bytes, read 29, on each raw TCP connection → callbench serve-floor"},
}

func contenderByID(list []contender, id string) contender {
	for _, c := range list {
		if c.id == id {
			return c
		}
	}
	return contender{id: id, label: id}
}

func (o runOptions) serverArgs(key string) []string {
	switch key {
	case "amp-raw":
		return []string{o.Callbench, "serve-amp", "-addr", "127.0.0.1:0", "-api", "raw"}
	case "amp-typed":
		return []string{o.Callbench, "serve-amp", "-addr", "127.0.0.1:0", "-api", "typed"}
	case "floor":
		return []string{o.Callbench, "serve-floor", "-addr", "127.0.0.1:0"}
	case "grpc":
		return []string{o.RPC, "serve", "-addr", "127.0.0.1:0"}
	case "netrpc":
		return []string{o.RPC, "serve-netrpc", "-addr", "127.0.0.1:0"}
	case "twisted":
		return []string{o.Python, filepath.Join(o.TwistedDir, "server.py")}
	case "serve-demo":
		return []string{o.Ampmux, "serve", "--demo", "--listen", "127.0.0.1:0", "--no-access-log"}
	}
	panic("unknown server " + key)
}

func secs(d time.Duration) string { return strconv.FormatFloat(d.Seconds(), 'f', -1, 64) }

// clientArgs is contender c's client at n in flight on one connection.
func (o runOptions) clientArgs(id, addr string, n int) []string {
	common := []string{"-addr", addr, "-inflight", strconv.Itoa(n), "-duration", o.Duration.String(), "-warmup", o.Warmup.String()}
	py := []string{o.Python, filepath.Join(o.TwistedDir, "client.py"), "--addr", addr, "--inflight", strconv.Itoa(n),
		"--duration", secs(o.Duration), "--warmup", secs(o.Warmup)}
	switch id {
	case "amp-raw", "amp-to-twisted":
		return append(append([]string{o.Callbench, "amp"}, common...), "-api", "raw")
	case "amp-typed":
		return append(append([]string{o.Callbench, "amp"}, common...), "-api", "typed")
	case "amp-async":
		return append(append([]string{o.Callbench, "amp"}, common...), "-api", "async")
	case "floor-batched":
		return append(append([]string{o.Callbench, "floor"}, common...), "-floor-mode", "batched")
	case "floor-perwrite":
		return append(append([]string{o.Callbench, "floor"}, common...), "-floor-mode", "perwrite")
	case "grpc":
		return append([]string{o.RPC, "grpc"}, common...)
	case "netrpc":
		return append([]string{o.RPC, "netrpc"}, common...)
	case "twisted", "twisted-to-amp":
		return py
	case "demo-raw":
		return append(append([]string{o.Callbench, "amp"}, common...), "-api", "raw")
	case "demo-async":
		return append(append([]string{o.Callbench, "amp"}, common...), "-api", "async")
	case "demo-bench", "demo-bench-pipeline":
		argv := []string{o.Ampmux, "bench", "--server", addr, "--concurrency", strconv.Itoa(n),
			"--duration", o.Duration.String(), "--warmup", o.Warmup.String(), "--result-line"}
		if id == "demo-bench-pipeline" {
			argv = append(argv, "--pipeline")
		}
		return argv
	}
	panic("unknown contender " + id)
}

// scaleArgs is contender id's client with n connections, one call in
// flight on each.
func (o runOptions) scaleArgs(id, addr string, n int) []string {
	ns := strconv.Itoa(n)
	common := []string{"-addr", addr, "-conns", ns, "-duration", o.Duration.String(), "-warmup", o.Warmup.String()}
	switch id {
	case "amp-raw":
		return append(append([]string{o.Callbench, "amp"}, common...), "-api", "raw")
	case "floor":
		return append([]string{o.Callbench, "floor"}, common...)
	case "grpc":
		return append(append([]string{o.RPC, "grpc"}, common...), "-inflight", ns)
	case "netrpc":
		return append(append([]string{o.RPC, "netrpc"}, common...), "-inflight", ns)
	case "twisted":
		return []string{o.Python, filepath.Join(o.TwistedDir, "client.py"), "--addr", addr, "--inflight", ns, "--conns", ns,
			"--duration", secs(o.Duration), "--warmup", secs(o.Warmup)}
	}
	panic("unknown scale contender " + id)
}

// sample is one client run and what its server spent meanwhile.
type sample struct {
	load.Result
	ServerCPUus    float64 `json:"server_cpu_us"`    // server CPU per call (≈: over warm-up and window)
	ServerSyscalls float64 `json:"server_syscalls"`  // server read+write syscalls per call (≈)
	ServerRSS      int64   `json:"server_rss_bytes"` // server RSS at the end of the run
}

// Report is everything measured; assemble reads it back from -json.
type Report struct {
	Started     time.Time                   `json:"started"`
	Seconds     float64                     `json:"seconds"`
	Machine     Machine                     `json:"machine"`
	Inflight    []int                       `json:"inflight"`
	Runs        int                         `json:"runs"`
	Duration    time.Duration               `json:"duration"`
	Warmup      time.Duration               `json:"warmup"`
	Contenders  []string                    `json:"contenders"`
	Results     map[int]map[string][]sample `json:"results"`
	ScaleConns  int                         `json:"scale_conns"`
	Scale       map[string][]sample         `json:"scale"`
	Goals       []GoalResult                `json:"goals"`
	Profiles    []Profile                   `json:"profiles"`
	ProfileTime time.Duration               `json:"profile_duration"`
}

// Machine describes where the figures come from.
type Machine struct {
	NProc   int    `json:"nproc"`
	CPU     string `json:"cpu"`
	Kernel  string `json:"kernel"`
	Go      string `json:"go"`
	Python  string `json:"python"`
	Twisted string `json:"twisted"`
	GRPC    string `json:"grpc"`
	Load0   string `json:"load_before"`
	Load1   string `json:"load_after"`
}

// Goal is a ratio ampmux (its raw API unless Who says otherwise) must
// reach against a contender at a level.
type Goal struct {
	Other    string  `json:"other"`
	Inflight int     `json:"inflight"`
	Min      float64 `json:"min"`
	Percent  bool    `json:"percent"`       // show as % (floors) rather than ×
	Who      string  `json:"who,omitempty"` // the ampmux contender; "" is amp-raw
}

func (g Goal) who() string {
	if g.Who == "" {
		return "amp-raw"
	}
	return g.Who
}

// Goals of issues 2 and 6 (2-core machine). The floor goals are set for
// RPC-style callers (the raw API); the pipelined API (Conn.Go) is held to
// the same ones to show what the protocol reaches without a goroutine per
// call.
var goals = []Goal{
	{"twisted", 16, 15, false, ""}, {"twisted", 256, 40, false, ""},
	{"grpc", 16, 6, false, ""}, {"grpc", 256, 15, false, ""},
	{"floor-batched", 1, 0.8, true, ""}, {"floor-batched", 16, 0.8, true, ""}, {"floor-batched", 256, 0.4, true, ""},
	{"floor-perwrite", 1, 0.8, true, ""}, {"floor-perwrite", 16, 0.8, true, ""}, {"floor-perwrite", 256, 0.4, true, ""},
	{"floor-batched", 1, 0.8, true, "amp-async"}, {"floor-batched", 16, 0.8, true, "amp-async"}, {"floor-batched", 256, 0.4, true, "amp-async"},
	// Issue 14: ampmux bench against serve --demo reaches 90% of the
	// fastest benchmark client; and of callbench in the same mode.
	{"demo-raw|demo-async", 16, 0.9, true, "demo-bench|demo-bench-pipeline"}, {"demo-raw|demo-async", 256, 0.9, true, "demo-bench|demo-bench-pipeline"},
	{"demo-raw", 16, 0.9, true, "demo-bench"}, {"demo-raw", 256, 0.9, true, "demo-bench"},
	{"demo-async", 16, 0.9, true, "demo-bench-pipeline"}, {"demo-async", 256, 0.9, true, "demo-bench-pipeline"},
}

// GoalResult is a goal and what the run found.
type GoalResult struct {
	Goal
	Label  string  `json:"label"`
	Ampmux float64 `json:"ampmux"`
	Value  float64 `json:"value"` // the contender's calls/s
	Ratio  float64 `json:"ratio"` // median of the per-run ratios
	Met    bool    `json:"met"`
}

// Profile is the top of a CPU profile of ampmux at a level where a goal
// was missed.
type Profile struct {
	Inflight int    `json:"inflight"`
	Side     string `json:"side"` // client or server
	File     string `json:"file"`
	Top      string `json:"top"`
	Summary  string `json:"summary"`
	Calls    int64  `json:"calls_per_sec"`
}

func runMain(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o runOptions
	fs.StringVar(&o.Callbench, "callbench", "", "callbench binary (go build ./callbench in bench/)")
	fs.StringVar(&o.RPC, "rpc", "", "rpc binary (go build ./rpc in bench/)")
	fs.StringVar(&o.Ampmux, "ampmux", "", "ampmux binary (go build ./cmd/ampmux), for ampmux bench against serve --demo (default: left out)")
	fs.StringVar(&o.Python, "python", "/usr/bin/python3", "a python3 with Twisted")
	fs.StringVar(&o.TwistedDir, "twisted-dir", "", "directory of client.py and server.py (bench/twisted)")
	fs.StringVar(&o.Go, "go", "go", "go command, for go tool pprof")
	inflight := fs.String("inflight", "1,16,256", "comma-separated calls in flight on one connection")
	only := fs.String("contenders", "", "comma-separated contenders to measure (default all): "+contenderIDs())
	fs.IntVar(&o.Runs, "runs", 3, "runs of each cell (contenders interleaved within a run); tables show the median")
	fs.DurationVar(&o.Duration, "duration", 2*time.Second, "measured window of each client run")
	fs.DurationVar(&o.Warmup, "warmup", 500*time.Millisecond, "unmeasured run before each window")
	fs.IntVar(&o.ScaleConns, "scale-conns", 1000, "connections of the scale measure, one call in flight each (0: skip it)")
	fs.BoolVar(&o.Profile, "profile", true, "where a goal is missed, profile ampmux (client and server) at that level and show the top")
	fs.StringVar(&o.ProfileDir, "profile-dir", "", "keep the profiles there (default: a temporary directory, removed)")
	fs.DurationVar(&o.ProfileTime, "profile-duration", 0, "measured window of a profiled run (default -duration)")
	fs.IntVar(&o.PprofNodes, "pprof-nodes", 15, "entries of go tool pprof -top shown per profile")
	fs.StringVar(&o.JSON, "json", "", "also write every figure as JSON to `file` (read by assemble)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	for _, s := range strings.Split(*inflight, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n < 1 || slices.Contains(o.Inflight, n) {
			fmt.Fprintf(stderr, "report run: bad -inflight %q\n", *inflight)
			return errUsage
		}
		o.Inflight = append(o.Inflight, n)
	}
	if *only == "" {
		for _, c := range contenders {
			if o.Ampmux != "" || !needsAmpmux(c.id) {
				o.Contenders = append(o.Contenders, c.id)
			}
		}
	} else {
		for _, s := range strings.Split(*only, ",") {
			s = strings.TrimSpace(s)
			if contenderByID(contenders, s).server == "" || slices.Contains(o.Contenders, s) || needsAmpmux(s) && o.Ampmux == "" {
				fmt.Fprintf(stderr, "report run: bad -contenders %q (%s)\n", *only, contenderIDs())
				return errUsage
			}
			o.Contenders = append(o.Contenders, s)
		}
	}
	if missing := o.missingTools(); len(missing) > 0 {
		fmt.Fprintf(stderr, "report run: these contenders need %s\n", strings.Join(missing, ", "))
		return errUsage
	}
	if o.Runs < 1 || o.Duration <= 0 || o.Warmup < 0 || o.ScaleConns < 0 || o.PprofNodes < 1 {
		fmt.Fprintln(stderr, "report run: -runs, -duration, -pprof-nodes must be positive")
		return errUsage
	}
	if o.ProfileTime <= 0 {
		o.ProfileTime = o.Duration
	}
	rep, err := measure(ctx, o, stderr)
	if err != nil {
		return err
	}
	if o.JSON != "" {
		data, err := json.MarshalIndent(rep, "", "  ")
		if err != nil {
			return err
		}
		if err := os.WriteFile(o.JSON, data, 0o644); err != nil {
			return err
		}
	}
	fmt.Fprintf(stdout, "## Goals\n\n")
	writeGoals(stdout, rep, nil)
	fmt.Fprintln(stdout)
	writeRPC(stdout, rep)
	writeProfiles(stdout, rep)
	return nil
}

// missingTools names the flags the chosen measures need and lack.
func (o runOptions) missingTools() []string {
	servers := map[string]bool{}
	for _, id := range o.Contenders {
		servers[contenderByID(contenders, id).server] = true
	}
	if o.ScaleConns > 0 {
		for _, c := range scaleContenders {
			servers[c.server] = true
		}
	}
	var missing []string
	need := func(flag, have string, keys ...string) {
		for _, k := range keys {
			if servers[k] && have == "" {
				missing = append(missing, flag)
				return
			}
		}
	}
	need("-callbench", o.Callbench, "amp-raw", "amp-typed", "floor", "serve-demo")
	need("-rpc", o.RPC, "grpc", "netrpc")
	need("-twisted-dir", o.TwistedDir, "twisted")
	return missing
}

func contenderIDs() string {
	var ids []string
	for _, c := range contenders {
		ids = append(ids, c.id)
	}
	return strings.Join(ids, ",")
}

// measure starts the servers, runs every client, and profiles ampmux where
// a goal is missed.
func measure(ctx context.Context, o runOptions, stderr io.Writer) (rep *Report, err error) {
	stderr = &benchkit.LockedWriter{W: stderr}
	rep = &Report{
		Started:     time.Now(),
		Inflight:    o.Inflight,
		Runs:        o.Runs,
		Duration:    o.Duration,
		Warmup:      o.Warmup,
		Contenders:  o.Contenders,
		Results:     map[int]map[string][]sample{},
		ScaleConns:  o.ScaleConns,
		Scale:       map[string][]sample{},
		ProfileTime: o.ProfileTime,
	}
	rep.Machine = machine(o)

	// One server of each kind, started before any client and kept.
	servers := map[string]*benchkit.Proc{}
	defer func() {
		for _, s := range servers {
			if serr := s.Stop(serverGrace); serr != nil && err == nil {
				err = serr
			}
		}
	}()
	need := func(key string) (*benchkit.Proc, error) {
		if s := servers[key]; s != nil {
			return s, nil
		}
		s, err := startServer(ctx, key, o.serverArgs(key), stderr)
		if err != nil {
			return nil, err
		}
		servers[key] = s
		return s, nil
	}
	for _, id := range o.Contenders {
		if _, err := need(contenderByID(contenders, id).server); err != nil {
			return nil, err
		}
	}
	if o.ScaleConns > 0 {
		for _, c := range scaleContenders {
			if _, err := need(c.server); err != nil {
				return nil, err
			}
		}
	}

	timeout := o.Warmup + o.Duration + load.WatchdogGrace + 60*time.Second
	one := func(srv *benchkit.Proc, argv []string) (sample, error) {
		cpu0, err0 := srv.CPUTime(false)
		io0, err1 := readIO(srv.Pid())
		r, err := load.RunClient(ctx, argv, timeout, stderr)
		if err != nil {
			return sample{}, err
		}
		s := sample{Result: r}
		cpu1, err2 := srv.CPUTime(false)
		io1, err3 := readIO(srv.Pid())
		s.ServerRSS, _ = srv.RSS()
		approxCalls := r.CallsPerSec * (o.Warmup + o.Duration).Seconds()
		if approxCalls > 0 && errors.Join(err0, err2) == nil {
			s.ServerCPUus = float64(cpu1-cpu0) / 1e3 / approxCalls
		}
		if approxCalls > 0 && errors.Join(err1, err3) == nil {
			s.ServerSyscalls = float64(io1-io0) / approxCalls
		}
		return s, nil
	}

	for _, n := range o.Inflight {
		rep.Results[n] = map[string][]sample{}
		for run := 1; run <= o.Runs; run++ {
			line := fmt.Sprintf("in flight %d, run %d/%d:", n, run, o.Runs)
			for _, id := range rotate(o.Contenders, run-1) {
				srv := servers[contenderByID(contenders, id).server]
				s, err := one(srv, o.clientArgs(id, srv.Addr, n))
				if err != nil {
					return nil, err
				}
				rep.Results[n][id] = append(rep.Results[n][id], s)
				line += fmt.Sprintf("  %s %s/s", id, benchkit.HumanInt(s.CallsPerSec))
			}
			fmt.Fprintln(stderr, line)
		}
	}
	if o.ScaleConns > 0 {
		for run := 1; run <= o.Runs; run++ {
			line := fmt.Sprintf("scale %d conns, run %d/%d:", o.ScaleConns, run, o.Runs)
			for _, c := range rotate(scaleContenders, run-1) {
				srv := servers[c.server]
				s, err := one(srv, o.scaleArgs(c.id, srv.Addr, o.ScaleConns))
				if err != nil {
					return nil, err
				}
				rep.Scale[c.id] = append(rep.Scale[c.id], s)
				line += fmt.Sprintf("  %s %s/s", c.id, benchkit.HumanInt(s.CallsPerSec))
			}
			fmt.Fprintln(stderr, line)
		}
	}
	for _, s := range servers {
		if serr := s.Stop(serverGrace); serr != nil {
			return nil, serr
		}
	}
	servers = nil
	rep.Goals = evalGoals(rep)

	if o.Profile {
		missed := map[int]bool{}
		for _, g := range rep.Goals {
			if !g.Met && !needsAmpmux(g.who()) { // the profiles are of callbench's amp-raw
				missed[g.Inflight] = true
			}
		}
		for _, n := range o.Inflight {
			if !missed[n] {
				continue
			}
			ps, err := profileAt(ctx, o, n, stderr)
			if err != nil {
				return nil, fmt.Errorf("profiling at %d in flight: %w", n, err)
			}
			rep.Profiles = append(rep.Profiles, ps...)
		}
	}
	rep.Machine.Load1 = benchkit.LoadAvg()
	rep.Seconds = time.Since(rep.Started).Seconds()
	return rep, nil
}

// serverGrace is how long a server has to exit once told to stop.
const serverGrace = 5 * time.Second

// startServer runs a benchmark server and waits for its LISTENING line;
// its output goes to stderr after its name.
func startServer(ctx context.Context, key string, argv []string, stderr io.Writer) (*benchkit.Proc, error) {
	spec := benchkit.Spec{Name: key + " server", Argv: argv, Ready: benchkit.Listening, Log: benchkit.PrefixWriter(stderr, key+" server: ")}
	if key == "serve-demo" {
		spec.StopSignal = syscall.SIGTERM // serve stops on SIGTERM, not on stdin's end
	}
	return benchkit.Start(ctx, spec)
}

// rotate returns s started at its k-th element (mod len), so that no
// contender always runs first or last.
func rotate[T any](s []T, k int) []T {
	if len(s) == 0 {
		return s
	}
	k %= len(s)
	return append(slices.Clone(s[k:]), s[:k]...)
}

// median returns the run with the median calls/s (the lower middle one for
// an even count).
func median(runs []sample) sample {
	if len(runs) == 0 {
		return sample{}
	}
	return benchkit.Median(runs, func(s sample) float64 { return s.CallsPerSec })
}

// evalGoals checks every goal whose level and contender were measured.
// A goal's ratio is the median of the ratios within each run (the two
// take turns in every run, so a slow moment of the shared machine hits
// both), which can differ from the ratio of the two medians.
func evalGoals(rep *Report) []GoalResult {
	var out []GoalResult
	for _, g := range goals {
		a, v := series(rep.Results[g.Inflight], g.who()), series(rep.Results[g.Inflight], g.Other)
		if len(a) == 0 || len(a) != len(v) {
			continue
		}
		r := GoalResult{Goal: g, Label: label(g.Other), Ampmux: medianOf(a), Value: medianOf(v), Ratio: benchkit.PairedRatio(a, v)}
		r.Met = r.Ratio >= g.Min
		out = append(out, r)
	}
	return out
}

// series is the calls/s of each run of id at one level; "a|b" is the
// faster of a and b in each run. Nil if any part was not measured.
func series(res map[string][]sample, id string) []float64 {
	var out []float64
	for i, part := range strings.Split(id, "|") {
		runs := res[part]
		if len(runs) == 0 || (i > 0 && len(runs) != len(out)) {
			return nil
		}
		if i == 0 {
			out = make([]float64, len(runs))
		}
		for k, s := range runs {
			out[k] = max(out[k], s.CallsPerSec)
		}
	}
	return out
}

func medianOf(xs []float64) float64 { return benchkit.Median(xs, func(x float64) float64 { return x }) }

// readIO is the read and write syscalls the process made so far
// (/proc/<pid>/io syscr + syscw).
func readIO(pid int) (int64, error) {
	data, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "io"))
	if err != nil {
		return 0, err
	}
	var total int64
	found := 0
	for line := range strings.Lines(string(data)) {
		k, v, ok := strings.Cut(line, ":")
		if !ok || (k != "syscr" && k != "syscw") {
			continue
		}
		n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
		if err != nil {
			return 0, err
		}
		total += n
		found++
	}
	if found != 2 {
		return 0, errors.New("no syscr/syscw in /proc io")
	}
	return total, nil
}

// profileAt runs ampmux raw once at n in flight with CPU profiles on both
// sides, and returns the top of each.
func profileAt(ctx context.Context, o runOptions, n int, stderr io.Writer) ([]Profile, error) {
	dir := o.ProfileDir
	if dir == "" {
		tmp, err := os.MkdirTemp("", "ampmux-bench-prof")
		if err != nil {
			return nil, err
		}
		defer os.RemoveAll(tmp)
		dir = tmp
	} else if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	sp := filepath.Join(dir, fmt.Sprintf("amp-raw-server-%d.pprof", n))
	cp := filepath.Join(dir, fmt.Sprintf("amp-raw-client-%d.pprof", n))
	srv, err := startServer(ctx, "profiled amp-raw", append(o.serverArgs("amp-raw"), "-cpuprofile", sp), stderr)
	if err != nil {
		return nil, err
	}
	po := o
	po.Duration = o.ProfileTime
	argv := append(po.clientArgs("amp-raw", srv.Addr, n), "-cpuprofile", cp)
	r, err := load.RunClient(ctx, argv, o.Warmup+o.ProfileTime+load.WatchdogGrace+30*time.Second, stderr)
	if serr := srv.Stop(serverGrace); err == nil {
		err = serr
	}
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(stderr, "profiled ampmux raw at %d in flight: %s calls/s (profiling on)\n", n, benchkit.HumanInt(r.CallsPerSec))
	var out []Profile
	for _, p := range []struct{ side, file string }{{"client", cp}, {"server", sp}} {
		top, err := pprofTop(ctx, o.Go, o.Callbench, p.file, o.PprofNodes)
		if err != nil {
			return nil, err
		}
		all, err := pprofTop(ctx, o.Go, o.Callbench, p.file, 0)
		if err != nil {
			return nil, err
		}
		out = append(out, Profile{Inflight: n, Side: p.side, File: p.file, Top: top, Summary: summarize(all), Calls: int64(r.CallsPerSec)})
	}
	return out, nil
}

// pprofTop runs go tool pprof -top and returns its output from the
// "Duration:" line on; nodes 0 lists every function, none dropped.
func pprofTop(ctx context.Context, goCmd, bin, profile string, nodes int) (string, error) {
	args := []string{"tool", "pprof", "-top", "-nodecount=" + strconv.Itoa(nodes)}
	if nodes == 0 {
		args = []string{"tool", "pprof", "-top", "-nodefraction=0", "-edgefraction=0"}
	}
	cmd := exec.CommandContext(ctx, goCmd, append(args, bin, profile)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("go tool pprof -top %s: %v: %s", profile, err, out)
	}
	s := string(out)
	if i := strings.Index(s, "Duration:"); i >= 0 {
		s = s[i:]
	}
	return strings.TrimRight(s, "\n"), nil
}

// categories sort the flat CPU of a profile into where it goes, by
// substrings of function names.
var categories = []struct {
	name string
	fns  []string
}{
	{"syscalls (read, write, epoll_wait)", []string{"internal/runtime/syscall", "syscall.Syscall", "syscall.RawSyscall", "syscall.syscall",
		"syscall.rawsyscall", "runtime.write1", "runtime.read", "runtime.epollwait", "EpollWait"}},
	{"futex and other scheduler sleeps and wake-ups", []string{"runtime.futex", "runtime.usleep", "runtime.osyield", "runtime.nanosleep"}},
}

// summarize adds up the flat % of a full pprof -top by category.
func summarize(top string) string {
	sums := make([]float64, len(categories))
	for line := range strings.Lines(top) {
		f := strings.Fields(line)
		if len(f) < 6 || !strings.HasSuffix(f[1], "%") {
			continue
		}
		pct, err := strconv.ParseFloat(strings.TrimSuffix(f[1], "%"), 64)
		if err != nil {
			continue
		}
		name := strings.Join(f[5:], " ")
		for i, c := range categories {
			for _, p := range c.fns {
				if strings.Contains(name, p) {
					sums[i] += pct
					goto next
				}
			}
		}
	next:
	}
	var parts []string
	rest := 100.0 // flat% adds up to 100: nothing is dropped
	for i, c := range categories {
		parts = append(parts, fmt.Sprintf("%s %.0f%%", c.name, sums[i]))
		rest -= sums[i]
	}
	parts = append(parts, fmt.Sprintf("everything else (AMP code, scheduler, GC) %.0f%%", rest))
	return strings.Join(parts, "; ")
}

// machine describes this machine and the contenders' versions.
func machine(o runOptions) Machine {
	m := Machine{NProc: runtime.NumCPU(), CPU: benchkit.CPUModel(), Kernel: benchkit.Kernel(), Go: goVersion(o.Go), Load0: benchkit.LoadAvg()}
	if out, err := exec.Command(o.Python, "-c", "import sys, twisted; print(sys.version.split()[0], twisted.__version__)").Output(); err == nil {
		if f := strings.Fields(string(out)); len(f) == 2 {
			m.Python, m.Twisted = f[0], f[1]
		}
	}
	if out, err := exec.Command(o.RPC, "version").Output(); err == nil {
		m.GRPC = strings.TrimSpace(string(out))
	}
	return m
}

func goVersion(goCmd string) string {
	out, err := exec.Command(goCmd, "env", "GOVERSION").Output()
	if err != nil {
		return "?"
	}
	return strings.TrimSpace(string(out))
}
