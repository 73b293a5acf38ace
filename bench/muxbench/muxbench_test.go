package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/ampmux/ampmux/amp/box"
	"github.com/ampmux/ampmux/amp/conn"
)

// TestMain lets the test binary stand in for muxbench when run re-executes
// itself (see TestRunSubprocesses).
func TestMain(m *testing.M) {
	if os.Getenv("MUXBENCH_AS_MAIN") == "1" {
		main()
		os.Exit(0)
	}
	goleak.VerifyTestMain(m)
}

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

const wrkKeepAlive = `Running 1s test @ http://127.0.0.1:41313/
  2 threads and 32 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     1.15ms    1.42ms  12.83ms   87.01%
    Req/Sec    20.23k     2.12k   23.63k    60.00%
  Latency Distribution
     50%  664.00us
     75%    1.63ms
     90%    2.96ms
     99%    6.65ms
  40253 requests in 1.00s, 4.99MB read
Requests/sec:  40183.44
Transfer/sec:      4.98MB
`

const wrkClose = `Running 5s test @ http://127.0.0.1:1/
  2 threads and 32 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     5.86ms    4.12ms  39.09ms   79.04%
    Req/Sec     2.45k   511.14     3.81k    70.00%
  Latency Distribution
     50%    5.27ms
     75%    7.52ms
     90%   10.06ms
     99%    1.02s
  24968 requests in 5.02s, 722.88KB read
  Socket errors: connect 2, read 5, write 0, timeout 1
  Non-2xx or 3xx responses: 3
Requests/sec:   4973.92
Transfer/sec:    706.28KB
`

func TestParseWrk(t *testing.T) {
	r, err := parseWrk(wrkKeepAlive)
	if err != nil {
		t.Fatal(err)
	}
	want := wrkResult{Requests: 40253, Seconds: 1, ReqPerSec: 40183.44, P50us: 664, P99us: 6650}
	if r != want {
		t.Fatalf("parsed %+v, want %+v", r, want)
	}
	r, err = parseWrk(wrkClose)
	if err != nil {
		t.Fatal(err)
	}
	want = wrkResult{Requests: 24968, Seconds: 5.02, ReqPerSec: 4973.92, P50us: 5270, P99us: 1.02e6, SocketErrors: 8, Non2xx: 3}
	if r != want {
		t.Fatalf("parsed %+v, want %+v", r, want)
	}
	if _, err := parseWrk("unable to connect to 127.0.0.1:1 Connection refused\n"); err == nil {
		t.Fatal("accepted a report without results")
	}
}

