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
	for _, api := range []string{"raw", "typed", "async"} {
		r, err := runAMPClient(context.Background(), clientConfig{
			Addr: l.Addr().String(), Inflight: 4, Duration: testDuration, Warmup: testWarmup, API: api})
		if err == nil || r.Errors == 0 || !strings.Contains(err.Error(), "95") {
			t.Fatalf("%s: wrong answers gave %+v, %v", api, r, err)
		}
	}
	// An unknown command (UNHANDLED) is an error too.
	srv2 := &conn.Server{Config: conn.Config{Handler: amp.NewMux()}}
	l2 := listen(t)
	go srv2.Serve(l2)
	defer srv2.Close()
	for _, api := range []string{"raw", "async"} {
		_, err := runAMPClient(context.Background(), clientConfig{
			Addr: l2.Addr().String(), Inflight: 2, Duration: testDuration, Warmup: testWarmup, API: api})
		var re *amp.RemoteError
		if !errors.As(err, &re) || re.Code != amp.CodeUnhandled {
			t.Fatalf("%s: no Sum responder gave %v", api, err)
		}
	}
}

func TestFloorClientWrongAnswer(t *testing.T) {
	l := listen(t)
	defer l.Close()
	go func() {
		nc, err := l.Accept()
		if err != nil {
			return
		}
		defer nc.Close()
		bad := bytes.Replace(floorResp, []byte("94"), []byte("95"), 1)
		buf := make([]byte, floorReqSize)
		for {
			if _, err := io.ReadFull(nc, buf); err != nil {
				return
			}
			if _, err := nc.Write(bad); err != nil {
				return
			}
		}
	}()
	r, err := runFloorClient(context.Background(), clientConfig{
		Addr: l.Addr().String(), Inflight: 4, Duration: testDuration, Warmup: testWarmup})
	if err == nil || r.Errors == 0 {
		t.Fatalf("wrong answers gave %+v, %v", r, err)
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
		var out bytes.Buffer
		client := []string{"floor"}
		if args[0] == "serve-amp" {
			client = []string{"amp", "-api", "typed"}
		}
		client = append(client, "-addr", addr, "-duration", testDuration.String(), "-warmup", testWarmup.String(), "-inflight", "8")
		if err := dispatch(context.Background(), client, nil, &out, io.Discard); err != nil {
			t.Fatalf("%v: %v", client, err)
		}
		r, err := load.ParseResult(strings.TrimSpace(out.String()))
		if err != nil || r.Calls <= 0 || r.Errors != 0 {
			t.Fatalf("%v printed %q: %v", client, out.String(), err)
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
