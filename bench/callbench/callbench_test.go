package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"os"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/ampmux/ampmux/amp"
	"github.com/ampmux/ampmux/amp/box"
	"github.com/ampmux/ampmux/amp/conn"
	"github.com/ampmux/ampmux/internal/benchkit/load"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const (
	testDuration = 200 * time.Millisecond
	testWarmup   = 50 * time.Millisecond
)

func listen(t *testing.T) net.Listener {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func TestFloorMessagesAreSumBoxes(t *testing.T) {
	if len(floorReq) != floorReqSize || len(floorResp) != floorRespSize {
		t.Fatalf("floor messages are %d and %d bytes", len(floorReq), len(floorResp))
	}
	dec := box.NewDecoder(bytes.NewReader(append(append([]byte{}, floorReq...), floorResp...)))
	var b box.Box
	if err := dec.Next(&b); err != nil {
		t.Fatal(err)
	}
	if b.GetString(amp.KeyCommand) != "Sum" || b.GetString("a") != "13" || b.GetString("b") != "81" {
		t.Fatalf("request box %v", b.String())
	}
	if err := dec.Next(&b); err != nil {
		t.Fatal(err)
	}
	if b.GetString("total") != "94" || !b.Has(amp.KeyAnswer) {
		t.Fatalf("response box %v", b.String())
	}
}

// checkResult round-trips r through its RESULT line and checks it.
func checkResult(t *testing.T, r load.Result, kind, api string, inflight int) {
	t.Helper()
	p, err := load.ParseResult(r.String())
	if err != nil {
		t.Fatal(err)
	}
	t.Log(p.String())
	if p.Kind != kind || p.API != api || p.Inflight != inflight {
		t.Fatalf("RESULT says %s/%s/%d, want %s/%s/%d", p.Kind, p.API, p.Inflight, kind, api, inflight)
	}
	if p.Calls <= 0 || p.Errors != 0 || p.CallsPerSec <= 0 || p.P50us <= 0 || p.P99us < p.P50us {
		t.Fatalf("implausible result %+v", p)
	}
	// The window is about its length (the floor client times its own,
	// from its first answer); a loaded machine may make it longer, which
	// is no error of the tool, so there is no upper bound.
	if p.Seconds < testDuration.Seconds()*0.9 {
		t.Fatalf("measured %.3fs for a %v window", p.Seconds, testDuration)
	}
}

func TestFloorClient(t *testing.T) {
	srv := startFloorServer(listen(t))
	defer srv.Close()
	for _, n := range []int{1, 16, 300} {
		r, err := runFloorClient(context.Background(), clientConfig{
			Addr: srv.L.Addr().String(), Inflight: n, Duration: testDuration, Warmup: testWarmup})
		if err != nil {
			t.Fatalf("inflight %d: %v", n, err)
		}
		checkResult(t, r, "floor", "", n)
	}
}

func TestAMPClient(t *testing.T) {
	for _, api := range []string{"raw", "typed", "async"} {
		l := listen(t)
		srv, err := startAMPServer(l, api)
		if err != nil {
			t.Fatal(err)
		}
		for _, n := range []int{1, 16} {
			r, err := runAMPClient(context.Background(), clientConfig{
				Addr: l.Addr().String(), Inflight: n, Duration: testDuration, Warmup: testWarmup, API: api})
			if err != nil {
				t.Fatalf("%s, inflight %d: %v", api, n, err)
			}
			checkResult(t, r, "amp", api, n)
		}
		srv.Close()
	}
}

// A server that answers wrongly must make the client fail, not count.
func TestAMPClientWrongAnswer(t *testing.T) {
	m := amp.NewMux()
	m.HandleBoxInline("Sum", func(_ context.Context, req, resp *box.Box) error {
		resp.SetString("total", "95")
		return nil
	})
	l := listen(t)
	srv := &conn.Server{Config: conn.Config{Handler: m}}
	go srv.Serve(l)
	defer srv.Close()
	// Over several connections too: the first call on each only checks
	// that it is answered, so the wrong total fails the measured run.
	for _, cfg := range []clientConfig{{Inflight: 4}, {Inflight: 1, Conns: 3}} {
		for _, api := range []string{"raw", "typed", "async"} {
			cfg.Addr, cfg.Duration, cfg.Warmup, cfg.API = l.Addr().String(), testDuration, testWarmup, api
			r, err := runAMPClient(context.Background(), cfg)
			if err == nil || r.Errors == 0 || !strings.Contains(err.Error(), "95") {
				t.Fatalf("%s, %d conns: wrong answers gave %+v, %v", api, cfg.Conns, r, err)
			}
		}
	}
	// An unknown command (UNHANDLED) is an error too.
	srv2 := &conn.Server{Config: conn.Config{Handler: amp.NewMux()}}
	l2 := listen(t)
	go srv2.Serve(l2)
	defer srv2.Close()
	for _, cfg := range []clientConfig{{Inflight: 2}, {Inflight: 1, Conns: 3}} {
		for _, api := range []string{"raw", "async"} {
			cfg.Addr, cfg.Duration, cfg.Warmup, cfg.API = l2.Addr().String(), testDuration, testWarmup, api
			_, err := runAMPClient(context.Background(), cfg)
			var re *amp.RemoteError
			if !errors.As(err, &re) || re.Code != amp.CodeUnhandled {
				t.Fatalf("%s, %d conns: no Sum responder gave %v", api, cfg.Conns, err)
			}
		}
	}
}

// strictFloor serves raw TCP on every connection it accepts: each
// request must be the Sum call box, each is answered with answer. It
// counts the connections accepted.
func strictFloor(t *testing.T, answer []byte) (addr string, accepted *atomic.Int32) {
	l := listen(t)
	t.Cleanup(func() { l.Close() })
	accepted = new(atomic.Int32)
	go func() {
		for {
			nc, err := l.Accept()
			if err != nil {
				return
			}
			accepted.Add(1)
			go func() {
				defer nc.Close()
				buf := make([]byte, floorReqSize)
				for {
					if _, err := io.ReadFull(nc, buf); err != nil || !bytes.Equal(buf, floorReq) {
						return
					}
					if _, err := nc.Write(answer); err != nil {
						return
					}
				}
			}()
		}
	}()
	return l.Addr().String(), accepted
}

func TestFloorClientWrongAnswer(t *testing.T) {
	addr, _ := strictFloor(t, bytes.Replace(floorResp, []byte("94"), []byte("95"), 1))
	r, err := runFloorClient(context.Background(), clientConfig{
		Addr: addr, Inflight: 4, Duration: testDuration, Warmup: testWarmup})
	if err == nil || r.Errors == 0 {
		t.Fatalf("wrong answers gave %+v, %v", r, err)
	}
	// Over several connections, the first call on each fails it.
	_, err = runFloorClient(context.Background(), clientConfig{
		Addr: addr, Inflight: 1, Conns: 3, Parallel: 2, Duration: testDuration, Warmup: testWarmup})
	if err == nil || !strings.Contains(err.Error(), "95") {
		t.Fatalf("wrong answers on 3 connections gave %v", err)
	}
}

// countingListener counts the connections it accepted.
type countingListener struct {
	net.Listener
	n atomic.Int32
}

func (l *countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.n.Add(1)
	}
	return c, err
}

