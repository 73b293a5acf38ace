package main

import (
	"bytes"
	"context"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/ampmux/ampmux/internal/benchkit/load"
)

func TestSum(t *testing.T) {
	out, err := sum(encodeArgs(nil, 13, 81))
	if err != nil || !bytes.Equal(out, []byte{94}) {
		t.Fatalf("sum = %x, %v", out, err)
	}
	out, err = sum(encodeArgs(nil, 1<<40, 1<<40))
	if err != nil || len(out) < 2 {
		t.Fatalf("sum of big = %x, %v", out, err)
	}
	for _, bad := range [][]byte{nil, {0x80}, {1}, {1, 2, 3}} {
		if _, err := sum(bad); err == nil {
			t.Errorf("sum(%x) accepted it", bad)
		}
	}
}

// TestClientServer runs the server and the client in this process for a
// fraction of a second, on one connection and on several.
func TestClientServer(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := newServer()
	go s.Serve(l)
	defer s.Stop()
	for _, c := range []struct{ inflight, conns int }{{1, 1}, {16, 1}, {8, 4}} {
		r, err := runClient(context.Background(), clientConfig{Addr: l.Addr().String(), Inflight: c.inflight, Conns: c.conns,
			Duration: 150 * time.Millisecond, Warmup: 30 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		p, err := load.ParseResult(r.String())
		if err != nil {
			t.Fatal(err)
		}
		t.Log(p)
		if p.Kind != "grpc" || p.Inflight != c.inflight || p.Conns != c.conns || p.Calls <= 0 || p.Errors != 0 || p.P50us <= 0 {
			t.Fatalf("implausible %+v", p)
		}
	}
}

// TestCommands runs serve and grpc through dispatch, as the report does.
func TestCommands(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stdinR, stdinW := io.Pipe()
	outR, outW := io.Pipe()
	done := make(chan error, 1)
	go func() { done <- dispatch(ctx, []string{"serve", "-addr", "127.0.0.1:0"}, stdinR, outW, io.Discard) }()
	line := make([]byte, 64)
	n, err := outR.Read(line)
	if err != nil {
		t.Fatal(err)
	}
	addr, ok := strings.CutPrefix(strings.TrimSpace(string(line[:n])), "LISTENING ")
	if !ok {
		t.Fatalf("serve printed %q", line[:n])
	}
	var out bytes.Buffer
	if err := dispatch(ctx, []string{"grpc", "-addr", addr, "-inflight", "2", "-duration", "100ms", "-warmup", "20ms"}, nil, &out, io.Discard); err != nil {
		t.Fatal(err)
	}
	if _, err := load.ParseResult(strings.TrimSpace(out.String())); err != nil {
		t.Fatal(err)
	}
	stdinW.Close()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	out.Reset()
	if err := dispatch(ctx, []string{"version"}, nil, &out, io.Discard); err != nil || !strings.HasPrefix(out.String(), "grpc-go v") {
		t.Fatalf("version: %q, %v", out.String(), err)
	}
}

// TestNetRPCClientServer runs the net/rpc server and client in this
// process for a fraction of a second, on one connection and on several.
func TestNetRPCClientServer(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s, err := startNetRPCServer(l)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for _, c := range []struct{ inflight, conns int }{{1, 1}, {16, 1}, {8, 4}} {
		r, err := runNetRPCClient(context.Background(), clientConfig{Addr: l.Addr().String(), Inflight: c.inflight, Conns: c.conns,
			Duration: 150 * time.Millisecond, Warmup: 30 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		p, err := load.ParseResult(r.String())
		if err != nil {
			t.Fatal(err)
		}
		t.Log(p)
		if p.Kind != "netrpc" || p.Inflight != c.inflight || p.Conns != c.conns || p.Calls <= 0 || p.Errors != 0 || p.P50us <= 0 {
			t.Fatalf("implausible %+v", p)
		}
	}
	// Calc.Sum itself.
	var reply SumReply
	if err := (Calc{}).Sum(SumArgs{A: 1, B: 2}, &reply); err != nil || reply.Total != 3 {
		t.Fatalf("Sum(1, 2) = %d, %v", reply.Total, err)
	}
}

// TestNetRPCCommands runs serve-netrpc and netrpc through dispatch, as
// the report does, and checks that serve-netrpc stops when stdin closes.
func TestNetRPCCommands(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stdinR, stdinW := io.Pipe()
	outR, outW := io.Pipe()
	done := make(chan error, 1)
	go func() {
		done <- dispatch(ctx, []string{"serve-netrpc", "-addr", "127.0.0.1:0"}, stdinR, outW, io.Discard)
	}()
	line := make([]byte, 64)
	n, err := outR.Read(line)
	if err != nil {
		t.Fatal(err)
	}
	addr, ok := strings.CutPrefix(strings.TrimSpace(string(line[:n])), "LISTENING ")
	if !ok {
		t.Fatalf("serve-netrpc printed %q", line[:n])
	}
	var out bytes.Buffer
	if err := dispatch(ctx, []string{"netrpc", "-addr", addr, "-inflight", "2", "-conns", "2", "-duration", "100ms", "-warmup", "20ms"}, nil, &out, io.Discard); err != nil {
		t.Fatal(err)
	}
	r, err := load.ParseResult(strings.TrimSpace(out.String()))
	if err != nil || r.Kind != "netrpc" || r.Conns != 2 || r.Calls <= 0 {
		t.Fatalf("netrpc printed %q: %+v, %v", out.String(), r, err)
	}
	stdinW.Close()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("serve-netrpc did not stop when its stdin closed")
	}
	// A server that is gone is an error, not a hang.
	if err := dispatch(ctx, []string{"netrpc", "-addr", addr, "-duration", "100ms", "-warmup", "0s"}, nil, io.Discard, io.Discard); err == nil {
		t.Fatal("netrpc against a closed port succeeded")
	}
}
