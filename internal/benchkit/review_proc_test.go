package benchkit

import (
	"context"
	"errors"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// Findings of a review of the process manager, each a test.

// manyTags prints more tagged lines than Proc buffers, with nobody to
// Expect them.
const manyTags = `i=0; while [ $i -lt 200 ]; do echo "STATS n=$i"; i=$((i+1)); done; `

// waitDone fails t unless p's Done closes; the bound only detects a hang.
func waitDone(t *testing.T, p *Proc) {
	t.Helper()
	select {
	case <-p.Done():
	case <-time.After(20 * time.Second):
		t.Fatalf("%s: Done never closed", p.Name)
	}
}

// A reader blocked on a full tagged channel never reached Wait: Kill
// reported a live child, Done never closed and the goroutine leaked.
func TestReviewKillWithUnreadTags(t *testing.T) {
	needSh(t)
	// stderr says when the lines are in the pipe, whoever reads them.
	sig := &lineSignal{prefix: "printed", got: make(chan string, 1)}
	p, err := Start(context.Background(), Spec{Name: "chatty", Tags: []string{"STATS"}, Log: sig,
		Argv: []string{"sh", "-c", manyTags + "echo printed >&2; exec cat"}})
	if err != nil {
		t.Fatal(err)
	}
	<-sig.got
	p.Kill()
	waitDone(t, p)
}

// The same for Stop: a child that exits cleanly once asked must not be
// reported killed because its tagged lines went unread.
func TestReviewStopWithUnreadTags(t *testing.T) {
	needSh(t)
	p, err := Start(context.Background(), Spec{Name: "chatty", Tags: []string{"STATS"}, Argv: []string{"sh", "-c", manyTags + "cat >/dev/null; echo STATS last"}})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Stop(20 * time.Second); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if tail := p.Tail(1); tail != "STATS last" {
		t.Errorf("the unread tagged lines did not reach the log: tail %q", tail)
	}
}

// lineSignal reports, once, the first line written to it that starts
// with prefix.
type lineSignal struct {
	prefix string
	once   sync.Once
	got    chan string
}

func (w *lineSignal) Write(p []byte) (int, error) {
	for s := range strings.Lines(string(p)) {
		if rest, ok := strings.CutPrefix(strings.TrimSpace(s), w.prefix); ok {
			w.once.Do(func() { w.got <- rest })
		}
	}
	return len(p), nil
}

// KillAll while a Start waits for a ready line: the Start used to wait out
// its timeout (30 s) and its child outlived KillAll.
func TestReviewKillAllStopsStartInFlight(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("reads /proc")
	}
	var ps Procs
	sig := &lineSignal{prefix: "started ", got: make(chan string, 1)}
	errc := make(chan error, 1)
	go func() {
		_, err := ps.Start(context.Background(), Spec{Name: "slow", Ready: Listening, Log: sig,
			Argv: []string{"sh", "-c", `echo "started $$"; exec cat`}})
		errc <- err
	}()
	pid, err := strconv.Atoi(<-sig.got)
	if err != nil {
		t.Fatal(err)
	}
	ps.KillAll()
	if alive(pid) {
		t.Errorf("child %d outlived KillAll", pid)
	}
	select {
	case err := <-errc:
		if !errors.Is(err, ErrShuttingDown) {
			t.Errorf("Start in flight: %v, want ErrShuttingDown", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("Start in flight did not return after KillAll")
	}
}

func TestReviewStartNoCommand(t *testing.T) {
	if _, err := Start(context.Background(), Spec{Name: "empty"}); err == nil || !strings.Contains(err.Error(), "no command") {
		t.Errorf("Start with no Argv: %v", err)
	}
}

// After exit the pid is free for reuse: CPU time comes from wait, and RSS
// says the child has gone.
func TestReviewFiguresAfterExit(t *testing.T) {
	needSh(t)
	p, err := Start(context.Background(), Spec{Name: "busy", Argv: []string{"sh", "-c", `i=0; while [ $i -lt 300000 ]; do i=$((i+1)); done`}})
	if err != nil {
		t.Fatal(err)
	}
	waitDone(t, p)
	if cpu, err := p.CPUTime(true); err != nil || cpu <= 0 {
		t.Errorf("CPUTime after exit: %v, %v", cpu, err)
	}
	if _, err := p.RSS(); !errors.Is(err, ErrExited) {
		t.Errorf("RSS after exit: %v, want ErrExited", err)
	}
}