// -conns N opens N connections, one caller on each: every one is accepted
// (and answered its first call) before the run, which reports them all.
func TestManyConns(t *testing.T) {
	const n = 50
	for _, api := range []string{"raw", "typed", "async", ""} {
		kind, args := "amp", []string{"-api", api}
		var accepted *atomic.Int32
		var addr string
		if api == "" {
			kind, args = "floor", []string{"-floor-mode", "perwrite"}
			addr, accepted = strictFloor(t, floorResp)
		} else {
			cl := &countingListener{Listener: listen(t)}
			srv, err := startAMPServer(cl, api)
			if err != nil {
				t.Fatal(err)
			}
			defer srv.Close()
			addr, accepted = cl.Addr().String(), &cl.n
		}
		var out bytes.Buffer
		args = append([]string{kind, "-addr", addr, "-conns", "50", "-parallel", "8", "-duration", "150ms", "-warmup", "30ms"}, args...)
		if err := dispatch(context.Background(), args, nil, &out, io.Discard); err != nil {
			t.Fatalf("%v: %v", args, err)
		}
		r, err := load.ParseResult(strings.TrimSpace(out.String()))
		if err != nil {
			t.Fatal(err)
		}
		t.Log(r)
		if r.Kind != "scale-"+kind || r.API != api || r.Mode != "" || r.Conns != n || r.Inflight != n ||
			r.Calls <= 0 || r.Errors != 0 || r.P50us <= 0 || r.P99us < r.P50us {
			t.Fatalf("%v: implausible %+v", args, r)
		}
		if got := accepted.Load(); got != n {
			t.Fatalf("%v: the server accepted %d connections, want %d", args, got, n)
		}
	}
}

func TestManyConnsFailWithoutServer(t *testing.T) {
	l := listen(t)
	addr := l.Addr().String()
	l.Close()
	for _, kind := range []string{"amp", "floor"} {
		var out bytes.Buffer
		err := dispatch(context.Background(), []string{kind, "-addr", addr, "-conns", "3", "-duration", "50ms"}, nil, &out, io.Discard)
		if err == nil || errors.Is(err, errUsage) || out.Len() != 0 {
			t.Fatalf("%s without a server gave %v and printed %q", kind, err, out.String())
		}
	}
}

func TestConnsFlags(t *testing.T) {
	for _, bad := range [][]string{{"-conns", "0"}, {"-parallel", "0"}, {"-conns", "4", "-inflight", "2"}} {
		var errOut bytes.Buffer
		err := dispatch(context.Background(), append([]string{"amp", "-addr", "127.0.0.1:1"}, bad...), nil, io.Discard, &errOut)
		if !errors.Is(err, errUsage) || !strings.Contains(errOut.String(), "-conns") {
			t.Errorf("amp %v gave %v, %q", bad, err, errOut.String())
		}
	}
}

