package main

// Tests of the client commands (forward, connect, call, cert, bench), run in
// process through run() against real servers started here.

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/ampmux/ampmux/amp"
	"github.com/ampmux/ampmux/amp/conn"
	"github.com/ampmux/ampmux/amp/switching"
	"github.com/ampmux/ampmux/internal/demo"
	"github.com/ampmux/ampmux/internal/interop"
	"github.com/ampmux/ampmux/internal/pki"
)

// ctNoLeaks checks, once the test and its other cleanups are done, that
// it left no goroutine behind. Call it first.
func ctNoLeaks(t *testing.T) {
	opts := []goleak.Option{goleak.IgnoreCurrent(), goleak.IgnoreTopFunction("os/signal.loop")}
	t.Cleanup(func() { goleak.VerifyNone(t, opts...) })
}

// ctRun runs one command line in process.
func ctRun(args ...string) (code int, stdout, stderr string) {
	var out, errOut logBuf
	code = run(&env{stdin: strings.NewReader(""), stdout: &out, stderr: &errOut}, args)
	return code, out.String(), errOut.String()
}

// ctGateway is an AMP server with the demo commands, StartTLS, and inner
// protocols: "echo" (TLS, certificate "client" only), "secret" (TLS,
// certificate "operator" only), "plain" (plaintext allowed) and "down"
// (its backend is down: UNAVAILABLE).
type ctGateway struct {
	addr string
	dir  string // the PEM files of `ampmux cert`
	mu   sync.Mutex
	open map[net.Conn]struct{}
	wg   sync.WaitGroup
}

func (g *ctGateway) file(name string) string { return filepath.Join(g.dir, name) }

// tlsArgs are the flags of a client that trusts the CA and shows the
// "client" certificate.
func (g *ctGateway) tlsArgs() []string {
	return []string{"--ca", g.file(pki.CAFile), "--cert", g.file(pki.ClientFile), "--key", g.file(pki.ClientKeyFile)}
}

