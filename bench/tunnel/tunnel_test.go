package main

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// TestMain lets the test binary play the roles run starts it in.
func TestMain(m *testing.M) {
	if role := os.Getenv(roleEnv); role != "" {
		os.Exit(roleMain(role, os.Args[1:]))
	}
	goleak.VerifyTestMain(m)
}

type logWriter struct{ t *testing.T }

func (w logWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func haveSSLH() bool {
	if _, err := exec.LookPath("sslh-select"); err == nil {
		return true
	}
	_, err := os.Stat("/usr/sbin/sslh-select")
	return err == nil
}

// TestSmallRun runs the whole tool, small: every process, every path,
// two runs (so that medians and ranges are formatted), and checks the
// report and that no child is left behind.
func TestSmallRun(t *testing.T) {
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	sslh := "select"
	if !haveSSLH() {
		sslh = "none"
		t.Log("sslh-select is not installed: the sslh path is skipped (apt-get install sslh)")
	}
	cfg, err := parseFlags([]string{"--runs", "2", "--size-mib", "3", "--conns", "5", "--sslh", sslh})
	if err != nil {
		t.Fatal(err)
	}
	cfg.progress, cfg.command, cfg.self = logWriter{t}, "go test ./tunnel/", self
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	var out bytes.Buffer
	if err := run(ctx, cfg, &out); err != nil {
		t.Fatal(err)
	}
	report := out.String()
	t.Log("\n" + report)
	want := []string{
		"## Tunnels (`bench/tunnel`)",
		"| a. ampmux forward → ampmux serve",
		"| b. Go TLS proxy pair",
		"| d. direct to the backend",
		"| a / b (goal ≥ 90% on MB/s) |",
		"| switching.Dial → ampmux serve",
		"| crypto/tls Dialer → TLS proxy server",
		"TLS 1.3",
		"- `ampmux forward --server 127.0.0.1:",
	}
	if sslh != "none" {
		want = append(want, "| c. sslh-select")
	}
	for _, w := range want {
		if !strings.Contains(report, w) {
			t.Errorf("report lacks %q", w)
		}
	}
	// The first figure of every path row must be there; CPU columns may be
	// empty on a transfer this small (10 ms clock ticks can read as zero).
	for _, line := range strings.Split(report, "\n") {
		if !strings.HasPrefix(line, "| a.") && !strings.HasPrefix(line, "| b.") && !strings.HasPrefix(line, "| d.") {
			continue
		}
		if f := strings.Split(line, "|"); len(f) > 2 && strings.TrimSpace(f[2]) == "–" {
			t.Errorf("report row has no figure: %s", line)
		}
	}
	if left := children(t); len(left) > 0 {
		t.Errorf("processes left running after run: %v", left)
	}
}

// children lists this process's live children (not zombies).
func children(t *testing.T) []string {
	t.Helper()
	stats, _ := filepath.Glob("/proc/[0-9]*/stat")
	me := strconv.Itoa(os.Getpid())
	var out []string
	for _, f := range stats {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...
		s := string(b)
		i := strings.LastIndexByte(s, ')')
		if i < 0 {
			continue
		}
		fields := strings.Fields(s[i+1:])
		if len(fields) >= 2 && fields[1] == me && fields[0] != "Z" {
			out = append(out, s[:i+1])
		}
	}
	return out
}

// fault is what badProxy does to one direction: pass at most limit bytes
// (-1: all), flip the byte at offset flipAt (-1: none), add extra at the
// end; then half-close.
type fault struct {
	limit, flipAt int64
	extra         []byte
}

var faithful = fault{limit: -1, flipAt: -1}

type flipReader struct {
	r       io.Reader
	off, at int64
}

func (f *flipReader) Read(p []byte) (int, error) {
	n, err := f.r.Read(p)
	if f.at >= f.off && f.at < f.off+int64(n) {
		p[f.at-f.off] ^= 1
	}
	f.off += int64(n)
	return n, err
}

// badProxy forwards to backend, streaming, with a fault each way.
func badProxy(t *testing.T, backend string, up, down fault) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	pass := func(dst, src net.Conn, f fault) {
		var r io.Reader = src
		if f.limit >= 0 {
			r = io.LimitReader(r, f.limit)
		}
		if f.flipAt >= 0 {
			r = &flipReader{r: r, at: f.flipAt}
		}
		io.Copy(dst, r)
		dst.Write(f.extra)
		dst.(*net.TCPConn).CloseWrite()
	}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				bc, err := net.Dial("tcp", backend)
				if err != nil {
					return
				}
				defer bc.Close()
				done := make(chan struct{})
				go func() { pass(bc, c, up); close(done) }()
				pass(c, bc, down)
				<-done
			}()
		}
	}()
	return ln.Addr().String()
}