// serve-amp prints LISTENING, serves, and returns when stdin closes.
func TestServeSubcommands(t *testing.T) {
	for _, args := range [][]string{{"serve-amp", "-api", "typed"}, {"serve-floor"}} {
		stdinR, stdinW := io.Pipe()
		stdoutR, stdoutW := io.Pipe()
		prof := t.TempDir() + "/cpu.pprof"
		done := make(chan error, 1)
		go func() {
			done <- dispatch(context.Background(), append(args, "-addr", "127.0.0.1:0", "-cpuprofile", prof), stdinR, stdoutW, io.Discard)
			stdoutW.Close()
		}()
		line, err := bufio.NewReader(stdoutR).ReadString('\n')
		if err != nil {
			t.Fatal(err)
		}
		addr, ok := strings.CutPrefix(strings.TrimSpace(line), "LISTENING ")
		if !ok {
			t.Fatalf("%s printed %q", args[0], line)
		}
		kind := "floor"
		if args[0] == "serve-amp" {
			kind = "amp"
		}
		for _, c := range []struct {
			flags []string
			kind  string
		}{{[]string{"-inflight", "8"}, kind}, {[]string{"-conns", "20"}, "scale-" + kind}} {
			var out bytes.Buffer
			client := append([]string{kind, "-addr", addr, "-duration", testDuration.String(), "-warmup", testWarmup.String()}, c.flags...)
			if kind == "amp" {
				client = append(client, "-api", "typed")
			}
			if err := dispatch(context.Background(), client, nil, &out, io.Discard); err != nil {
				t.Fatalf("%v: %v", client, err)
			}
			r, err := load.ParseResult(strings.TrimSpace(out.String()))
			if err != nil || r.Kind != c.kind || r.Calls <= 0 || r.Errors != 0 {
				t.Fatalf("%v printed %q: %v", client, out.String(), err)
			}
		}
		stdinW.Close()
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("%s: %v", args[0], err)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("%s still serving 5s after stdin closed", args[0])
		}
		if st, err := os.Stat(prof); err != nil || st.Size() == 0 {
			t.Fatalf("no CPU profile: %v", err)
		}
	}
}

// writeCounter records the size of every Write.
type writeCounter struct{ sizes []int }

func (w *writeCounter) Write(p []byte) (int, error) {
	w.sizes = append(w.sizes, len(p))
	return len(p), nil
}

// Batched refills go out in one Write, per-write ones in one Write each,
// every one a whole Sum call box.
func TestFloorSender(t *testing.T) {
	for _, tc := range []struct {
		mode string
		want []int
	}{
		{floorBatched, []int{5 * floorReqSize}},
		{floorPerWrite, []int{floorReqSize, floorReqSize, floorReqSize, floorReqSize, floorReqSize}},
	} {
		var w writeCounter
		if err := newFloorSender(&w, tc.mode, 8)(5); err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(w.sizes, tc.want) {
			t.Errorf("%s: writes of %v bytes, want %v", tc.mode, w.sizes, tc.want)
		}
	}
	var buf bytes.Buffer
	if err := newFloorSender(&buf, floorPerWrite, 3)(3); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(buf.Bytes(), bytes.Repeat(floorReq, 3)) {
		t.Fatalf("per-write sent %q", buf.Bytes())
	}
}

func TestFloorClientPerWrite(t *testing.T) {
	srv := startFloorServer(listen(t))
	defer srv.Close()
	for _, n := range []int{1, 16, 300} {
		r, err := runFloorClient(context.Background(), clientConfig{
			Addr: srv.L.Addr().String(), Inflight: n, Duration: testDuration, Warmup: testWarmup, FloorMode: floorPerWrite})
		if err != nil {
			t.Fatalf("inflight %d: %v", n, err)
		}
		checkResult(t, r, "floor", "", n)
		if r.Mode != floorPerWrite || !strings.Contains(r.String(), " mode=perwrite ") {
			t.Fatalf("per-write result %q", r.String())
		}
	}
	if _, err := runFloorClient(context.Background(), clientConfig{
		Addr: srv.L.Addr().String(), Inflight: 1, Duration: testDuration, FloorMode: "bogus"}); err == nil {
		t.Fatal("floor mode bogus accepted")
	}
}

func TestFloorModeFlag(t *testing.T) {
	var errOut bytes.Buffer
	err := dispatch(context.Background(), []string{"floor", "-addr", "127.0.0.1:1", "-floor-mode", "sometimes"}, nil, io.Discard, &errOut)
	if !errors.Is(err, errUsage) || !strings.Contains(errOut.String(), "perwrite") {
		t.Fatalf("floor -floor-mode sometimes gave %v, %q", err, errOut.String())
	}
}
