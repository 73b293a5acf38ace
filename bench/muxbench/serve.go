package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ampmux/ampmux/amp"
	"github.com/ampmux/ampmux/amp/box"
	"github.com/ampmux/ampmux/amp/conn"
	"github.com/ampmux/ampmux/httpfallback"
	"github.com/ampmux/ampmux/internal/benchkit"
	"github.com/ampmux/ampmux/mux"
)

// helloBody is what every HTTP request gets: 13 bytes.
const helloBody = "Hello, World!"

var (
	helloBytes  = []byte(helloBody)
	textPlain   = []string{"text/plain; charset=utf-8"}
	helloLength = []string{strconv.Itoa(len(helloBody))}
)

// Requests and calls served by this process, for CPU time per request.
var httpRequests, ampCalls atomic.Int64

// hello answers every request with helloBody; the headers are set without
// canonicalising, so that the handler costs as little as possible.
func hello(w http.ResponseWriter, _ *http.Request) {
	httpRequests.Add(1)
	h := w.Header()
	h["Content-Type"] = textPlain
	h["Content-Length"] = helloLength
	w.Write(helloBytes)
}

// sumBox answers Sum(a, b) through the box API, inline on the reader
// goroutine, allocating nothing (callbench's "serve-amp -api raw"
// responder), and counts the calls.
func sumBox(ctx context.Context, req, resp *box.Box) error {
	ampCalls.Add(1)
	return benchkit.RawSum(ctx, req, resp)
}

// Server modes.
const (
	modeShared = "shared" // one port, mux.New in front of both servers
	modeDirect = "direct" // the same servers, each on a port of its own
)

func checkMode(mode string) error {
	if mode != modeShared && mode != modeDirect {
		return fmt.Errorf("-mode must be shared or direct, not %q", mode)
	}
	return nil
}

// benchServer is the HTTP and AMP pair, shared or direct.
type benchServer struct {
	mode     string
	httpAddr string
	ampAddr  string
	amp      *conn.Server
	http     *http.Server
	mux      *mux.Server // shared only
	ampConns atomic.Int64
	served   sync.WaitGroup
}

// startBenchServer listens on addr (and, direct, on a second port of the
// same host for AMP) and serves until Close.
func startBenchServer(mode, addr string, logger *slog.Logger) (*benchServer, error) {
	if err := checkMode(mode); err != nil {
		return nil, err
	}
	m := amp.NewMux()
	m.HandleBoxInline("Sum", sumBox)
	s := &benchServer{mode: mode, http: httpfallback.Server(http.HandlerFunc(hello))}
	s.amp = &conn.Server{Config: conn.Config{Handler: m, Logger: logger}, ConnState: func(_ *conn.Conn, active bool) {
		if active {
			s.ampConns.Add(1)
		} else {
			s.ampConns.Add(-1)
		}
	}}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	if mode == modeShared {
		s.mux = mux.New(l, mux.Config{AMP: s.amp, HTTP: s.http, Logger: logger})
		s.httpAddr, s.ampAddr = l.Addr().String(), l.Addr().String()
		s.served.Go(func() { s.mux.Serve() })
		return s, nil
	}
	host, _, err := net.SplitHostPort(l.Addr().String())
	if err != nil {
		l.Close()
		return nil, err
	}
	la, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		l.Close()
		return nil, err
	}
	s.httpAddr, s.ampAddr = l.Addr().String(), la.Addr().String()
	s.served.Go(func() { s.http.Serve(l) })
	s.served.Go(func() { s.amp.Serve(la) })
	return s, nil
}

// Close closes the listeners and every connection, and waits.
func (s *benchServer) Close() error {
	if s.mux != nil {
		s.mux.Close()
	} else {
		s.http.Close()
		s.amp.Close()
	}
	s.served.Wait()
	return nil
}

// serverStats is a STATS line: what the server process holds, and what
// it has done.
type serverStats struct {
	CPUus      int64 // user + system CPU time of the process, µs
	Requests   int64 // HTTP requests answered
	Calls      int64 // Sum calls answered
	AMPConns   int64
	Goroutines int64
	HeapInuse  int64 // bytes
	StackInuse int64 // bytes
	Sys        int64 // bytes obtained from the OS by the Go runtime
}