func ctStartGateway(t *testing.T) *ctGateway {
	t.Helper()
	g := &ctGateway{dir: t.TempDir(), open: map[net.Conn]struct{}{}}
	if code, _, stderr := ctRun("cert", "--out", g.dir); code != 0 {
		t.Fatalf("cert: exit %d: %s", code, stderr)
	}
	pair, err := tls.LoadX509KeyPair(g.file(pki.ServerFile), g.file(pki.ServerKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	pool, err := loadPool(g.file(pki.CAFile))
	if err != nil {
		t.Fatal(err)
	}
	echo := func(c net.Conn, _ switching.Info) {
		defer g.wg.Done()
		defer c.Close()
		g.mu.Lock()
		g.open[c] = struct{}{}
		g.mu.Unlock()
		io.Copy(c, c)
		g.mu.Lock()
		delete(g.open, c)
		g.mu.Unlock()
	}
	track := func(c net.Conn, info switching.Info) {
		g.wg.Add(1)
		echo(c, info)
	}
	reg := switching.NewRegistry()
	reg.Register("echo", track, switching.Policy{AllowedNames: []string{"client"}})
	reg.Register("secret", track, switching.Policy{AllowedNames: []string{"operator"}})
	reg.Register("plain", track, switching.Policy{AllowPlaintext: true})
	reg.Register("down", track, switching.Policy{AllowPlaintext: true,
		Prepare: func(context.Context, switching.Info) (any, error) { return nil, errors.New("connection refused") }})
	m := amp.NewMux()
	demo.Register(m)
	reg.Install(m)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &conn.Server{Config: conn.Config{Handler: m,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
		TLS: &tls.Config{
			Certificates: []tls.Certificate{pair},
			ClientCAs:    pool,
			ClientAuth:   tls.VerifyClientCertIfGiven,
		},
	}}
	served := make(chan struct{})
	go func() {
		defer close(served)
		srv.Serve(l)
	}()
	t.Cleanup(func() {
		srv.Close()
		<-served
		g.mu.Lock()
		for c := range g.open {
			c.Close()
		}
		g.mu.Unlock()
		g.wg.Wait()
	})
	g.addr = l.Addr().String()
	return g
}

// ctForward is a forward command running in process.
type ctForward struct {
	addr   string
	stderr *logBuf
	stop   context.CancelFunc
	done   chan int
}

// ctStartForward runs `ampmux forward args...` and waits for its
// "forwarding" line; a cleanup stops it.
func ctStartForward(t *testing.T, args ...string) *ctForward {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	f := &ctForward{stderr: &logBuf{}, stop: cancel, done: make(chan int, 1)}
	stdout := &logBuf{}
	go func() {
		f.done <- run(&env{ctx: ctx, stdin: strings.NewReader(""), stdout: stdout, stderr: f.stderr}, append([]string{"forward"}, args...))
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-f.done:
		case <-time.After(20 * time.Second):
			t.Error("forward did not stop")
		}
	})
	line := regexp.MustCompile(`^forwarding (\S+) -> (\S+) protocol (\S+)\n$`)
	deadline := time.Now().Add(10 * time.Second)
	for {
		if m := line.FindStringSubmatch(stdout.String()); m != nil {
			f.addr = m[1]
			return f
		}
		select {
		case code := <-f.done:
			f.done <- code
			t.Fatalf("forward exited %d before listening: stdout %q stderr %q", code, stdout.String(), f.stderr.String())
		case <-time.After(10 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("forward printed %q, stderr %q", stdout.String(), f.stderr.String())
		}
	}
}

// exit stops forward and returns its exit status.
func (f *ctForward) exit(t *testing.T) int {
	t.Helper()
	f.stop()
	select {
	case code := <-f.done:
		f.done <- code
		return code
	case <-time.After(20 * time.Second):
		t.Fatal("forward did not stop")
		return -1
	}
}

// ctEcho sends n random bytes through c while reading them back.
func ctEcho(t *testing.T, c net.Conn, n int) {
	t.Helper()
	if err := echoThrough(c, n); err != nil {
		t.Fatal(err)
	}
}

// echoThrough is ctEcho for goroutines, which may not stop the test.
func echoThrough(c net.Conn, n int) error {
	payload := make([]byte, n)
	rand.Read(payload)
	errc := make(chan error, 1)
	go func() {
		for off := 0; off < n; off += 64 << 10 {
			if _, err := c.Write(payload[off:min(off+64<<10, n)]); err != nil {
				errc <- err
				return
			}
		}
		errc <- nil
	}()
	got := make([]byte, n)
	c.SetReadDeadline(time.Now().Add(30 * time.Second))
	if _, err := io.ReadFull(c, got); err != nil {
		return fmt.Errorf("reading the echo: %w", err)
	}
	c.SetReadDeadline(time.Time{})
	if err := <-errc; err != nil {
		return fmt.Errorf("writing: %w", err)
	}
	if !bytes.Equal(got, payload) {
		return errors.New("the echo differs from what was sent")
	}
	return nil
}

// ctEchoHalfClose sends n bytes, half-closes, and reads the echo to EOF:
// the half-close has to cross the tunnel for the EOF to come back, and the
// answer must not be cut short.
func ctEchoHalfClose(t *testing.T, c net.Conn, n int) {
	t.Helper()
	payload := make([]byte, n)
	rand.Read(payload)
	errc := make(chan error, 1)
	go func() {
		_, err := c.Write(payload)
		if err == nil {
			err = c.(*net.TCPConn).CloseWrite()
		}
		errc <- err
	}()
	c.SetReadDeadline(time.Now().Add(30 * time.Second))
	got, err := io.ReadAll(c)
	if err != nil {
		t.Fatalf("reading the echo: %v", err)
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, payload) {
		t.Fatalf("echo after half-close: %d bytes, want %d", len(got), n)
	}
}

func ctDial(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// ctFreeAddr is an address where nothing listens.
func ctFreeAddr(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

func TestClientHelp(t *testing.T) {
	for _, name := range []string{"forward", "connect", "call", "cert", "bench"} {
		code, stdout, stderr := ctRun(name, "--help")
		if code != 0 || stderr != "" {
			t.Errorf("%s --help: exit %d, stderr %q", name, code, stderr)
		}
		for _, want := range []string{"Usage: ampmux " + name, "Flags:", "Example:\n  "} {
			if !strings.Contains(stdout, want) {
				t.Errorf("%s --help lacks %q:\n%s", name, want, stdout)
			}
		}
	}
}

// Bad usage: one line on stderr, exit 2, before anything is dialed.
func TestClientUsageErrors(t *testing.T) {
	ctNoLeaks(t)
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"forward", "--protocol", "x", "--listen", "127.0.0.1:0"}, "--server is required"},
		{[]string{"forward", "--server", "h:1", "--listen", "127.0.0.1:0"}, "--protocol is required"},
		{[]string{"forward", "--server", "h:1", "--protocol", "x"}, "--listen is required"},
		{[]string{"forward", "--server", "h", "--protocol", "x", "--listen", ":0"}, "not HOST:PORT"},
		{[]string{"forward", "--server", "h:1", "--protocol", "x", "--listen", ":0", "--insecure-plaintext", "--ca", "ca.pem"}, "cannot be combined"},
		{[]string{"forward", "--server", "h:1", "--protocol", "x", "--listen", ":0", "--cert", "c.pem"}, "--cert and --key go together"},
		{[]string{"forward", "--bogus"}, "flag provided but not defined: -bogus"},
		{[]string{"connect", "--server", "h:1"}, "--protocol is required"},
		{[]string{"connect", "--server", "h:1", "--protocol", "x", "extra"}, `unexpected argument "extra"`},
		{[]string{"call", "Sum"}, "--server is required"},
		{[]string{"call", "--server", "h:1"}, "missing COMMAND"},
		{[]string{"call", "--server"}, "flag needs an argument: -server"},
		{[]string{"call", "--server", "h:1", "--nope", "Sum"}, "flag provided but not defined: -nope"},
		{[]string{"call", "--server", "h:1", "Sum", "a"}, `argument "a" is not key=value`},
		{[]string{"call", "--server", "h:1", "Sum", "=1"}, "empty key"},
		{[]string{"call", "--server", "h:1", "Sum", "_ask=1"}, "starts with '_'"},
		{[]string{"call", "--server", "h:1", "Sum", "a=1", "a=2"}, `key "a" given twice`},
		{[]string{"call", "--server", "h:1", "Sum", "a=1", "--timeout"}, "flags go before COMMAND"},
		{[]string{"cert"}, "--out is required"},
		{[]string{"cert", "--out", t.TempDir(), "--host", "example.com:443"}, "without port"},
		{[]string{"bench"}, "--server is required"},
		{[]string{"bench", "--server", "h:1", "--concurrency", "2", "--connections", "3"}, "more than --concurrency"},
		{[]string{"bench", "--server", "h:1", "--duration", "0s"}, "--duration must be positive"},
		{[]string{"bench", "--server", "h:1", "--concurrency", "x"}, "invalid value"},
	}
	for _, tt := range tests {
		code, stdout, stderr := ctRun(tt.args...)
		if code != exitUsage || !strings.Contains(stderr, tt.want) || stdout != "" {
			t.Errorf("%q: exit %d, stdout %q, stderr %q; want exit 2 and %q", tt.args, code, stdout, stderr, tt.want)
		}
		if strings.Count(stderr, "\n") != 1 {
			t.Errorf("%q: stderr is not one line: %q", tt.args, stderr)
		}
	}
}

