package main

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ampmux/ampmux/amp"
	"github.com/ampmux/ampmux/amp/box"
	"github.com/ampmux/ampmux/amp/conn"
	"github.com/ampmux/ampmux/internal/benchkit"
	"github.com/ampmux/ampmux/internal/benchkit/load"
)

// rvServer is a loopback AMP server (conn.Server) whose Sum is h; kill
// closes every connection it accepted (RST).
type rvServer struct {
	addr  string
	mu    sync.Mutex
	ncs   []net.Conn
	first chan struct{} // closed when the first connection's first bytes arrive (raw mode)
}

func (s *rvServer) kill() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, nc := range s.ncs {
		if tc, ok := nc.(*net.TCPConn); ok {
			tc.SetLinger(0)
		}
		nc.Close()
	}
}

func rvStart(t *testing.T, h amp.BoxHandler) *rvServer {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &rvServer{addr: l.Addr().String(), first: make(chan struct{})}
	var srv *conn.Server
	if h != nil {
		m := amp.NewMux()
		m.HandleBoxInline("Sum", h)
		srv = &conn.Server{Config: conn.Config{Handler: m, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}}
	}
	var wg sync.WaitGroup
	var once sync.Once
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			nc, err := l.Accept()
			if err != nil {
				return
			}
			s.mu.Lock()
			s.ncs = append(s.ncs, nc)
			s.mu.Unlock()
			if srv != nil {
				srv.ServeConn(nc)
				continue
			}
			// Raw: read and never answer.
			wg.Add(1)
			go func() {
				defer wg.Done()
				buf := make([]byte, 4096)
				for {
					n, err := nc.Read(buf)
					if n > 0 {
						once.Do(func() { close(s.first) })
					}
					if err != nil {
						return
					}
				}
			}()
		}
	}()
	t.Cleanup(func() {
		l.Close()
		s.kill()
		if srv != nil {
			srv.Close()
		}
		wg.Wait()
	})
	return s
}

func rvRunAsync(e *env, args ...string) chan int {
	done := make(chan int, 1)
	go func() { done <- run(e, args) }()
	return done
}

func rawSumOK(ctx context.Context, req, resp *box.Box) error { return benchkit.RawSum(ctx, req, resp) }

// A server that closes the connection mid-run: exit 1, "lost", summary.
func TestReviewBenchServerCloses(t *testing.T) {
	ctNoLeaks(t)
	for _, pipe := range []bool{false, true} {
		var n atomic.Int64
		var s *rvServer
		killed := make(chan struct{})
		var once sync.Once
		s = rvStart(t, func(ctx context.Context, req, resp *box.Box) error {
			if n.Add(1) == 2000 {
				once.Do(func() { close(killed) })
			}
			return benchkit.RawSum(ctx, req, resp)
		})
		go func() { <-killed; s.kill() }()
		args := []string{"bench", "--server", s.addr, "--duration", "30s", "--concurrency", "8", "--connections", "1", "--json"}
		if pipe {
			args = append(args, "--pipeline")
		}
		start := time.Now()
		code, stdout, stderr := ctRun(args...)
		t.Logf("pipeline=%v: exit %d after %v\nstdout: %s\nstderr: %s", pipe, code, time.Since(start), stdout, stderr)
		var rep benchReport
		if err := json.Unmarshal([]byte(stdout), &rep); err != nil || code != exitFailure || !strings.Contains(stderr, "lost during the run") {
			t.Errorf("pipeline=%v: exit %d, json err %v", pipe, code, err)
		}
		if rep.Errors != 1 {
			t.Errorf("pipeline=%v: errors=%d for one lost connection", pipe, rep.Errors)
		}
	}
}

// Every call answered with an error, in --json and --result-line modes.
func TestReviewBenchAllErrors(t *testing.T) {
	ctNoLeaks(t)
	s := rvStart(t, func(context.Context, *box.Box, *box.Box) error {
		return &amp.RemoteError{Code: "NOPE", Description: "always"}
	})
	for _, mode := range []string{"--json", "--result-line"} {
		code, stdout, stderr := ctRun("bench", "--server", s.addr, "--duration", "200ms", "--pipeline", "--concurrency", "4", mode)
		t.Logf("%s: exit %d\nstdout: %s\nstderr: %s", mode, code, stdout, stderr)
		if code != exitFailure || !strings.Contains(stderr, "every call failed (first error: NOPE: always)") {
			t.Errorf("%s: exit %d stderr %q", mode, code, stderr)
		}
	}
}

// A server that never answers: the watchdog ends the run (after
// duration+10 s), exit 1.
func TestReviewBenchNeverAnswers(t *testing.T) {
	ctNoLeaks(t)
	for _, pipe := range []bool{false, true} {
		s := rvStart(t, nil)
		args := []string{"bench", "--server", s.addr, "--duration", "200ms", "--concurrency", "2", "--result-line"}
		if pipe {
			args = append(args, "--pipeline")
		}
		start := time.Now()
		code, stdout, stderr := ctRun(args...)
		t.Logf("pipeline=%v: exit %d after %v\nstdout: %s\nstderr: %s", pipe, code, time.Since(start), stdout, stderr)
		if code != exitFailure || !strings.Contains(stderr, "watchdog") {
			t.Errorf("pipeline=%v: exit %d", pipe, code)
		}
	}
}

var rvProgress = regexp.MustCompile(`(?m)^\[1s\] \d+ calls`)

