package examples_test

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"net"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func build(t *testing.T, pkg string) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), filepath.Base(pkg))
	out, err := exec.Command("go", "build", "-o", bin, pkg).CombinedOutput()
	if err != nil {
		t.Fatalf("go build %s: %v\n%s", pkg, err, out)
	}
	return bin
}

func freeAddr(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// TestExamplesTalk runs the example server and client as processes.
func TestExamplesTalk(t *testing.T) {
	server, client := build(t, "./ampserver"), build(t, "./ampclient")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	srv := exec.CommandContext(ctx, server, "-addr", "127.0.0.1:0")
	stderr, err := srv.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	drained := make(chan struct{})
	t.Cleanup(func() {
		srv.Process.Signal(interruptSignal)
		<-drained // Wait closes the pipe: read it to the end first
		srv.Wait()
	})
	// The server says where it listens once it does.
	var addr string
	var srvOut bytes.Buffer
	sc := bufio.NewScanner(stderr)
	for addr == "" && sc.Scan() {
		line := sc.Text()
		srvOut.WriteString(line + "\n")
		if i := strings.Index(line, "addr="); i >= 0 && strings.Contains(line, "ampserver listening") {
			addr = strings.Fields(line[i+len("addr="):])[0]
		}
	}
	go func() {
		io.Copy(io.Discard, stderr)
		close(drained)
	}()
	if addr == "" {
		t.Fatalf("server did not listen: %s", srvOut.String())
	}
	out, err := exec.CommandContext(ctx, client, "-addr", addr).CombinedOutput()
	if err != nil {
		t.Fatalf("client: %v\n%s", err, out)
	}
	for _, want := range []string{"Done with math: 94", "Divided by zero"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("client output lacks %q:\n%s", want, out)
		}
	}
	// Against a port nobody serves the client must fail.
	if err := exec.CommandContext(ctx, client, "-addr", freeAddr(t)).Run(); err == nil {
		t.Error("client exited 0 with no server")
	}
}