// TestWrongBytesFail: a lost, extra or changed byte fails the measurement
// loudly.
func TestWrongBytesFail(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go serveBackend(ln)
	backend := ln.Addr().String()
	ctx := context.Background()
	const n = 1 << 20
	const hdr = 9 // an upload's request before its bytes

	// The real thing works, directly and through a faithful proxy.
	for _, addr := range []string{backend, badProxy(t, backend, faithful, faithful)} {
		if _, err := upload(ctx, addr, n); err != nil {
			t.Fatalf("upload via %s: %v", addr, err)
		}
		if _, err := download(ctx, addr, n); err != nil {
			t.Fatalf("download via %s: %v", addr, err)
		}
		if _, err := echoOnce(ctx, addr); err != nil {
			t.Fatalf("echo via %s: %v", addr, err)
		}
	}

	cases := []struct {
		name     string
		up, down fault
		upload   bool
		want     string
	}{
		{"upload short", fault{limit: hdr + n - 1, flipAt: -1}, faithful, true, "WRONG BYTE COUNT"},
		{"upload corrupted", fault{limit: -1, flipAt: hdr + n/2}, faithful, true, "WRONG DATA"},
		{"download short", faithful, fault{limit: n - 1, flipAt: -1}, false, "WRONG BYTE COUNT"},
		{"download long", faithful, fault{limit: -1, flipAt: -1, extra: []byte{0}}, false, "WRONG BYTE COUNT"},
		{"download corrupted", faithful, fault{limit: -1, flipAt: n / 2}, false, "WRONG DATA"},
	}
	for _, c := range cases {
		addr := badProxy(t, backend, c.up, c.down)
		var err error
		if c.upload {
			_, err = upload(ctx, addr, n)
		} else {
			_, err = download(ctx, addr, n)
		}
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: err = %v, want %s", c.name, err, c.want)
		}
	}
}

// TestReport formats the Markdown report from made-up results.
func TestReport(t *testing.T) {
	b := &bed{tmp: "/tmp/x", paths: []path{{"a", "A", "", nil}, {"b", "B", "", nil}, {"d", "D", "", nil}},
		cmds: []string{"ampmux serve --tls-cert /tmp/x/pki/server.pem"}}
	res := newResults()
	for _, k := range []string{"a", "b", "d"} {
		res.up[k] = []float64{900, 1000, 1100}
		res.down[k] = []float64{800, 850, 900}
		if k != "d" {
			res.upCPU[k] = []float64{2, 2.5, 3}
			res.downCPU[k] = []float64{2, 2.5, 3}
		}
		res.setupP50[k] = []time.Duration{time.Millisecond, 2 * time.Millisecond, 3 * time.Millisecond}
		res.setupP99[k] = []time.Duration{4 * time.Millisecond, 5 * time.Millisecond, 6 * time.Millisecond}
	}
	res.up["a"] = []float64{850, 950, 1000} // ratios 94%, 95%, 91%
	for _, k := range []string{libSwitch, libOptimistic, libTLS} {
		res.libDial50[k] = []time.Duration{time.Millisecond, time.Millisecond, time.Millisecond}
		res.libDial99[k], res.libEcho50[k], res.libEcho99[k] = res.libDial50[k], res.libDial50[k], res.libDial50[k]
	}
	res.libDial50[libSwitch] = []time.Duration{2 * time.Millisecond, 2 * time.Millisecond, 2 * time.Millisecond}
	cfg, err := parseFlags(nil)
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	writeMarkdown(&out, &cfg, b, res)
	s := out.String()
	for _, w := range []string{"| a / b (goal ≥ 90% on MB/s) | 94% (91%–95%) ✓ |", "2.50 (2.00–3.00)", "1.00× (1.00×–1.00×)", "2.00× (2.00×–2.00×) ✗", "`ampmux serve --tls-cert $TMP/pki/server.pem", "950 (850–1,000)", "|---|---:|---:|"} {
		if !strings.Contains(s, w) {
			t.Errorf("report lacks %q:\n%s", w, s)
		}
	}
}

func TestPercentiles(t *testing.T) {
	var ds []time.Duration
	for i := 200; i >= 1; i-- {
		ds = append(ds, time.Duration(i))
	}
	p50, p99 := percentiles(ds)
	if p50 != 100 || p99 != 198 {
		t.Fatalf("p50, p99 = %d, %d; want 100, 198", p50, p99)
	}
	if p50, p99 := percentiles([]time.Duration{7}); p50 != 7 || p99 != 7 {
		t.Fatalf("one sample: %d, %d", p50, p99)
	}
}

func TestParseFlags(t *testing.T) {
	cfg, err := parseFlags([]string{"--quick"})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.runs != 1 || cfg.size != 64<<20 {
		t.Errorf("--quick: %+v", cfg)
	}
	cfg, err = parseFlags([]string{"--quick", "--runs", "3"})
	if err != nil || cfg.runs != 3 {
		t.Errorf("--quick --runs 3: runs %d, %v", cfg.runs, err)
	}
	for _, bad := range [][]string{{"--runs", "0"}, {"--sslh", "both"}, {"--parts", "calls"}, {"extra"}} {
		if _, err := parseFlags(bad); err == nil || errors.Is(err, io.EOF) {
			t.Errorf("%v: no error", bad)
		}
	}
}
