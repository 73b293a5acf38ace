package mux_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
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

// Both servers the mux is meant to run fit Config.AMP.
var (
	_ mux.Service = (*conn.Server)(nil)
	_ mux.Service = (*http.Server)(nil)
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// Gate is answered once the test releases it, so that a test knows a call
// is in flight.
type gateReply struct {
	Done string `amp:"done"`
}

var gateCmd = amp.NewCommand[struct{}, gateReply]("Gate", amp.Spec{})

type shared struct {
	addr   string
	m      *mux.Server
	ca     *pki.CA
	client *tls.Config
	served chan error
	http   *http.Client
	h2c    *http.Client

	admits *countingListener // counts the connections the mux has admitted
	seen   int               // of which the test has waited for

	started     chan string   // a gated call or request arrived
	release     chan struct{} // closed by releaseGate
	releaseOnce sync.Once

	ampShutdown  chan struct{} // closed when the mux shuts AMP down
	httpShutdown chan struct{} // closed when the mux shuts HTTP down
}

func (s *shared) releaseGate() { s.releaseOnce.Do(func() { close(s.release) }) }

// waitAdmitted returns once the mux has admitted (or refused) n more
// connections than when it last returned.
func (s *shared) waitAdmitted(t testing.TB, n int) {
	t.Helper()
	s.seen += n
	s.admits.wait(t, s.seen)
}

// recv waits for a value on ch; it fails the test if none comes.
func recv[T any](t testing.TB, ch <-chan T) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(20 * time.Second):
		t.Fatal("timed out waiting")
		panic("unreachable")
	}
}

// countingListener counts the calls to Accept after the first: the mux
// calls it again only once it has admitted (or refused) the connection it
// got from the last call, so the count is of connections it is done with.
type countingListener struct {
	net.Listener
	calls atomic.Int64
	kick  chan struct{} // a token after each call, dropped if one is waiting
}

func newCountingListener(l net.Listener) *countingListener {
	return &countingListener{Listener: l, kick: make(chan struct{}, 1)}
}

func (l *countingListener) Accept() (net.Conn, error) {
	l.calls.Add(1)
	select {
	case l.kick <- struct{}{}:
	default:
	}
	return l.Listener.Accept()
}

// wait returns once the mux is done with n connections in all.
func (l *countingListener) wait(t testing.TB, n int) {
	t.Helper()
	for l.calls.Load()-1 < int64(n) {
		recv(t, l.kick)
	}
}

// watched reports when the mux shuts its AMP server down.
type watched struct {
	mux.Service
	once sync.Once
	ch   chan struct{}
}

func (w *watched) Shutdown(ctx context.Context) error {
	w.once.Do(func() { close(w.ch) })
	return w.Service.Shutdown(ctx)
}

// startShared serves AMP (demo commands, StartTLS, an echo switch, Gate)
// and HTTP on one port.
func startShared(t testing.TB, cfg mux.Config) *shared {
	ca, err := pki.NewCA("mux CA")
	require.NoError(t, err)
	srvCert, err := ca.Server("localhost", "127.0.0.1")
	require.NoError(t, err)
	cli, err := ca.Client("alice")
	require.NoError(t, err)
	s := &shared{ca: ca, served: make(chan error, 1),
		started: make(chan string, 16), release: make(chan struct{}),
		ampShutdown: make(chan struct{}), httpShutdown: make(chan struct{})}
	reg := switching.NewRegistry()
	reg.Register("echo", func(c net.Conn, _ switching.Info) {
		defer c.Close()
		io.Copy(c, c)
	}, switching.Policy{})
	m := amp.NewMux()
	demo.Register(m)
	reg.Install(m)
	amp.Handle(m, gateCmd, func(ctx context.Context, _ struct{}) (gateReply, error) {
		s.started <- "amp"
		select {
		case <-s.release:
			return gateReply{Done: "amp"}, nil
		case <-ctx.Done():
			return gateReply{}, ctx.Err()
		}
	})
	cfg.AMP = &watched{ch: s.ampShutdown, Service: &conn.Server{Config: conn.Config{Handler: m, Logger: quiet(), BoxTimeout: time.Second, TLS: &tls.Config{
		Certificates: []tls.Certificate{srvCert.TLS()}, ClientCAs: ca.Pool(), ClientAuth: tls.VerifyClientCertIfGiven,
	}}}}
	mx := http.NewServeMux()
	mx.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "hello "+r.Method+" "+r.Proto)
	})
	mx.HandleFunc("/gate", func(w http.ResponseWriter, r *http.Request) {
		s.started <- "http"
		select {
		case <-s.release:
			io.WriteString(w, "http")
		case <-r.Context().Done():
		}
	})
	hs := httpfallback.Server(mx)
	hs.RegisterOnShutdown(func() { close(s.httpShutdown) })
	cfg.HTTP = hs
	if cfg.Logger == nil {
		cfg.Logger = quiet()
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	s.addr = l.Addr().String()
	s.client = &tls.Config{RootCAs: ca.Pool(), Certificates: []tls.Certificate{cli.TLS()}, ServerName: "localhost"}
	s.http, s.h2c = clients(t)
	s.admits = newCountingListener(l)
	s.m = mux.New(s.admits, cfg)
	go func() { s.served <- s.m.Serve() }()
	t.Cleanup(func() {
		s.releaseGate()
		s.m.Close()
		<-s.served
	})
	return s
}