// A few MiB each way through forward, on two tunnels at once, and a
// half-close that carries the EOF through while the echo comes back.
func TestForwardCarriesBothWays(t *testing.T) {
	ctNoLeaks(t)
	g := ctStartGateway(t)
	f := ctStartForward(t, append([]string{"--server", g.addr, "--protocol", "echo", "--listen", "127.0.0.1:0"}, g.tlsArgs()...)...)
	var wg sync.WaitGroup
	for _, n := range []int{3<<20 + 17, 2 << 20} {
		c := ctDial(t, f.addr)
		wg.Go(func() {
			if err := echoThrough(c, n); err != nil {
				t.Errorf("%d bytes: %v", n, err)
			}
			c.Close()
		})
	}
	wg.Wait()
	ctEchoHalfClose(t, ctDial(t, f.addr), 1<<20+3)
	start := time.Now()
	if code := f.exit(t); code != 0 {
		t.Fatalf("forward exited %d: %s", code, f.stderr.String())
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("forward took %v to stop with no tunnel open", d)
	}
	if s := f.stderr.String(); strings.Contains(s, "failed") || strings.Contains(s, "ended") || strings.Contains(s, "closed") {
		t.Errorf("stderr: %q", s)
	}
}

// A refused switch closes the local connection and logs one line with the
// step and the code.
func TestForwardLogsRefusals(t *testing.T) {
	ctNoLeaks(t)
	g := ctStartGateway(t)
	tests := []struct {
		protocol string
		extra    []string
		want     string
	}{
		{"secret", g.tlsArgs(), "switch failed: FORBIDDEN: "},
		{"echo", []string{"--ca", g.file(pki.CAFile)}, "switch failed: FORBIDDEN: "}, // no certificate
		{"nosuch", g.tlsArgs(), "switch failed: UNKNOWN_PROTOCOL: "},
		{"echo", []string{"--server-name", "elsewhere.example", "--ca", g.file(pki.CAFile)}, "starttls failed: TLS: "},
		{"echo", nil, "starttls failed: TLS: "}, // the system roots do not know our CA
		{"down", []string{"--insecure-plaintext"}, "switch failed: UNAVAILABLE: "},
		{"echo", []string{"--insecure-plaintext"}, "switch failed: TLS_REQUIRED: "},
	}
	for _, tt := range tests {
		f := ctStartForward(t, append([]string{"--server", g.addr, "--protocol", tt.protocol, "--listen", "127.0.0.1:0"}, tt.extra...)...)
		c := ctDial(t, f.addr)
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		if n, err := c.Read(make([]byte, 1)); n != 0 || (err != io.EOF && !errors.Is(err, syscall.ECONNRESET)) {
			t.Errorf("%s %v: local read got %d, %v; want the connection closed", tt.protocol, tt.extra, n, err)
		}
		f.stderr.waitFor(t, tt.want)
		lines := strings.Split(strings.TrimSpace(f.stderr.String()), "\n")
		var refusals []string
		for _, l := range lines {
			if strings.Contains(l, "failed") {
				refusals = append(refusals, l)
			}
		}
		if len(refusals) != 1 || !strings.HasPrefix(refusals[0], "ampmux forward: 127.0.0.1:") {
			t.Errorf("%s %v: stderr %q; want one line with %q", tt.protocol, tt.extra, f.stderr.String(), tt.want)
		}
		if code := f.exit(t); code != 0 {
			t.Errorf("exit %d", code)
		}
	}
}

