package benchkit

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

func needSh(t *testing.T) {
	t.Helper()
	if runtime.GOOS == "windows" {
		t.Skip("needs sh")
	}
}

func TestStart(t *testing.T) {
	needSh(t)
	var buf strings.Builder
	log := &LockedWriter{W: &buf}
	logFile := filepath.Join(t.TempDir(), "demo.log")
	p, err := Start(context.Background(), Spec{Name: "demo", Ready: Listening, Log: PrefixWriter(log, "demo: "), LogFile: logFile,
		Argv: []string{"sh", "-c", "echo hello; echo LISTENING 127.0.0.1:5; echo oops >&2; read x; echo bye"}})
	if err != nil {
		t.Fatal(err)
	}
	if p.Addr != "127.0.0.1:5" {
		t.Fatalf("Addr %q", p.Addr)
	}
	if err := p.Stop(5 * time.Second); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	log.mu.Lock()
	got := buf.String()
	log.mu.Unlock()
	for _, want := range []string{"demo: hello\n", "demo: oops\n", "demo: bye\n"} {
		if !strings.Contains(got, want) {
			t.Errorf("log lacks %q: %q", want, got)
		}
	}
	if strings.Contains(got, "LISTENING") {
		t.Errorf("the ready line was passed on: %q", got)
	}
	file, err := os.ReadFile(logFile)
	if err != nil || !strings.HasPrefix(string(file), "$ sh -c ") || !strings.Contains(string(file), "bye\n[exited: status 0]\n") {
		t.Errorf("log file %q, %v", file, err)
	}
	if tail := p.Tail(2); tail != "oops\nbye" && tail != "hello\nbye" {
		t.Errorf("Tail(2) = %q", tail)
	}
}

func TestStartFails(t *testing.T) {
	needSh(t)
	for _, tc := range []struct {
		name, script string
		timeout      time.Duration
		want         []string
	}{
		{"exits", "echo cannot bind >&2; exit 3", 0, []string{"exited before it was ready", "exit status 3", "cannot bind"}},
		{"mute", "echo waiting; exec sleep 60", 50 * time.Millisecond, []string{"not ready after 50ms", "waiting"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Start(context.Background(), Spec{Name: tc.name, Ready: Listening, Timeout: tc.timeout, Argv: []string{"sh", "-c", tc.script}})
			for _, w := range tc.want {
				if err == nil || !strings.Contains(err.Error(), w) {
					t.Errorf("err = %v, want %q in it", err, w)
				}
			}
		})
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := Start(ctx, Spec{Name: "cancelled", Ready: Listening, Argv: []string{"sh", "-c", "exec sleep 60"}}); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled: %v", err)
	}
}

func TestStop(t *testing.T) {
	needSh(t)
	p, err := Start(context.Background(), Spec{Name: "reader", Argv: []string{"sh", "-c", "cat >/dev/null"}})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Stop(10 * time.Second); err != nil {
		t.Errorf("a child reading stdin: %v", err)
	}
	p, err = Start(context.Background(), Spec{Name: "deaf", Argv: []string{"sh", "-c", "exec sleep 60"}})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Stop(10 * time.Millisecond); !errors.Is(err, ErrKilled) || !p.Exited() {
		t.Errorf("a child ignoring stdin: %v, exited %v", err, p.Exited())
	}
	p, err = Start(context.Background(), Spec{Name: "signalled", StopSignal: syscall.SIGTERM, Ready: Listening,
		Argv: []string{"sh", "-c", `trap 'echo got TERM; exit 0' TERM; echo LISTENING x; while :; do sleep 1; done`}})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Stop(10 * time.Second); err != nil || !strings.Contains(p.Tail(1), "got TERM") {
		t.Errorf("StopSignal: %v, output %q", err, p.Tail(5))
	}
}

func TestExpect(t *testing.T) {
	needSh(t)
	p, err := Start(context.Background(), Spec{Name: "tagged", Tags: []string{"STATS", "DONE"},
		Argv: []string{"sh", "-c", "echo noise; echo STATS a=1; read x; echo DONE; echo STATS late; exit 0"}})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if line, err := p.Expect(ctx, "STATS", 10*time.Second); err != nil || line != "STATS a=1" {
		t.Fatalf("Expect STATS: %q, %v", line, err)
	}
	if err := p.Send("go"); err != nil {
		t.Fatal(err)
	}
	if _, err := p.Expect(ctx, "STATS", 10*time.Second); err == nil || !strings.Contains(err.Error(), `printed "DONE", want a STATS line`) {
		t.Errorf("a wrong tag: %v", err)
	}
	p.Expect(ctx, "STATS", 10*time.Second)
	if _, err := p.Expect(ctx, "STATS", 10*time.Second); err == nil || !strings.Contains(err.Error(), "exited before printing STATS") || !strings.Contains(err.Error(), "noise") {
		t.Errorf("after exit: %v", err)
	}
}

// alive: pid is a process that has not ended (a zombie has).
func alive(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i >= 0 && !strings.HasPrefix(strings.TrimSpace(s[i+1:]), "Z")
}

// TestKillAllReachesGrandchildren: a child's own children die with it
// (sslh-fork forks one per connection), and a dead child fails CheckAlive.
func TestKillAllReachesGrandchildren(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("reads /proc")
	}
	var ps Procs
	p, err := ps.Start(context.Background(), Spec{Name: "sh", Ready: Listening,
		Argv: []string{"sh", "-c", `sleep 60 & echo "listening on $!"; wait`}})
	if err != nil {
		ps.KillAll()
		t.Fatal(err)
	}
	n, err := strconv.Atoi(p.Addr)
	if err != nil || !alive(n) {
		t.Fatalf("grandchild %q not running", p.Addr)
	}
	q, err := ps.Start(context.Background(), Spec{Name: "quitter", Argv: []string{"sh", "-c", "echo bye; exit 4"}})
	if err != nil {
		t.Fatal(err)
	}
	<-q.Done() // its own exit, not KillAll's signal, is what Report must show
	ps.KillAll()
	if err := ps.CheckAlive(); err == nil || !strings.Contains(err.Error(), "exited during the run") {
		t.Errorf("CheckAlive after KillAll: %v", err)
	}
	if r := ps.Report(); !strings.Contains(r, "--- quitter (exited: exit status 4):\n    bye") {
		t.Errorf("Report: %q", r)
	}
	if _, err := ps.Start(context.Background(), Spec{Name: "late", Argv: []string{"true"}}); err == nil {
		t.Error("Start after KillAll succeeded")
	}
	deadline := time.Now().Add(5 * time.Second)
	for alive(n) { // the kernel reaps it after the pipes close
		if time.Now().After(deadline) {
			t.Fatalf("grandchild %d survived KillAll", n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