// Ctrl-C during the measured window, --json and --result-line.
func TestReviewBenchInterruptOutputs(t *testing.T) {
	ctNoLeaks(t)
	s := rvStart(t, rawSumOK)
	for _, mode := range []string{"--json", "--result-line"} {
		ctx, cancel := context.WithCancel(context.Background())
		stdout, stderr := &logBuf{}, &logBuf{}
		done := rvRunAsync(&env{ctx: ctx, stdout: stdout, stderr: stderr}, "bench", "--server", s.addr, "--duration", "1m", "--concurrency", "2", "--pipeline", mode)
		stderr.waitMatch(t, rvProgress)
		cancel()
		code := <-done
		t.Logf("%s: exit %d\nstdout: %s\nstderr: %s", mode, code, stdout, stderr)
		out := stdout.String()
		switch mode {
		case "--json":
			var rep benchReport
			if err := json.Unmarshal([]byte(out), &rep); err != nil || !rep.Interrupted {
				t.Errorf("json %v %+v", err, rep)
			}
			if rep.Errors != 0 {
				t.Errorf("--json: interrupted run, no call failed, reports errors=%d", rep.Errors)
			}
		case "--result-line":
			r, err := load.ParseResult(strings.TrimSpace(out))
			if err != nil {
				t.Fatal(err)
			}
			if r.Errors != 0 {
				t.Errorf("--result-line: interrupted run, no call failed, reports errors=%d", r.Errors)
			}
		}
		if code != 0 {
			t.Errorf("%s: exit %d", mode, code)
		}
	}
}

// Review finding: Ctrl-C during the warm-up, against a healthy server,
// said "every call failed (first error: )".
func TestReviewBenchInterruptWarmup(t *testing.T) {
	ctNoLeaks(t)
	s := rvStart(t, rawSumOK)
	ctx, cancel := context.WithCancel(context.Background())
	stdout, stderr := &logBuf{}, &logBuf{}
	done := rvRunAsync(&env{ctx: ctx, stdout: stdout, stderr: stderr}, "bench", "--server", s.addr, "--warmup", "1m", "--duration", "1m", "--concurrency", "2")
	stderr.waitMatch(t, rvProgress)
	cancel()
	code := <-done
	t.Logf("exit %d\nstdout: %s\nstderr: %s", code, stdout, stderr)
	if strings.Contains(stderr.String(), "every call failed") {
		t.Errorf("Ctrl-C in the warm-up, no call failed, says: %s", stderr)
	}
}

// Review finding: Ctrl-C while the server does not answer stopped only
// when the watchdog fired (duration+10 s); it stops at once.
func TestReviewBenchInterruptStuckServer(t *testing.T) {
	ctNoLeaks(t)
	s := rvStart(t, nil)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stdout, stderr := &logBuf{}, &logBuf{}
	done := rvRunAsync(&env{ctx: ctx, stdout: stdout, stderr: stderr}, "bench", "--server", s.addr, "--duration", "1h", "--concurrency", "2")
	<-s.first // a call is in flight
	cancel()
	start := time.Now()
	select {
	case code := <-done:
		t.Logf("exit %d after %v", code, time.Since(start))
		return
	case <-time.After(5 * time.Second): // a bound, not an ordering
	}
	t.Errorf("bench still running 5s after Ctrl-C (it waits for the watchdog, at 1h+10s); releasing it by closing the server's sockets")
	s.kill()
	code := <-done
	t.Logf("after the server closed: exit %d\nstdout: %s\nstderr: %s", code, stdout, stderr)
}

// Review finding: a declared error only during the warm-up gave a summary
// of 0 errors with a first error; the first error is the window's.
func TestReviewBenchWarmupErrorOnly(t *testing.T) {
	ctNoLeaks(t)
	var n atomic.Int64
	s := rvStart(t, func(ctx context.Context, req, resp *box.Box) error {
		if n.Add(1) == 1 {
			return &amp.RemoteError{Code: "EARLY", Description: "only the first call"}
		}
		return benchkit.RawSum(ctx, req, resp)
	})
	code, stdout, stderr := ctRun("bench", "--server", s.addr, "--warmup", "200ms", "--duration", "200ms", "--concurrency", "1", "--json")
	t.Logf("exit %d\nstdout: %s\nstderr: %s", code, stdout, stderr)
	var rep benchReport
	if err := json.Unmarshal([]byte(stdout), &rep); err != nil {
		t.Fatal(err)
	}
	if rep.Errors == 0 && rep.FirstError != "" {
		t.Errorf("errors=0 but first_error=%q (an error of the warm-up, not counted)", rep.FirstError)
	}
}

// Every answer wrong (total 95): tolerated, exit 1 "every call failed".
func TestReviewBenchWrongAnswers(t *testing.T) {
	ctNoLeaks(t)
	s := rvStart(t, func(_ context.Context, _, resp *box.Box) error {
		resp.SetString("total", "95")
		return nil
	})
	for _, pipe := range []string{"--pipeline=false", "--pipeline"} {
		code, stdout, stderr := ctRun("bench", "--server", s.addr, "--duration", "200ms", "--concurrency", "3", pipe)
		t.Logf("%s: exit %d\nstdout: %s\nstderr: %s", pipe, code, stdout, stderr)
		if code != exitFailure || !strings.Contains(stderr, "every call failed (first error: benchkit: wrong answer") {
			t.Errorf("%s: exit %d", pipe, code)
		}
	}
}
