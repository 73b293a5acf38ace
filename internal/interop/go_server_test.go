package interop

import (
	"io"
	"log/slog"
	"net"
	"sort"
	"testing"

	"github.com/ampmux/ampmux/amp"
	"github.com/ampmux/ampmux/amp/conn"
	"github.com/ampmux/ampmux/internal/demo"
)

// startGoServer serves the interop schema from Go on a loopback port.
func startGoServer(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	m := amp.NewMux()
	demo.Register(m)
	srv := &conn.Server{Config: conn.Config{Handler: m, Logger: quietLogger()}}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	return l.Addr().String()
}

// TestTwistedClientAgainstGoServer runs every check of the Twisted client
// against the Go server: all argument types with edge values, pipelined
// calls, declared, fatal and undeclared errors, unknown commands and
// requiresAnswer=False.
func TestTwistedClientAgainstGoServer(t *testing.T) {
	addr := startGoServer(t)
	res := RunTwistedClient(t, addr)
	if len(res) < 60 {
		t.Fatalf("only %d checks ran", len(res))
	}
	var failed []string
	for name, detail := range res {
		if detail != "" {
			failed = append(failed, name+": "+detail)
		}
	}
	sort.Strings(failed)
	for _, f := range failed {
		t.Error(f)
	}
	t.Logf("%d Twisted checks against the Go server, %d failed", len(res), len(failed))
}

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }
