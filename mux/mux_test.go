package mux_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/ampmux/ampmux/amp"
	"github.com/ampmux/ampmux/amp/conn"
	"github.com/ampmux/ampmux/amp/switching"
	"github.com/ampmux/ampmux/httpfallback"
	"github.com/ampmux/ampmux/internal/demo"
	"github.com/ampmux/ampmux/internal/interop"
	"github.com/ampmux/ampmux/internal/pki"
	"github.com/ampmux/ampmux/mux"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

type shared struct {
	addr   string
	m      *mux.Server
	ca     *pki.CA
	client *tls.Config
	served chan error
}

// startShared serves AMP (demo commands, StartTLS, an echo switch) and HTTP
// on one port.
func startShared(t *testing.T, cfg mux.Config) *shared {
	ca, err := pki.NewCA("mux CA")
	require.NoError(t, err)
	srvCert, err := ca.Server("localhost", "127.0.0.1")
	require.NoError(t, err)
	cli, err := ca.Client("alice")
	require.NoError(t, err)
	reg := switching.NewRegistry()
	reg.Register("echo", func(c net.Conn, _ switching.Info) {
		defer c.Close()
		io.Copy(c, c)
	}, switching.Policy{})
	m := amp.NewMux()
	demo.Register(m)
	reg.Install(m)
	cfg.AMP = &conn.Server{Config: conn.Config{Handler: m, Logger: quiet(), BoxTimeout: time.Second, TLS: &tls.Config{
		Certificates: []tls.Certificate{srvCert.TLS()}, ClientCAs: ca.Pool(), ClientAuth: tls.VerifyClientCertIfGiven,
	}}}
	mx := http.NewServeMux()
	mx.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "hello "+r.Method+" "+r.Proto)
	})
	mx.HandleFunc("/slow", func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(300 * time.Millisecond)
		io.WriteString(w, "slow done")
	})
	cfg.HTTP = httpfallback.Server(mx)
	if cfg.Logger == nil {
		cfg.Logger = quiet()
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	s := &shared{addr: l.Addr().String(), ca: ca, served: make(chan error, 1)}
	s.client = &tls.Config{RootCAs: ca.Pool(), Certificates: []tls.Certificate{cli.TLS()}, ServerName: "localhost"}
	s.m = mux.New(l, cfg)
	go func() { s.served <- s.m.Serve() }()
	t.Cleanup(func() {
		s.m.Close()
		<-s.served
	})
	return s
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func ampSum(t *testing.T, addr string) {
	t.Helper()
	ctx := ctxT(t)
	c, err := conn.Dial(ctx, "tcp", addr, &conn.Config{Logger: quiet()})
	require.NoError(t, err)
	defer c.Close()
	r, err := demo.Sum.Call(ctx, c, demo.SumArgs{A: big.NewInt(13), B: big.NewInt(81)})
	require.NoError(t, err)
	require.Equal(t, int64(94), r.Total.Int64())
}

func curl(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command("curl", append([]string{"-sS", "--max-time", "10"}, args...)...).CombinedOutput()
	require.NoError(t, err, "curl %v: %s", args, out)
	return string(out)
}

func TestRealClientsShareThePort(t *testing.T) {
	s := startShared(t, mux.Config{})
	url := "http://" + s.addr + "/"
	var wg sync.WaitGroup
	for range 4 { // at the same time
		wg.Go(func() { ampSum(t, s.addr) })
		wg.Go(func() { require.Equal(t, "hello GET HTTP/1.1", curl(t, url)) })
		wg.Go(func() { require.Equal(t, "hello GET HTTP/2.0", curl(t, "--http2-prior-knowledge", url)) })
		wg.Go(func() { require.Equal(t, "hello PATCH HTTP/1.1", curl(t, "-X", "PATCH", url)) })
		wg.Go(func() { require.Equal(t, "hello PROPFIND HTTP/1.1", curl(t, "-X", "PROPFIND", url)) })
	}
	wg.Wait()

	// StartTLS and a protocol switch through the shared port.
	c, err := switching.Dial(ctxT(t), s.addr, "echo", s.client)
	require.NoError(t, err)
	defer c.Close()
	_, err = c.Write([]byte("through the shared port"))
	require.NoError(t, err)
	got := make([]byte, len("through the shared port"))
	_, err = io.ReadFull(c, got)
	require.NoError(t, err)
	require.Equal(t, "through the shared port", string(got))
}

func TestHostileInputIsClosed(t *testing.T) {
	s := startShared(t, mux.Config{SniffTimeout: 400 * time.Millisecond})
	tests := map[string][]byte{
		"garbage":               []byte("\x7f\x45\x4c\x46garbage garbage"),
		"lone NUL":              {0},
		"PostgreSQL SSLRequest": {0, 0, 0, 8, 4, 0xd2, 0x16, 0x2f},
		"endless request line":  append([]byte("GET /"), bytes.Repeat([]byte("a"), 100_000)...),
		"NUL then huge key":     append([]byte{0, 0xff}, bytes.Repeat([]byte("k"), 300)...),
		"lower-case method":     []byte("get / HTTP/1.1\r\n\r\n"),
	}
	for name, payload := range tests {
		t.Run(name, func(t *testing.T) {
			nc, err := net.Dial("tcp", s.addr)
			require.NoError(t, err)
			defer nc.Close()
			nc.Write(payload)
			nc.SetReadDeadline(time.Now().Add(20 * time.Second))
			start := time.Now()
			_, err = io.Copy(io.Discard, nc) // until the server closes
			if err != nil {
				require.NotErrorIs(t, err, os.ErrDeadlineExceeded, "not closed")
			}
			require.Less(t, time.Since(start), 15*time.Second)
		})
	}
	ampSum(t, s.addr)
	require.Equal(t, "hello GET HTTP/1.1", curl(t, "http://"+s.addr+"/"))
}

// With 500 silent and 100 trickling connections, new clients still get
// answers quickly.
func TestSlowClientsDoNotStarveOthers(t *testing.T) {
	if testing.Short() {
		t.Skip("opens 600 connections")
	}
	s := startShared(t, mux.Config{SniffTimeout: 3 * time.Second})
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for range 500 {
		c, err := net.Dial("tcp", s.addr)
		require.NoError(t, err)
		conns = append(conns, c)
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	defer func() { close(stop); wg.Wait() }()
	for range 100 {
		c, err := net.Dial("tcp", s.addr)
		require.NoError(t, err)
		conns = append(conns, c)
		wg.Go(func() {
			tick := time.NewTicker(time.Second)
			defer tick.Stop()
			for {
				select {
				case <-stop:
					return
				case <-tick.C:
					if _, err := c.Write([]byte("G")); err != nil {
						return
					}
				}
			}
		})
	}
	time.Sleep(200 * time.Millisecond)
	for range 3 {
		start := time.Now()
		ampSum(t, s.addr)
		require.Less(t, time.Since(start), 300*time.Millisecond, "AMP call")
		start = time.Now()
		resp, err := http.Get("http://" + s.addr + "/")
		require.NoError(t, err)
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		require.Less(t, time.Since(start), 300*time.Millisecond, "HTTP request")
	}
	http.DefaultClient.CloseIdleConnections()
}

func TestOtherAndOnTimeout(t *testing.T) {
	other := mux.ClassOther
	s := startShared(t, mux.Config{Other: true, OnTimeout: &other, SniffTimeout: 300 * time.Millisecond})
	got := make(chan string, 2)
	go func() {
		for {
			c, err := s.m.Other().Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				c.Write([]byte("server speaks first\n"))
				buf := make([]byte, 8)
				n, _ := io.ReadFull(c, buf)
				got <- string(buf[:n])
			}()
		}
	}()
	// A PostgreSQL SSLRequest goes to Other, its bytes replayed.
	pg, err := net.Dial("tcp", s.addr)
	require.NoError(t, err)
	defer pg.Close()
	pg.Write([]byte{0, 0, 0, 8, 4, 0xd2, 0x16, 0x2f})
	require.Equal(t, "\x00\x00\x00\x08\x04\xd2\x16\x2f", <-got)
	// A client that waits for the server gets there after the timeout.
	quietClient, err := net.Dial("tcp", s.addr)
	require.NoError(t, err)
	defer quietClient.Close()
	line := make([]byte, len("server speaks first\n"))
	quietClient.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err = io.ReadFull(quietClient, line)
	require.NoError(t, err)
	quietClient.Write([]byte("12345678"))
	require.Equal(t, "12345678", <-got)
}

func TestClosingAClassKeepsThePort(t *testing.T) {
	s := startShared(t, mux.Config{})
	require.NoError(t, s.m.TLS().Close())
	_, err := s.m.TLS().Accept()
	require.ErrorIs(t, err, mux.ErrListenerClosed)
	ampSum(t, s.addr)
}

func TestShutdownDrains(t *testing.T) {
	s := startShared(t, mux.Config{})
	ctx := ctxT(t)
	c, err := conn.Dial(ctx, "tcp", s.addr, &conn.Config{Logger: quiet()})
	require.NoError(t, err)
	defer c.Close()
	idle, err := net.Dial("tcp", s.addr) // still sniffing when Shutdown starts
	require.NoError(t, err)
	defer idle.Close()
	var wg sync.WaitGroup
	wg.Go(func() {
		r, err := demo.Slow.Call(ctx, c, demo.SlowArgs{Delay: 0.3})
		require.NoError(t, err)
		require.Equal(t, 0.3, r.Slept)
	})
	wg.Go(func() {
		resp, err := http.Get("http://" + s.addr + "/slow")
		require.NoError(t, err)
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		require.Equal(t, "slow done", string(body))
	})
	time.Sleep(100 * time.Millisecond)
	require.NoError(t, s.m.Shutdown(ctx))
	wg.Wait()
	require.ErrorIs(t, <-s.served, mux.ErrServerClosed)
	s.served <- nil // for the cleanup
	_, err = net.Dial("tcp", s.addr)
	require.Error(t, err, "no longer accepting")
	idle.SetReadDeadline(time.Now().Add(2 * time.Second))
	_, err = idle.Read(make([]byte, 1))
	require.ErrorIs(t, err, io.EOF, "sniffing connection closed")
	http.DefaultClient.CloseIdleConnections()
}

// flakyListener fails Accept with a temporary error n times.
type flakyListener struct {
	net.Listener
	fails atomic.Int32
	tries atomic.Int32
}

type tempErr struct{}

func (tempErr) Error() string   { return "temporary" }
func (tempErr) Temporary() bool { return true }
func (tempErr) Timeout() bool   { return false }

func (f *flakyListener) Accept() (net.Conn, error) {
	f.tries.Add(1)
	if f.fails.Add(-1) >= 0 {
		return nil, tempErr{}
	}
	return f.Listener.Accept()
}

func TestTemporaryAcceptErrorsBackOff(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	fl := &flakyListener{Listener: l}
	fl.fails.Store(1 << 30) // fail for as long as the test looks
	m := amp.NewMux()
	demo.Register(m)
	s := mux.New(fl, mux.Config{Logger: quiet(), AMP: &conn.Server{Config: conn.Config{Handler: m}}})
	done := make(chan error, 1)
	go func() { done <- s.Serve() }()
	time.Sleep(500 * time.Millisecond)
	require.Less(t, fl.tries.Load(), int32(20), "Accept retried in a busy loop")
	fl.fails.Store(0)
	require.Eventually(t, func() bool {
		c, err := net.DialTimeout("tcp", l.Addr().String(), time.Second)
		if err != nil {
			return false
		}
		c.Close()
		return true
	}, 3*time.Second, 10*time.Millisecond)
	ampSum(t, l.Addr().String())
	require.NoError(t, s.Close())
	require.ErrorIs(t, <-done, mux.ErrServerClosed)
}

func TestSniffingCap(t *testing.T) {
	s := startShared(t, mux.Config{MaxSniffing: 2, SniffTimeout: 700 * time.Millisecond})
	for range 2 {
		c, err := net.Dial("tcp", s.addr)
		require.NoError(t, err)
		defer c.Close()
	}
	time.Sleep(50 * time.Millisecond)
	start := time.Now()
	ampSum(t, s.addr) // waits until a silent one times out
	require.Greater(t, time.Since(start), 400*time.Millisecond)
}

var _ = errors.New
var _ = strings.Repeat

// Twisted's AMP client reaches the Go AMP server through the shared port
// while curl uses it too.
func TestTwistedClientThroughSharedPort(t *testing.T) {
	s := startShared(t, mux.Config{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for range 5 {
			require.Equal(t, "hello GET HTTP/2.0", curl(t, "--http2-prior-knowledge", "http://"+s.addr+"/"))
		}
	})
	res := interop.RunTwistedClient(t, s.addr, "--only", "sum_*,divide_*,echo_all_arguments,unknown_command,notify_no_answer")
	wg.Wait()
	require.GreaterOrEqual(t, len(res), 6)
	for name, detail := range res {
		require.Empty(t, detail, name)
	}
}