// clients returns an HTTP/1 client and an h2c (prior knowledge) one.
func clients(t testing.TB) (h1, h2c *http.Client) {
	var p http.Protocols
	p.SetUnencryptedHTTP2(true)
	h1 = &http.Client{Transport: &http.Transport{}, Timeout: 20 * time.Second}
	h2c = &http.Client{Transport: &http.Transport{Protocols: &p}, Timeout: 20 * time.Second}
	t.Cleanup(h1.CloseIdleConnections)
	t.Cleanup(h2c.CloseIdleConnections)
	return h1, h2c
}

func get(c *http.Client, url string) (string, error) {
	resp, err := c.Get(url)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return string(body), err
}

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func ampSum(ctx context.Context, addr string) error {
	c, err := conn.Dial(ctx, "tcp", addr, &conn.Config{Logger: quiet()})
	if err != nil {
		return err
	}
	defer c.Close()
	r, err := demo.Sum.Call(ctx, c, demo.SumArgs{A: big.NewInt(13), B: big.NewInt(81)})
	if err != nil {
		return err
	}
	if r.Total.Int64() != 94 {
		return fmt.Errorf("13 + 81 = %v", r.Total)
	}
	return nil
}

func curl(args ...string) (string, error) {
	out, err := exec.Command("curl", append([]string{"-sS", "--max-time", "10"}, args...)...).CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("curl %v: %w: %s", args, err, out)
	}
	return string(out), nil
}

// expectCurl is safe in goroutines: it never stops the test.
func expectCurl(t *testing.T, want string, args ...string) {
	got, err := curl(args...)
	if assert.NoError(t, err) {
		assert.Equal(t, want, got)
	}
}

func TestRealClientsShareThePort(t *testing.T) {
	s := startShared(t, mux.Config{})
	ctx := ctxT(t)
	url := "http://" + s.addr + "/"
	var wg sync.WaitGroup
	for range 4 { // at the same time
		wg.Go(func() { assert.NoError(t, ampSum(ctx, s.addr)) })
		wg.Go(func() { expectCurl(t, "hello GET HTTP/1.1", url) })
		wg.Go(func() { expectCurl(t, "hello GET HTTP/2.0", "--http2-prior-knowledge", url) })
		wg.Go(func() { expectCurl(t, "hello PATCH HTTP/1.1", "-X", "PATCH", url) })
		wg.Go(func() { expectCurl(t, "hello PROPFIND HTTP/1.1", "-X", "PROPFIND", url) })
	}
	wg.Wait()

	// StartTLS and a protocol switch through the shared port.
	c, err := switching.Dial(ctx, s.addr, "echo", s.client)
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
	require.NoError(t, ampSum(ctxT(t), s.addr))
	got, err := curl("http://" + s.addr + "/")
	require.NoError(t, err)
	require.Equal(t, "hello GET HTTP/1.1", got)
}

