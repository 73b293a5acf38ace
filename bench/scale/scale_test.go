package main

import (
	"bytes"
	"context"
	"io"
	"net"
	"strings"
	"testing"

	"github.com/ampmux/ampmux/amp"
	"github.com/ampmux/ampmux/amp/conn"
	"github.com/ampmux/ampmux/internal/benchkit"
	"github.com/ampmux/ampmux/internal/benchkit/load"
)

func listen(t *testing.T) net.Listener {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

// floorServer answers every 44-byte request with the 29-byte answer, as
// callbench serve-floor does.
func floorServer(t *testing.T) string {
	l := listen(t)
	go func() {
		for {
			nc, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer nc.Close()
				buf := make([]byte, len(floorReq))
				for {
					if _, err := io.ReadFull(nc, buf); err != nil {
						return
					}
					if !bytes.Equal(buf, floorReq) {
						return
					}
					if _, err := nc.Write(floorResp); err != nil {
						return
					}
				}
			}()
		}
	}()
	return l.Addr().String()
}

func ampServer(t *testing.T) string {
	l := listen(t)
	m := amp.NewMux()
	amp.HandleInline(m, benchkit.Sum, func(_ context.Context, a benchkit.SumArgs) (benchkit.SumReply, error) {
		return benchkit.SumReply{Total: a.A + a.B}, nil
	})
	srv := &conn.Server{Config: conn.Config{Handler: m}}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	return l.Addr().String()
}

func TestScale(t *testing.T) {
	for _, c := range []struct {
		kind, api, addr string
	}{
		{"amp", "raw", ampServer(t)},
		{"amp", "typed", ampServer(t)},
		{"floor", "", floorServer(t)},
	} {
		var out bytes.Buffer
		args := []string{c.kind, "-addr", c.addr, "-conns", "50", "-parallel", "8", "-duration", "150ms", "-warmup", "30ms"}
		if c.api != "" {
			args = append(args, "-api", c.api)
		}
		if err := dispatch(context.Background(), args, &out, io.Discard); err != nil {
			t.Fatalf("%s %s: %v", c.kind, c.api, err)
		}
		r, err := load.ParseResult(strings.TrimSpace(out.String()))
		if err != nil {
			t.Fatal(err)
		}
		t.Log(r)
		if r.Kind != "scale-"+c.kind || r.Conns != 50 || r.Inflight != 50 || r.Calls <= 0 || r.P50us <= 0 {
			t.Fatalf("implausible %+v", r)
		}
	}
}

func TestScaleFailsWithoutServer(t *testing.T) {
	l := listen(t)
	addr := l.Addr().String()
	l.Close()
	if err := dispatch(context.Background(), []string{"floor", "-addr", addr, "-conns", "3", "-duration", "50ms"}, io.Discard, io.Discard); err == nil {
		t.Fatal("no error without a server")
	}
}

func TestFloorMessages(t *testing.T) {
	if len(floorReq) != 44 || len(floorResp) != 29 {
		t.Fatalf("floor messages are %d and %d bytes, callbench's are 44 and 29", len(floorReq), len(floorResp))
	}
}
