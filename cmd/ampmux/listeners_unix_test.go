//go:build unix

package main

import (
	"context"
	"math/big"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/ampmux/ampmux/amp/conn"
	"github.com/ampmux/ampmux/internal/demo"
)

func sumAt(t *testing.T, addr string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, err := conn.Dial(ctx, "tcp", addr, &conn.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	r, err := demo.Sum.Call(ctx, c, demo.SumArgs{A: big.NewInt(20), B: big.NewInt(22)})
	if err != nil || r.Total.Int64() != 42 {
		t.Fatalf("Sum at %s: %v, %v", addr, r, err)
	}
}

// --listen twice: both addresses serve.
func TestListenSeveral(t *testing.T) {
	p := startProc(t, serveTestBinary(t), "serve", "--demo", "--listen", "127.0.0.1:0", "--listen", "127.0.0.1:0,127.0.0.1:0")
	var addrs []string
	for range 3 {
		a, ok := strings.CutPrefix(p.line(t), "listening on ")
		if !ok {
			t.Fatalf("stderr:\n%s", p.stderr.String())
		}
		addrs = append(addrs, a)
	}
	for _, a := range addrs {
		sumAt(t, a)
	}
}

// systemd socket activation: a socket passed as fd 3 with LISTEN_FDS and
// LISTEN_PID (sh's $$, kept by exec) is served by --listen systemd.
func TestSocketActivation(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f, err := l.(*net.TCPListener).File()
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	cmd := exec.Command("sh", "-c", `LISTEN_PID=$$ LISTEN_FDS=1 exec "$0" serve --demo --listen systemd`, serveTestBinary(t))
	cmd.ExtraFiles = []*os.File{f}
	out := &logBuf{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	f.Close()
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-exited
		if t.Failed() {
			t.Logf("serve output:\n%s", out.String())
		}
	})
	out.waitFor(t, "listening on "+addr)
	sumAt(t, addr)

	// Without sockets from systemd, --listen systemd says so.
	code, _, stderr := ctRun("serve", "--listen", "systemd")
	if code == 0 || !strings.Contains(stderr, "systemd passed no listening stream socket") {
		t.Fatalf("--listen systemd without sockets: exit %d, %q", code, stderr)
	}
}