// A request shorter than the h2c preface is answered at once, not when
// sniffing times out: the HTTP/2 matcher gives up on the first byte that
// differs.
func TestRequestShorterThanThePreface(t *testing.T) {
	s := startShared(t, mux.Config{SniffTimeout: time.Hour})
	nc, err := net.Dial("tcp", s.addr)
	require.NoError(t, err)
	defer nc.Close()
	_, err = io.WriteString(nc, "GET / HTTP/1.0\r\n\r\n") // 18 bytes; the preface is 24
	require.NoError(t, err)
	nc.SetReadDeadline(time.Now().Add(20 * time.Second))
	got, err := io.ReadAll(nc)
	require.NoError(t, err)
	require.Contains(t, string(got), "hello GET HTTP/1.0")
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
	require.Equal(t, "\x00\x00\x00\x08\x04\xd2\x16\x2f", recv(t, got))
	// A client that waits for the server gets there after the timeout.
	quietClient, err := net.Dial("tcp", s.addr)
	require.NoError(t, err)
	defer quietClient.Close()
	line := make([]byte, len("server speaks first\n"))
	quietClient.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err = io.ReadFull(quietClient, line)
	require.NoError(t, err)
	quietClient.Write([]byte("12345678"))
	require.Equal(t, "12345678", recv(t, got))
}

func TestClosingAClassKeepsThePort(t *testing.T) {
	s := startShared(t, mux.Config{})
	require.NoError(t, s.m.TLS().Close())
	_, err := s.m.TLS().Accept()
	require.ErrorIs(t, err, mux.ErrListenerClosed)
	require.NoError(t, ampSum(ctxT(t), s.addr))
}

func TestShutdownDrains(t *testing.T) {
	s := startShared(t, mux.Config{})
	ctx := ctxT(t)
	idle, err := net.Dial("tcp", s.addr) // still sniffing when Shutdown starts
	require.NoError(t, err)
	defer idle.Close()
	// Accepted first, so being sniffed by the time the calls below arrive.
	s.waitAdmitted(t, 1)
	c, err := conn.Dial(ctx, "tcp", s.addr, &conn.Config{Logger: quiet()})
	require.NoError(t, err)
	defer c.Close()
	var wg sync.WaitGroup
	wg.Go(func() {
		r, err := gateCmd.Call(ctx, c, struct{}{})
		assert.NoError(t, err)
		assert.Equal(t, "amp", r.Done)
	})
	wg.Go(func() {
		body, err := get(s.http, "http://"+s.addr+"/gate")
		assert.NoError(t, err)
		assert.Equal(t, "http", body)
	})
	recv(t, s.started)
	recv(t, s.started)

	shut := make(chan error, 1)
	go func() { shut <- s.m.Shutdown(ctx) }()
	recv(t, s.ampShutdown)
	recv(t, s.httpShutdown)
	_, err = net.Dial("tcp", s.addr)
	require.Error(t, err, "no longer accepting")
	select {
	case err := <-shut:
		t.Fatalf("Shutdown returned with a call and a request in flight: %v", err)
	default:
	}
	s.releaseGate()
	require.NoError(t, recv(t, shut))
	wg.Wait()
	require.ErrorIs(t, recv(t, s.served), mux.ErrServerClosed)
	s.served <- nil // for the cleanup
	idle.SetReadDeadline(time.Now().Add(2 * time.Second))
	_, err = idle.Read(make([]byte, 1))
	require.ErrorIs(t, err, io.EOF, "sniffing connection closed")
}

// fakeListener fails Accept with a temporary error while fails is set,
// then hands out conns; it never touches the network, for synctest.
type fakeListener struct {
	fails  atomic.Bool
	tries  atomic.Int32
	conns  chan net.Conn
	closed chan struct{}
	once   sync.Once
}

type tempErr struct{}

func (tempErr) Error() string   { return "temporary" }
func (tempErr) Temporary() bool { return true }
func (tempErr) Timeout() bool   { return false }

func (f *fakeListener) Accept() (net.Conn, error) {
	f.tries.Add(1)
	if f.fails.Load() {
		return nil, tempErr{}
	}
	select {
	case nc := <-f.conns:
		return nc, nil
	case <-f.closed:
		return nil, net.ErrClosed
	}
}

func (f *fakeListener) Close() error {
	f.once.Do(func() { close(f.closed) })
	return nil
}

func (f *fakeListener) Addr() net.Addr { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)} }