func sumCall(t *testing.T, addr string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := conn.Dial(ctx, "tcp", addr, &conn.Config{Logger: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	args := box.FromMap(map[string]string{"a": "13", "b": "81"})
	var reply box.Box
	if err := c.CallBox(ctx, "Sum", args, &reply); err != nil {
		t.Fatal(err)
	}
	if reply.GetString("total") != "94" {
		t.Fatalf("Sum(13, 81) answered %v", reply.String())
	}
}

// Both modes serve the body over HTTP and Sum over AMP; shared on one port.
func TestServerModes(t *testing.T) {
	for _, mode := range modes {
		s, err := startBenchServer(mode, "127.0.0.1:0", quiet())
		if err != nil {
			t.Fatal(err)
		}
		if (s.httpAddr == s.ampAddr) != (mode == modeShared) {
			t.Errorf("%s: HTTP on %s, AMP on %s", mode, s.httpAddr, s.ampAddr)
		}
		if err := checkHTTP(context.Background(), s.httpAddr); err != nil {
			t.Errorf("%s: %v", mode, err)
		}
		sumCall(t, s.ampAddr)
		s.Close()
	}
	if _, err := startBenchServer("sideways", "127.0.0.1:0", quiet()); err == nil {
		t.Fatal("mode sideways accepted")
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("still not %s after 5s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// The idle client's connections are answered and held by the AMP server
// behind the mux.
func TestIdleClient(t *testing.T) {
	s, err := startBenchServer(modeShared, "127.0.0.1:0", quiet())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	conns, err := openIdle(context.Background(), s.ampAddr, 100, 16)
	if err != nil {
		t.Fatal(err)
	}
	if len(conns) != 100 || s.stats().AMPConns != 100 {
		t.Fatalf("%d connections open, the server holds %d", len(conns), s.stats().AMPConns)
	}
	closeAll(conns)
	waitFor(t, "all closed", func() bool { return s.ampConns.Load() == 0 })

	// No server there: the client fails.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l.Close()
	if _, err := openIdle(context.Background(), l.Addr().String(), 3, 2); err == nil {
		t.Fatal("no server: no error")
	}
}

// serve prints LISTENING, answers stats and heap on stdin, and returns
// when stdin closes.
func TestServeSubcommand(t *testing.T) {
	stdinR, stdinW := io.Pipe()
	stdoutR, stdoutW := io.Pipe()
	prof := filepath.Join(t.TempDir(), "cpu.pprof")
	done := make(chan error, 1)
	go func() {
		done <- dispatch(context.Background(), []string{"serve", "-mode", "shared", "-cpuprofile", prof}, stdinR, stdoutW, io.Discard)
		stdoutW.Close()
	}()
	out := bufio.NewReader(stdoutR)
	line, err := out.ReadString('\n')
	if err != nil {
		t.Fatal(err)
	}
	kv, err := parseKV(line, "LISTENING")
	if err != nil || kv["http"] == "" || kv["http"] != kv["amp"] {
		t.Fatalf("serve printed %q (%v)", line, err)
	}
	sumCall(t, kv["amp"])
	heap := filepath.Join(t.TempDir(), "heap.pprof")
	io.WriteString(stdinW, "stats\nheap "+heap+"\n")
	line, err = out.ReadString('\n')
	if err != nil {
		t.Fatal(err)
	}
	st, err := parseStats(line)
	if err != nil || st.Goroutines == 0 || st.HeapInuse == 0 || st.CPUus <= 0 || st.Calls < 1 {
		t.Fatalf("stats line %q: %+v, %v", line, st, err)
	}
	if line, err = out.ReadString('\n'); err != nil || strings.TrimSpace(line) != "DONE heap "+heap {
		t.Fatalf("heap answered %q, %v", line, err)
	}
	stdinW.Close()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("still serving 5s after stdin closed")
	}
	for _, p := range []string{prof, heap} {
		if st, err := os.Stat(p); err != nil || st.Size() == 0 {
			t.Fatalf("no profile %s: %v", p, err)
		}
	}
}

// buildCallbench builds bench/callbench, whose amp client run uses.
func buildCallbench(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "callbench")
	cmd := exec.Command("go", "build", "-o", bin, "../callbench")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build ../callbench: %v\n%s", err, out)
	}
	return bin
}

// The orchestrator, end to end and tiny: servers and idle clients are this
// test binary (through TestMain), the AMP load is callbench, HTTP is wrk.
func TestRunSubprocesses(t *testing.T) {
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv("MUXBENCH_AS_MAIN", "1")
	// Under -race every child would sleep 1 s before exiting; races it
	// finds still fail it (exit status 66), which fails the run.
	t.Setenv("GORACE", "atexit_sleep_ms=0")
	opt := runOptions{Callbench: buildCallbench(t), Wrk: "wrk", Runs: 1, Duration: 200 * time.Millisecond,
		Warmup: 0, Threads: 1, Connections: 4, AMPInflight: 4, IdleConns: 100, IdleParallel: 8,
		Settle: 20 * time.Millisecond, ProfileDir: t.TempDir()}
	want := []string{
		"| AMP Sum, 4 in flight, calls/s | ",
		"| server RSS holding 100 idle AMP connections | ",
		"| RSS growth per idle connection | ",
		"| shared | ", "| direct | ",
		"| measure | shared p50 / p99 | own p50 / p99 | shared CPU µs | own CPU µs | shared / own CPU |",
		"- machine: nproc ",
	}
	if _, err := exec.LookPath("wrk"); err != nil {
		t.Log("wrk is not installed: HTTP measures skipped (apt-get install wrk)")
		opt.Measures = []string{measureAMP, measureIdle}
	} else {
		opt.Measures = allMeasures
		want = append(want, "| HTTP keep-alive, requests/s | ", "| HTTP new connection per request, requests/s | ")
	}
	var out, errOut bytes.Buffer
	if err := runBench(context.Background(), self, opt, &out, &errOut); err != nil {
		t.Fatalf("%v\nstderr:\n%s", err, errOut.String())
	}
	t.Logf("\n%s\n%s", errOut.String(), out.String())
	for _, w := range want {
		if !strings.Contains(out.String(), w) {
			t.Errorf("table lacks %q", w)
		}
	}
	for _, m := range opt.Measures {
		for _, mode := range modes {
			p := filepath.Join(opt.ProfileDir, m+"-"+mode+".pprof")
			if st, err := os.Stat(p); err != nil || st.Size() == 0 {
				t.Errorf("no CPU profile %s: %v", p, err)
			}
		}
	}
}

// A failing load generator fails the run, and the servers are stopped.
func TestRunFailsLoudly(t *testing.T) {
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv("MUXBENCH_AS_MAIN", "1")
	// Under -race every child would sleep 1 s before exiting; races it
	// finds still fail it (exit status 66), which fails the run.
	t.Setenv("GORACE", "atexit_sleep_ms=0")
	opt := runOptions{Callbench: "/bin/false", Measures: []string{measureAMP}, Runs: 1, Duration: 100 * time.Millisecond,
		AMPInflight: 1, IdleConns: 1, IdleParallel: 1}
	var out, errOut bytes.Buffer
	err = runBench(context.Background(), self, opt, &out, &errOut)
	if err == nil || !strings.Contains(err.Error(), "false") {
		t.Fatalf("callbench /bin/false gave %v", err)
	}
	if out.Len() != 0 {
		t.Fatalf("printed a table after failing:\n%s", out.String())
	}
}

func TestRunFlags(t *testing.T) {
	for _, args := range [][]string{
		{"-modes", "keepalive,bogus"},
		{"-modes", "amp"}, // no -callbench
		{"-runs", "0"},
		{"-threads", "4", "-connections", "2"},
		{"extra"},
	} {
		var errOut bytes.Buffer
		if err := dispatch(context.Background(), append([]string{"run"}, args...), nil, io.Discard, &errOut); !errors.Is(err, errUsage) {
			t.Errorf("run %q: %v", args, err)
		}
	}
	for _, args := range [][]string{{"serve", "-mode", "sideways"}, {"idle"}, {"nonsense"}, {}} {
		if err := dispatch(context.Background(), args, nil, io.Discard, io.Discard); !errors.Is(err, errUsage) {
			t.Errorf("%q: %v", args, err)
		}
	}
}

// A goal is judged on the median of the per-run ratios (shared and direct
// take turns in every run), not on the ratio of the medians.
func TestGoalsOnPairedRatios(t *testing.T) {
	res := results{}
	for i, v := range [][2]float64{{30, 42}, {43, 39}, {40, 44}} {
		res.add(measureKeepAlive, modeShared, sample{Value: v[0]})
		res.add(measureKeepAlive, modeDirect, sample{Value: v[1]})
		res.add(measureAMP, modeShared, sample{Value: 100 + float64(i)})
		res.add(measureAMP, modeDirect, sample{Value: 100})
	}
	var out bytes.Buffer
	printTables(&out, runOptions{Runs: 3, Measures: allMeasures, AMPInflight: 16}, res, time.Now(), "0 0 0", "")
	for _, want := range []string{
		// Medians 40 and 42 (95.2%), but the runs' ratios 71%, 110%, 91%.
		"| HTTP keep-alive, requests/s | 40 | 42 | 90.9% | >= 97% | **no** |",
		"| AMP Sum, 16 in flight, calls/s | 101 | 100 | 101.0% | >= 97% | yes |",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("tables lack %q:\n%s", want, out.String())
		}
	}
}