func TestForwardInsecurePlaintext(t *testing.T) {
	ctNoLeaks(t)
	g := ctStartGateway(t)
	f := ctStartForward(t, "--server", g.addr, "--protocol", "plain", "--listen", "127.0.0.1:0", "--insecure-plaintext")
	c := ctDial(t, f.addr)
	ctEcho(t, c, 1<<20)
	c.Close()
	ctEchoHalfClose(t, ctDial(t, f.addr), 100_000)
	start := time.Now()
	if code := f.exit(t); code != 0 {
		t.Fatalf("exit %d", code)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("forward took %v to stop with no tunnel open", d)
	}
	if !strings.Contains(f.stderr.String(), "warning: --insecure-plaintext") {
		t.Errorf("no plaintext warning: %q", f.stderr.String())
	}
}

// On a signal forward stops accepting at once, lets open tunnels go on
// until they end or --grace runs out, and exits 0.
func TestForwardGrace(t *testing.T) {
	ctNoLeaks(t)
	g := ctStartGateway(t)
	base := append([]string{"--server", g.addr, "--protocol", "echo", "--listen", "127.0.0.1:0"}, g.tlsArgs()...)

	// A tunnel that ends within the grace period: forward exits soon after.
	f := ctStartForward(t, append(base, "--grace", "20s")...)
	c := ctDial(t, f.addr)
	ctEcho(t, c, 1000)
	f.stop()
	// Logged once the listener is closed.
	f.stderr.waitFor(t, "ampmux forward: stopping")
	if lc, err := net.DialTimeout("tcp", f.addr, time.Second); err == nil {
		lc.Close()
		t.Fatal("forward still accepts after the signal")
	}
	ctEcho(t, c, 100_000) // still carried
	select {
	case code := <-f.done:
		t.Fatalf("forward exited (%d) with a tunnel open", code)
	default:
	}
	start := time.Now()
	c.Close()
	if code := f.exit(t); code != 0 || time.Since(start) > 5*time.Second {
		t.Fatalf("exit %d after %v", code, time.Since(start))
	}

	// A tunnel that outlives the grace period is closed.
	f = ctStartForward(t, append(base, "--grace", "300ms")...)
	c = ctDial(t, f.addr)
	ctEcho(t, c, 1000)
	start = time.Now()
	if code := f.exit(t); code != 0 {
		t.Fatalf("exit %d", code)
	}
	if d := time.Since(start); d < 250*time.Millisecond || d > 10*time.Second {
		t.Errorf("forward took %v to stop with --grace 300ms", d)
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err == nil {
		t.Error("the tunnel is still open after the grace period")
	}
	if !strings.Contains(f.stderr.String(), "closed the tunnels still open after 300ms") {
		t.Errorf("stderr %q", f.stderr.String())
	}
}

func TestConnectStdio(t *testing.T) {
	ctNoLeaks(t)
	g := ctStartGateway(t)
	inR, inW := io.Pipe()
	outR, outW := io.Pipe()
	stderr := &logBuf{}
	done := make(chan int, 1)
	go func() {
		done <- run(&env{stdin: inR, stdout: outW, stderr: stderr},
			append([]string{"connect", "--server", g.addr, "--protocol", "echo"}, g.tlsArgs()...))
	}()
	payload := make([]byte, 2<<20+5)
	rand.Read(payload)
	go func() {
		inW.Write(payload)
		inW.Close() // EOF on stdin: connect half-closes the tunnel
	}()
	got, err := io.ReadAll(outR)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, payload) {
		t.Fatalf("echoed %d bytes, want %d", len(got), len(payload))
	}
	select {
	case code := <-done:
		if code != 0 || stderr.String() != "" {
			t.Fatalf("exit %d, stderr %q", code, stderr.String())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("connect did not exit once both directions ended")
	}

	// A refused switch: exit 1 with the step and the code.
	code, stdout, errOut := ctRun(append([]string{"connect", "--server", g.addr, "--protocol", "secret"}, g.tlsArgs()...)...)
	if code != exitFailure || stdout != "" || !strings.Contains(errOut, "switch failed: FORBIDDEN") || strings.Count(errOut, "\n") != 1 {
		t.Fatalf("exit %d, stdout %q, stderr %q", code, stdout, errOut)
	}
	code, _, errOut = ctRun("connect", "--server", ctFreeAddr(t), "--protocol", "echo", "--insecure-plaintext")
	if code != exitFailure || !strings.Contains(errOut, "connect failed: ") || !strings.Contains(errOut, "refused") {
		t.Fatalf("exit %d, stderr %q", code, errOut)
	}
}

func TestCall(t *testing.T) {
	ctNoLeaks(t)
	g := ctStartGateway(t)
	tests := []struct {
		name           string
		args           []string
		code           int
		stdout, stderr string
	}{
		{"sum", []string{"Sum", "a=13", "b=81"}, 0, `{"total":"94"}` + "\n", ""},
		{"sum over TLS", append(append([]string{}, g.tlsArgs()...), "Sum", "a=13", "b=81"), 0, `{"total":"94"}` + "\n", ""},
		{"error answer", []string{"Divide", "numerator=1", "denominator=0"}, exitRemoteErr, "", "ZERO_DIVISION: division by zero\n"},
		{"unknown command", []string{"NoSuchCommand"}, exitRemoteErr, "", "UNHANDLED: "},
		{"bad argument", []string{"Sum", "a=x", "b=1"}, exitRemoteErr, "", "UNKNOWN: "},
		{"escapes", []string{"Echo", "text=a\"b\\\n\t<&>é\u2028", "bytes=\xff\x00z\xef\xbf\xbd", "blobs="},
			0, `{"blobs":"","bytes":"\udcff\u0000z` + "\uFFFD" + `","text":"a\"b\\\n\t<&>é\u2028"}` + "\n", ""},
	}
	for _, tt := range tests {
		code, stdout, stderr := ctRun(append([]string{"call", "--server", g.addr}, tt.args...)...)
		if code != tt.code || stdout != tt.stdout || !strings.HasPrefix(stderr, tt.stderr) || (tt.stderr == "" && stderr != "") {
			t.Errorf("%s: exit %d, stdout %q, stderr %q; want %d, %q, %q", tt.name, code, stdout, stderr, tt.code, tt.stdout, tt.stderr)
		}
		if stdout != "" && !json.Valid([]byte(stdout)) {
			t.Errorf("%s: not JSON: %s", tt.name, stdout)
		}
		if tt.code == exitRemoteErr && strings.Count(stderr, "\n") != 1 {
			t.Errorf("%s: stderr not one line: %q", tt.name, stderr)
		}
	}

	// Connection failures: exit 1.
	for _, args := range [][]string{
		{"--server", ctFreeAddr(t), "Sum", "a=1", "b=2"},
		{"--server", g.addr, "--ca", g.file(pki.CAFile), "--server-name", "other.example", "Sum"},
		{"--server", g.addr, "--ca", filepath.Join(g.dir, "missing.pem"), "Sum"},
	} {
		code, stdout, stderr := ctRun(append([]string{"call"}, args...)...)
		if code != exitFailure || stdout != "" || stderr == "" || strings.Count(stderr, "\n") != 1 {
			t.Errorf("%q: exit %d, stdout %q, stderr %q; want exit 1", args, code, stdout, stderr)
		}
	}
	// No answer in time.
	code, _, stderr := ctRun("call", "--server", g.addr, "--timeout", "100ms", "Slow", "delay=5")
	if code != exitFailure || !strings.Contains(stderr, "no answer from "+g.addr+" within 100ms") {
		t.Errorf("Slow: exit %d, stderr %q", code, stderr)
	}
	// StartTLS refused by a server without TLS.
	plain := &conn.Server{Config: conn.Config{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan struct{})
	go func() { defer close(served); plain.Serve(l) }()
	defer func() { plain.Close(); <-served }()
	code, _, stderr = ctRun("call", "--server", l.Addr().String(), "--insecure-skip-verify", "Sum")
	if code != exitFailure || !strings.Contains(stderr, "StartTLS with "+l.Addr().String()+" failed: TLS_ERROR") {
		t.Errorf("StartTLS refused: exit %d, stderr %q", code, stderr)
	}
}

// The JSON form gives non-UTF-8 bytes back exactly, as Python's
// surrogateescape does, and valid text as itself.
func TestCallJSONStrings(t *testing.T) {
	for _, tt := range []struct{ in, want string }{
		{"", `""`},
		{"plain", `"plain"`},
		{"\x00\x1f\x7f", `"\u0000\u001f\u007f"`},
		{"\r\n\t\"\\/", `"\r\n\t\"\\/"`},
		{"héllo 世界 🎉", `"héllo 世界 🎉"`},
		{"\ufffd", "\"\ufffd\""},
		{"\xff\xfe", `"\udcff\udcfe"`},
		{"\xed\xa0\x80", `"\udced\udca0\udc80"`}, // an encoded surrogate is not UTF-8
		{"a\xc3", `"a\udcc3"`},                   // truncated sequence
		{"\u2028\u2029", `"\u2028\u2029"`},
	} {
		got := string(appendJSONString(nil, []byte(tt.in)))
		if got != tt.want {
			t.Errorf("%q: got %s, want %s", tt.in, got, tt.want)
		}
		if !json.Valid([]byte(got)) {
			t.Errorf("%q: %s is not JSON", tt.in, got)
		}
	}
}

func TestCallTwisted(t *testing.T) {
	ctNoLeaks(t)
	addr := interop.StartTwistedServer(t)
	code, stdout, stderr := ctRun("call", "--server", addr, "Sum", "a=13", "b=81")
	if code != 0 || stdout != `{"total":"94"}`+"\n" || stderr != "" {
		t.Fatalf("Sum: exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}
	code, stdout, stderr = ctRun("call", "--server", addr, "Divide", "numerator=1", "denominator=0")
	if code != exitRemoteErr || stdout != "" || !strings.HasPrefix(stderr, "ZERO_DIVISION: ") {
		t.Fatalf("Divide: exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}
	code, _, stderr = ctRun("call", "--server", addr, "NoSuchCommand")
	if code != exitRemoteErr || !strings.HasPrefix(stderr, "UNHANDLED: ") {
		t.Fatalf("unknown command: exit %d, stderr %q", code, stderr)
	}
	code, stdout, _ = ctRun("call", "--server", addr, "Echo", "text=x", "bytes=\x80")
	if code != 0 || stdout != `{"bytes":"\udc80","text":"x"}`+"\n" {
		t.Fatalf("Echo: exit %d, stdout %q", code, stdout)
	}
}

func TestCert(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "pki")
	code, stdout, stderr := ctRun("cert", "--out", dir, "--host", "gw.example.test", "--host", "192.0.2.7", "--host", "localhost")
	if code != 0 || stderr != "" {
		t.Fatalf("exit %d, stderr %q", code, stderr)
	}
	files := []string{pki.CAFile, pki.CAKeyFile, pki.ServerFile, pki.ServerKeyFile, pki.ClientFile, pki.ClientKeyFile}
	for _, name := range files {
		p := filepath.Join(dir, name)
		st, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if strings.HasSuffix(name, "-key.pem") && st.Mode().Perm() != 0o600 {
			t.Errorf("%s: mode %v", name, st.Mode().Perm())
		}
		if !strings.Contains(stdout, "wrote "+p) {
			t.Errorf("output does not mention %s:\n%s", p, stdout)
		}
	}
	for _, want := range []string{"--tls-cert", "ampmux forward", "--cert " + filepath.Join(dir, pki.ClientFile)} {
		if !strings.Contains(stdout, want) {
			t.Errorf("no hint %q in:\n%s", want, stdout)
		}
	}
	pair, err := tls.LoadX509KeyPair(filepath.Join(dir, pki.ServerFile), filepath.Join(dir, pki.ServerKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"localhost", "gw.example.test"}; !slices.Equal(leaf.DNSNames, want) {
		t.Errorf("DNS names %v, want %v", leaf.DNSNames, want)
	}
	var ips []string
	for _, ip := range leaf.IPAddresses {
		ips = append(ips, ip.String())
	}
	if want := []string{"127.0.0.1", "::1", "192.0.2.7"}; !slices.Equal(ips, want) {
		t.Errorf("IPs %v, want %v", ips, want)
	}
	pool, err := loadPool(filepath.Join(dir, pki.CAFile))
	if err != nil {
		t.Fatal(err)
	}
	for _, host := range []string{"localhost", "gw.example.test", "192.0.2.7", "::1"} {
		if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool, DNSName: host}); err != nil {
			t.Errorf("server certificate for %s: %v", host, err)
		}
	}
	if _, err := tls.LoadX509KeyPair(filepath.Join(dir, pki.ClientFile), filepath.Join(dir, pki.ClientKeyFile)); err != nil {
		t.Error(err)
	}

	// No overwriting without --force.
	caKey, _ := os.ReadFile(filepath.Join(dir, pki.CAKeyFile))
	code, stdout, stderr = ctRun("cert", "--out", dir)
	if code != exitFailure || stdout != "" || !strings.Contains(stderr, "--force") || !strings.Contains(stderr, pki.CAKeyFile) {
		t.Fatalf("second run: exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}
	if again, _ := os.ReadFile(filepath.Join(dir, pki.CAKeyFile)); !bytes.Equal(again, caKey) {
		t.Fatal("ca-key.pem was replaced without --force")
	}
	// --force replaces, and keys that were left readable become 0600.
	os.Chmod(filepath.Join(dir, pki.ServerKeyFile), 0o644)
	if code, _, stderr := ctRun("cert", "--out", dir, "--force"); code != 0 {
		t.Fatalf("--force: exit %d, %s", code, stderr)
	}
	if again, _ := os.ReadFile(filepath.Join(dir, pki.CAKeyFile)); bytes.Equal(again, caKey) {
		t.Fatal("--force kept the old CA key")
	}
	if st, _ := os.Stat(filepath.Join(dir, pki.ServerKeyFile)); st.Mode().Perm() != 0o600 {
		t.Errorf("server-key.pem mode %v after --force", st.Mode().Perm())
	}
}

var (
	ctRateLine    = regexp.MustCompile(`(?m)^  (\d+) calls/s$`)
	ctLatencyLine = regexp.MustCompile(`(?m)^  latency p50 (\S+)  p90 (\S+)  p99 (\S+)  max (\S+)$`)
	ctCallsLine   = regexp.MustCompile(`(?m)^  (\d+) calls in [0-9.]+s, (\d+) errors$`)
)

func TestBench(t *testing.T) {
	ctNoLeaks(t)
	g := ctStartGateway(t)
	for _, extra := range [][]string{
		{"--concurrency", "4", "--connections", "2"},
		append([]string{"--concurrency", "3"}, g.tlsArgs()...),
		{"--command", "Echo", "--concurrency", "2"},
		{"--pipeline", "--concurrency", "8", "--connections", "2", "--warmup", "100ms"},
	} {
		args := append([]string{"bench", "--server", g.addr, "--duration", "300ms"}, extra...)
		start := time.Now()
		code, stdout, stderr := ctRun(args...)
		if code != 0 {
			t.Fatalf("%q: exit %d\nstdout:\n%s\nstderr:\n%s", args, code, stdout, stderr)
		}
		if d := time.Since(start); d > 5*time.Second {
			t.Errorf("%q took %v", args, d)
		}
		m := ctRateLine.FindStringSubmatch(stdout)
		if m == nil {
			t.Fatalf("%q: no calls/s line:\n%s", args, stdout)
		}
		if rate, _ := strconv.Atoi(m[1]); rate <= 0 {
			t.Errorf("%q: rate %d", args, rate)
		}
		lat := ctLatencyLine.FindStringSubmatch(stdout)
		if lat == nil {
			t.Fatalf("%q: no latency line:\n%s", args, stdout)
		}
		var prev time.Duration
		for i, s := range lat[1:] {
			d, err := time.ParseDuration(s)
			if err != nil || d <= 0 || d < prev {
				t.Errorf("%q: latency %d %q (%v) after %v", args, i, s, err, prev)
			}
			prev = d
		}
		c := ctCallsLine.FindStringSubmatch(stdout)
		if c == nil || c[2] != "0" {
			t.Errorf("%q: calls line %q in:\n%s", args, c, stdout)
		}
	}

	// --json: one object with the same figures.
	code, stdout, stderr := ctRun("bench", "--server", g.addr, "--duration", "300ms", "--json", "--pipeline", "--concurrency", "4")
	var rep benchReport
	if err := json.Unmarshal([]byte(stdout), &rep); code != 0 || err != nil {
		t.Fatalf("--json: exit %d, %v\nstdout:\n%s\nstderr:\n%s", code, err, stdout, stderr)
	}
	lat := rep.Latency
	if rep.Calls <= 0 || rep.Errors != 0 || rep.CallsPerSec <= 0 || !rep.Pipeline || rep.Callers != 4 ||
		lat.P50 <= 0 || lat.P90 < lat.P50 || lat.P99 < lat.P90 || lat.Max < lat.P99 {
		t.Errorf("--json report %+v", rep)
	}

	// Every call failing (Divide without arguments) is exit 1; so is a
	// server that is not there.
	code, stdout, stderr = ctRun("bench", "--server", g.addr, "--duration", "200ms", "--command", "Divide", "--concurrency", "2")
	if code != exitFailure || !strings.Contains(stdout, "  0 calls/s") || !strings.Contains(stderr, "every call failed (first error: UNKNOWN: ") {
		t.Errorf("Divide: exit %d\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
	if c := ctCallsLine.FindStringSubmatch(stdout); c == nil || c[1] != "0" || c[2] == "0" {
		t.Errorf("Divide: calls line %q", c)
	}
	code, stdout, stderr = ctRun("bench", "--server", ctFreeAddr(t), "--duration", "200ms")
	if code != exitFailure || stdout != "" || !strings.Contains(stderr, "refused") {
		t.Errorf("no server: exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}
}

func TestBenchProgressAndInterrupt(t *testing.T) {
	ctNoLeaks(t)
	g := ctStartGateway(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stdout, stderr := &logBuf{}, &logBuf{}
	done := make(chan int, 1)
	go func() {
		done <- run(&env{ctx: ctx, stdout: stdout, stderr: stderr}, []string{"bench", "--server", g.addr, "--duration", "1m", "--concurrency", "2"})
	}()
	progress := regexp.MustCompile(`(?m)^\[1s\] (\d+) calls, (\d+) calls/s$`)
	stderr.waitMatch(t, progress)
	cancel()
	select {
	case code := <-done:
		if code != 0 {
			t.Fatalf("exit %d: %s", code, stderr.String())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("bench did not stop when interrupted")
	}
	if !strings.Contains(stdout.String(), "1m0s (interrupted)") || !ctRateLine.MatchString(stdout.String()) {
		t.Errorf("summary:\n%s", stdout.String())
	}
}

// --optimistic: the tunnel carries the same bytes, and a refused switch
// is reported as one, from forward and from connect.
func TestTunnelsOptimistic(t *testing.T) {
	ctNoLeaks(t)
	g := ctStartGateway(t)
	f := ctStartForward(t, append([]string{"--server", g.addr, "--protocol", "echo", "--listen", "127.0.0.1:0", "--optimistic"}, g.tlsArgs()...)...)
	c := ctDial(t, f.addr)
	ctEcho(t, c, 1<<20+9)
	c.Close()
	ctEchoHalfClose(t, ctDial(t, f.addr), 100_000)
	if code := f.exit(t); code != 0 {
		t.Fatalf("forward exited %d: %s", code, f.stderr.String())
	}

	f = ctStartForward(t, append([]string{"--server", g.addr, "--protocol", "secret", "--listen", "127.0.0.1:0", "--optimistic"}, g.tlsArgs()...)...)
	c = ctDial(t, f.addr)
	c.Write([]byte("hello"))
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if n, err := c.Read(make([]byte, 1)); n != 0 || (err != io.EOF && !errors.Is(err, syscall.ECONNRESET)) {
		t.Errorf("local read got %d, %v; want the connection closed", n, err)
	}
	f.stderr.waitFor(t, "switch failed: FORBIDDEN: ")
	if code := f.exit(t); code != 0 {
		t.Errorf("exit %d", code)
	}

	code, stdout, errOut := ctRun(append([]string{"connect", "--server", g.addr, "--protocol", "secret", "--optimistic"}, g.tlsArgs()...)...)
	if code != exitFailure || stdout != "" || !strings.Contains(errOut, "switch failed: FORBIDDEN") || strings.Count(errOut, "\n") != 1 {
		t.Fatalf("connect: exit %d, stdout %q, stderr %q", code, stdout, errOut)
	}
}