func TestTemporaryAcceptErrorsBackOff(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fl := &fakeListener{conns: make(chan net.Conn), closed: make(chan struct{})}
		fl.fails.Store(true)
		s := mux.New(fl, mux.Config{Logger: quiet()})
		done := make(chan error, 1)
		go func() { done <- s.Serve() }()
		time.Sleep(time.Second) // of the bubble's clock
		synctest.Wait()
		// 5 ms doubling up to 1 s: 8 tries in the first second.
		require.Less(t, fl.tries.Load(), int32(12), "Accept retried in a busy loop")
		require.GreaterOrEqual(t, fl.tries.Load(), int32(5), "Accept not retried")

		fl.fails.Store(false)
		client, server := net.Pipe()
		defer client.Close()
		fl.conns <- server
		go client.Write([]byte("\x00\x04Ping"))
		nc, err := s.AMP().Accept()
		require.NoError(t, err)
		defer nc.Close()
		got := make([]byte, 6)
		_, err = io.ReadFull(nc, got)
		require.NoError(t, err)
		require.Equal(t, "\x00\x04Ping", string(got))

		require.NoError(t, s.Close())
		require.ErrorIs(t, <-done, mux.ErrServerClosed)
	})
}

// Twisted's AMP client reaches the Go AMP server through the shared port
// while curl uses it too.
func TestTwistedClientThroughSharedPort(t *testing.T) {
	s := startShared(t, mux.Config{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for range 5 {
			expectCurl(t, "hello GET HTTP/2.0", "--http2-prior-knowledge", "http://"+s.addr+"/")
		}
	})
	res := interop.RunTwistedClient(t, s.addr, "--only", "sum_*,divide_*,echo_all_arguments,unknown_command,notify_no_answer")
	wg.Wait()
	require.GreaterOrEqual(t, len(res), 6)
	for name, detail := range res {
		require.Empty(t, detail, name)
	}
}

// startHTTP runs hs alone behind a mux.
func startHTTP(t *testing.T, hs *http.Server) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	m := mux.New(l, mux.Config{HTTP: hs, Logger: quiet()})
	served := make(chan error, 1)
	go func() { served <- m.Serve() }()
	t.Cleanup(func() {
		m.Close()
		<-served
	})
	return l.Addr().String()
}

// h2cAsHTTP1 sends the h2c preface and returns the HTTP/1 answer's body,
// or "not HTTP/1" (HTTP/2 frames, say).
func h2cAsHTTP1(t *testing.T, addr string) string {
	nc, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	defer nc.Close()
	nc.SetDeadline(time.Now().Add(10 * time.Second))
	_, err = io.WriteString(nc, "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
	require.NoError(t, err)
	br := bufio.NewReader(nc)
	if head, err := br.Peek(5); err != nil || string(head) != "HTTP/" {
		return "not HTTP/1"
	}
	resp, err := http.ReadResponse(br, nil)
	require.NoError(t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return string(body)
}

func TestHTTPProtocols(t *testing.T) {
	proto := func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, r.Method+" "+r.Proto) }

	t.Run("nil Protocols: HTTP/1 and h2c, the server left alone", func(t *testing.T) {
		var states atomic.Int32
		hs := &http.Server{Handler: http.HandlerFunc(proto), ConnState: func(net.Conn, http.ConnState) { states.Add(1) }}
		addr := startHTTP(t, hs)
		h1, h2c := clients(t)
		got, err := get(h1, "http://"+addr+"/")
		require.NoError(t, err)
		require.Equal(t, "GET HTTP/1.1", got)
		before := states.Load()
		got, err = get(h2c, "http://"+addr+"/")
		require.NoError(t, err)
		require.Equal(t, "GET HTTP/2.0", got)
		require.Greater(t, states.Load(), before, "h2c connections reach hs.ConnState")
		require.Nil(t, hs.Protocols)
	})

	// Without h2c, net/http hands the preface to the handler as a request,
	// as it would on a port of its own.
	t.Run("Protocols are obeyed: no h2c unless asked", func(t *testing.T) {
		p := new(http.Protocols)
		p.SetHTTP1(true)
		hs := &http.Server{Handler: http.HandlerFunc(proto), Protocols: p}
		addr := startHTTP(t, hs)
		h1, _ := clients(t)
		got, err := get(h1, "http://"+addr+"/")
		require.NoError(t, err)
		require.Equal(t, "GET HTTP/1.1", got)
		require.Equal(t, "PRI HTTP/2.0", h2cAsHTTP1(t, addr))
		require.Same(t, p, hs.Protocols)
		require.False(t, p.UnencryptedHTTP2())
	})

	t.Run("Protocols with h2c", func(t *testing.T) {
		addr := startHTTP(t, httpfallback.Server(http.HandlerFunc(proto)))
		h1, h2c := clients(t)
		got, err := get(h1, "http://"+addr+"/")
		require.NoError(t, err)
		require.Equal(t, "GET HTTP/1.1", got)
		got, err = get(h2c, "http://"+addr+"/")
		require.NoError(t, err)
		require.Equal(t, "GET HTTP/2.0", got)
	})

	t.Run("nil Protocols, HTTP/2 turned off through TLSNextProto", func(t *testing.T) {
		hs := &http.Server{Handler: http.HandlerFunc(proto), TLSNextProto: map[string]func(*http.Server, *tls.Conn, http.Handler){}}
		addr := startHTTP(t, hs)
		require.Equal(t, "PRI HTTP/2.0", h2cAsHTTP1(t, addr))
		require.Nil(t, hs.Protocols)
	})
}