func (s *benchServer) stats() serverStats {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return serverStats{CPUus: cpuMicros(), Requests: httpRequests.Load(), Calls: ampCalls.Load(), AMPConns: s.ampConns.Load(), Goroutines: int64(runtime.NumGoroutine()),
		HeapInuse: int64(ms.HeapInuse), StackInuse: int64(ms.StackInuse), Sys: int64(ms.Sys)}
}

func (st serverStats) String() string {
	return fmt.Sprintf("STATS cpu_us=%d requests=%d calls=%d amp_conns=%d goroutines=%d heap_inuse=%d stack_inuse=%d sys=%d",
		st.CPUus, st.Requests, st.Calls, st.AMPConns, st.Goroutines, st.HeapInuse, st.StackInuse, st.Sys)
}

// parseKV reads "TAG k=v k=v ..." into a map; the tag must match.
func parseKV(line, tag string) (map[string]string, error) { return benchkit.ParseKV(line, tag) }

// intFields parses the named integer fields of kv.
func intFields(kv map[string]string, dst map[string]*int64) error {
	var errs []error
	for k, p := range dst {
		v, ok := kv[k]
		if !ok {
			errs = append(errs, fmt.Errorf("no %s", k))
			continue
		}
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", k, err))
		}
		*p = n
	}
	return errors.Join(errs...)
}

func parseStats(line string) (serverStats, error) {
	var st serverStats
	kv, err := parseKV(line, "STATS")
	if err != nil {
		return st, err
	}
	err = intFields(kv, map[string]*int64{"cpu_us": &st.CPUus, "requests": &st.Requests, "calls": &st.Calls, "amp_conns": &st.AMPConns, "goroutines": &st.Goroutines,
		"heap_inuse": &st.HeapInuse, "stack_inuse": &st.StackInuse, "sys": &st.Sys})
	return st, err
}

// serveMain runs serve until stdin closes or ctx ends.
func serveMain(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	mode := fs.String("mode", modeShared, "shared (mux.New on one port) or direct (a port for each server)")
	addr := fs.String("addr", "127.0.0.1:0", "address to listen on (direct: HTTP; AMP gets another port of the same host)")
	cpuprofile := fs.String("cpuprofile", "", "write a CPU profile of the server's whole life to `file`")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if err := checkMode(*mode); err != nil {
		fmt.Fprintf(stderr, "muxbench serve: %v\n", err)
		return errUsage
	}
	benchkit.RaiseFileLimit(1 << 16)
	stopProfile, err := benchkit.StartCPUProfile(*cpuprofile)
	if err != nil {
		return err
	}
	defer stopProfile()
	logger := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	s, err := startBenchServer(*mode, *addr, logger)
	if err != nil {
		return err
	}
	defer s.Close()
	if _, err := fmt.Fprintf(stdout, "LISTENING http=%s amp=%s\n", s.httpAddr, s.ampAddr); err != nil {
		return err
	}
	lines := make(chan string)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(stdin)
		for sc.Scan() {
			lines <- sc.Text()
		}
	}()
	for {
		select {
		case <-ctx.Done():
			return nil
		case line, ok := <-lines:
			if !ok {
				return nil
			}
			cmd, arg, _ := strings.Cut(strings.TrimSpace(line), " ")
			switch cmd {
			case "stats":
				if _, err := fmt.Fprintln(stdout, s.stats()); err != nil {
					return err
				}
			case "heap":
				// A heap profile, for where idle connections' memory goes.
				if err := writeHeapProfile(arg); err != nil {
					fmt.Fprintf(stderr, "muxbench serve: heap profile: %v\n", err)
				}
				if _, err := fmt.Fprintln(stdout, "DONE heap", arg); err != nil {
					return err
				}
			case "":
			default:
				fmt.Fprintf(stderr, "muxbench serve: unknown stdin command %q (stats, heap <file>)\n", line)
			}
		}
	}
}

func writeHeapProfile(path string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	runtime.GC()
	if err := pprof.WriteHeapProfile(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// waitTimeout is how long setup steps (a server starting, idle connections
// opening) may take before the run fails.
const waitTimeout = 60 * time.Second
