package benchkit

import (
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"sync/atomic"
	"testing"
)

func TestAnnounce(t *testing.T) {
	addr := &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 7}
	var out strings.Builder
	r, w := io.Pipe()
	errc := make(chan error, 1)
	go func() { errc <- Announce(context.Background(), &out, r, addr, nil) }()
	w.Write([]byte("ignored"))
	w.Close()
	if err := <-errc; err != nil || out.String() != "LISTENING 127.0.0.1:7\n" {
		t.Fatalf("Announce: %v, printed %q", err, out.String())
	}
	boom := errors.New("boom")
	failed := make(chan error, 1)
	failed <- boom
	r2, w2 := io.Pipe()
	defer w2.Close()
	if err := Announce(context.Background(), io.Discard, r2, addr, failed); !errors.Is(err, boom) {
		t.Fatalf("Announce with a failed server: %v", err)
	}
}

func TestDispatch(t *testing.T) {
	var ran []string
	cmds := map[string]func([]string) error{
		"go": func(rest []string) error { ran = append(ran, strings.Join(rest, " ")); return nil },
	}
	var out, errOut strings.Builder
	if err := Dispatch("tool", "USAGE\n", []string{"go", "-x", "1"}, &out, &errOut, cmds); err != nil || len(ran) != 1 || ran[0] != "-x 1" {
		t.Fatalf("go: %v, ran %q", err, ran)
	}
	if err := Dispatch("tool", "USAGE\n", []string{"help"}, &out, &errOut, cmds); err != nil || out.String() != "USAGE\n" {
		t.Fatalf("help: %v, stdout %q", err, out.String())
	}
	if err := Dispatch("tool", "USAGE\n", []string{"nope"}, &out, &errOut, cmds); !errors.Is(err, ErrUsage) || !strings.HasPrefix(errOut.String(), `tool: unknown command "nope"`) {
		t.Fatalf("unknown: %v, stderr %q", err, errOut.String())
	}
	errOut.Reset()
	if err := Dispatch("tool", "USAGE\n", nil, &out, &errOut, cmds); !errors.Is(err, ErrUsage) || errOut.String() != "USAGE\n" {
		t.Fatalf("none: %v, stderr %q", err, errOut.String())
	}
}

type fakeConn struct{ closed *atomic.Int32 }

func (f fakeConn) Close() error { f.closed.Add(1); return nil }

func TestOpenAll(t *testing.T) {
	var closed atomic.Int32
	got, err := OpenAll(context.Background(), 50, 4, func(_ context.Context, i int) (fakeConn, error) {
		return fakeConn{&closed}, nil
	})
	if err != nil || len(got) != 50 || closed.Load() != 0 {
		t.Fatalf("OpenAll: %d, %v, %d closed", len(got), err, closed.Load())
	}
	var opened atomic.Int32
	boom := errors.New("boom")
	got, err = OpenAll(context.Background(), 50, 4, func(_ context.Context, i int) (fakeConn, error) {
		if i == 20 {
			return fakeConn{}, boom
		}
		opened.Add(1)
		return fakeConn{&closed}, nil
	})
	if !errors.Is(err, boom) || got != nil || closed.Load() != opened.Load() {
		t.Fatalf("OpenAll with a failure: %v, %d returned, %d opened, %d closed", err, len(got), opened.Load(), closed.Load())
	}
}