// Conn replays the sniffed bytes, half-closes, and keeps the socket to
// itself.
func TestConnHidesTheSocket(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	m := mux.New(l, mux.Config{Logger: quiet()})
	served := make(chan error, 1)
	go func() { served <- m.Serve() }()
	defer func() {
		m.Close()
		<-served
	}()
	client, err := net.Dial("tcp", l.Addr().String())
	require.NoError(t, err)
	defer client.Close()
	_, err = client.Write([]byte("\x00\x04Ping"))
	require.NoError(t, err)
	nc, err := m.AMP().Accept()
	require.NoError(t, err)
	defer nc.Close()
	_, isSyscall := nc.(syscall.Conn)
	require.False(t, isSyscall)
	got := make([]byte, 6)
	_, err = io.ReadFull(nc, got)
	require.NoError(t, err)
	require.Equal(t, "\x00\x04Ping", string(got))
	cw, ok := nc.(interface{ CloseWrite() error })
	require.True(t, ok)
	require.NoError(t, cw.CloseWrite())
	client.SetReadDeadline(time.Now().Add(10 * time.Second))
	n, err := client.Read(make([]byte, 1))
	require.Zero(t, n)
	require.ErrorIs(t, err, io.EOF)
}

// errorLog sends the messages of error records to ch.
type errorLog struct{ ch chan string }

func (h errorLog) Enabled(_ context.Context, l slog.Level) bool { return l >= slog.LevelError }
func (h errorLog) Handle(_ context.Context, r slog.Record) error {
	msg := r.Message
	r.Attrs(func(a slog.Attr) bool { msg += " " + a.String(); return true })
	h.ch <- msg
	return nil
}
func (h errorLog) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h errorLog) WithGroup(string) slog.Handler      { return h }

// failing is a Service whose Serve fails at once.
type failing struct{ err error }

func (f failing) Serve(net.Listener) error       { return f.err }
func (f failing) Shutdown(context.Context) error { return nil }
func (f failing) Close() error                   { return nil }

func TestOwnedServerStopping(t *testing.T) {
	start := func(t *testing.T, srv mux.Service) (*mux.Server, chan string) {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		require.NoError(t, err)
		logged := make(chan string, 16)
		m := mux.New(l, mux.Config{AMP: srv, Logger: slog.New(errorLog{logged})})
		served := make(chan error, 1)
		go func() { served <- m.Serve() }()
		t.Cleanup(func() {
			m.Close()
			<-served
		})
		return m, logged
	}

	t.Run("a failure is logged", func(t *testing.T) {
		_, logged := start(t, failing{errors.New("boom")})
		require.Contains(t, recv(t, logged), "boom")
	})

	t.Run("a stop by its owner is not", func(t *testing.T) {
		srv := &conn.Server{Config: conn.Config{Logger: quiet()}}
		m, logged := start(t, srv)
		require.NoError(t, srv.Shutdown(ctxT(t)))
		m.Close() // waits for the owned servers' Serve
		select {
		case msg := <-logged:
			t.Fatalf("logged: %s", msg)
		default:
		}
	})

	t.Run("nor is the mux's own stop", func(t *testing.T) {
		srv := &conn.Server{Config: conn.Config{Logger: quiet()}}
		m, logged := start(t, srv)
		require.NoError(t, m.Shutdown(ctxT(t)))
		select {
		case msg := <-logged:
			t.Fatalf("logged: %s", msg)
		default:
		}
	})
}
