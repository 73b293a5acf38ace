package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ampmux/ampmux/amp"
	"github.com/ampmux/ampmux/amp/switching"
	"github.com/ampmux/ampmux/internal/interop"
	"github.com/ampmux/ampmux/internal/pki"
)

var (
	serveBinOnce sync.Once
	serveBin     string
	serveBinErr  error
)

// serveTestBinary builds ampmux once for the tests that need real
// processes (signals, stdin/stdout).
func serveTestBinary(t *testing.T) string {
	t.Helper()
	serveBinOnce.Do(func() {
		dir, err := os.MkdirTemp("", "ampmux-test")
		if err != nil {
			serveBinErr = err
			return
		}
		serveBin = filepath.Join(dir, "ampmux")
		out, err := exec.Command("go", "build", "-o", serveBin, ".").CombinedOutput()
		if err != nil {
			serveBinErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if serveBinErr != nil {
		t.Fatal(serveBinErr)
	}
	return serveBin
}

// proc is a running ampmux (or other) process.
type proc struct {
	cmd    *exec.Cmd
	stdout *bufio.Reader
	stderr *logBuf
	stdin  io.WriteCloser
	done   chan error
	pr     *io.PipeReader
}

func startProc(t *testing.T, name string, args ...string) *proc {
	t.Helper()
	cmd := exec.Command(name, args...)
	p := &proc{cmd: cmd, stderr: &logBuf{}, done: make(chan error, 1)}
	// An io.Pipe, not StdoutPipe: Wait may run while tests still read.
	pr, pw := io.Pipe()
	cmd.Stdout = pw
	p.stdout = bufio.NewReader(pr)
	p.pr = pr
	p.stdin, _ = cmd.StdinPipe()
	cmd.Stderr = p.stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		err := cmd.Wait()
		pw.Close()
		p.done <- err
	}()
	t.Cleanup(func() {
		cmd.Process.Kill()
		pr.Close() // unblock the copy of output nobody reads
		<-p.done
		p.done <- nil
		if t.Failed() {
			t.Logf("%s %v stderr:\n%s", filepath.Base(name), args, p.stderr.String())
		}
	})
	return p
}

// line reads one stdout line within 10 s.
func (p *proc) line(t *testing.T) string {
	t.Helper()
	ch := make(chan string, 1)
	go func() {
		s, _ := p.stdout.ReadString('\n')
		ch <- s
	}()
	select {
	case s := <-ch:
		return strings.TrimSpace(s)
	case <-time.After(10 * time.Second):
		t.Fatalf("no output; stderr:\n%s", p.stderr.String())
		return ""
	}
}

// startServe runs `ampmux serve` and returns it with its address.
func startServe(t *testing.T, args ...string) (*proc, string) {
	t.Helper()
	head := []string{"serve"}
	if !slices.Contains(args, "--listen") { // --listen is repeatable: a second adds an address
		head = append(head, "--listen", "127.0.0.1:0")
	}
	p := startProc(t, serveTestBinary(t), append(head, args...)...)
	l := p.line(t)
	addr, ok := strings.CutPrefix(l, "listening on ")
	if !ok {
		t.Fatalf("serve printed %q; stderr:\n%s", l, p.stderr.String())
	}
	return p, addr
}

func writePKI(t *testing.T) (string, *pki.Bundle) {
	dir := t.TempDir()
	b, err := pki.NewBundle()
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Write(dir); err != nil {
		t.Fatal(err)
	}
	return dir, b
}

func curlBody(t *testing.T, args ...string) []byte {
	t.Helper()
	out, err := curlOutput(args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// curlOutput is curlBody for goroutines, which may not stop the test.
func curlOutput(args ...string) ([]byte, error) {
	out, err := exec.Command("curl", append([]string{"-sS", "--fail", "--max-time", "30"}, args...)...).Output()
	if err != nil {
		return nil, fmt.Errorf("curl %v: %w", args, err)
	}
	return out, nil
}

// TestServeForwardHTTPDownloads: serve with TLS and --client-ca, a real
// HTTP backend behind a route, forward carrying several large downloads
// intact, and a client without a certificate refused.
func TestServeForwardHTTPDownloads(t *testing.T) {
	py, err := interop.Python()
	if err != nil {
		t.Fatal(err)
	}
	dir, _ := writePKI(t)
	site := t.TempDir()
	sums := map[string][32]byte{}
	for i, size := range []int{3 << 20, 5<<20 + 7, 1} {
		data := make([]byte, size)
		rand.Read(data)
		name := fmt.Sprintf("f%d.bin", i)
		os.WriteFile(filepath.Join(site, name), data, 0o644)
		sums[name] = sha256.Sum256(data)
	}
	// Port 0: http.server prints the port it was given once it listens.
	backend := startProc(t, py, "-u", "-m", "http.server", "--bind", "127.0.0.1", "--directory", site, "0")
	served := regexp.MustCompile(`^Serving HTTP on 127\.0\.0\.1 port (\d+) `).FindStringSubmatch(backend.line(t))
	if served == nil {
		t.Fatalf("http.server did not say where it listens; stderr:\n%s", backend.stderr.String())
	}
	backendAddr := "127.0.0.1:" + served[1]

	_, addr := startServe(t, "--tls-cert", filepath.Join(dir, "server.pem"), "--tls-key", filepath.Join(dir, "server-key.pem"),
		"--client-ca", filepath.Join(dir, "ca.pem"), "--route", "web="+backendAddr)
	fwd := startProc(t, serveTestBinary(t), "forward", "--server", addr, "--protocol", "web", "--listen", "127.0.0.1:0",
		"--ca", filepath.Join(dir, "ca.pem"), "--cert", filepath.Join(dir, "client.pem"), "--key", filepath.Join(dir, "client-key.pem"))
	fwdAddr := forwardAddr(t, fwd)
	var wg sync.WaitGroup
	for name, sum := range sums {
		for range 2 {
			wg.Go(func() {
				body, err := curlOutput("http://" + fwdAddr + "/" + name)
				if err != nil {
					t.Error(err)
				} else if sha256.Sum256(body) != sum {
					t.Errorf("%s: %d bytes, wrong content", name, len(body))
				}
			})
		}
	}
	wg.Wait()

	// Without a client certificate the switch is refused.
	nocert := startProc(t, serveTestBinary(t), "forward", "--server", addr, "--protocol", "web", "--listen", "127.0.0.1:0",
		"--ca", filepath.Join(dir, "ca.pem"))
	noAddr := forwardAddr(t, nocert)
	if err := exec.Command("curl", "-sS", "--fail", "--max-time", "10", "http://"+noAddr+"/f2.bin").Run(); err == nil {
		t.Fatal("a client without a certificate got through")
	}
	nocert.stderr.waitFor(t, "FORBIDDEN")
}

func forwardAddr(t *testing.T, p *proc) string {
	t.Helper()
	l := p.line(t)
	// "forwarding ADDR -> SERVER protocol NAME"
	f := strings.Fields(l)
	if len(f) < 2 || f[0] != "forwarding" {
		t.Fatalf("forward printed %q", l)
	}
	return f[1]
}

// TestConnectAsProxyCommand runs `ampmux connect` as an ssh ProxyCommand
// would: bytes on its stdin come back from the demo echo route.
func TestConnectAsProxyCommand(t *testing.T) {
	dir, _ := writePKI(t)
	_, addr := startServe(t, "--demo", "--tls-cert", filepath.Join(dir, "server.pem"), "--tls-key", filepath.Join(dir, "server-key.pem"))
	p := startProc(t, serveTestBinary(t), "connect", "--server", addr, "--protocol", "echo", "--ca", filepath.Join(dir, "ca.pem"))
	payload := make([]byte, 300_000)
	rand.Read(payload)
	go func() {
		p.stdin.Write(payload)
		p.stdin.Close()
	}()
	got, err := io.ReadAll(p.stdout)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, payload) {
		t.Fatalf("echoed %d bytes, want %d", len(got), len(payload))
	}
	select {
	case err := <-p.done:
		p.done <- err
		if err != nil {
			t.Fatalf("connect exited: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("connect did not exit after stdin closed and the echo ended")
	}
}

// TestStatusPageOnSharedPort fetches the status page and JSON with curl on
// the port that also serves AMP.
func TestStatusPageOnSharedPort(t *testing.T) {
	_, addr := startServe(t, "--demo")
	out, err := exec.Command(serveTestBinary(t), "call", "--server", addr, "Sum", "a=1", "b=2").Output()
	if err != nil || strings.TrimSpace(string(out)) != `{"total":"3"}` {
		t.Fatalf("call: %q %v", out, err)
	}
	page := string(curlBody(t, "http://"+addr+"/"))
	for _, want := range []string{"<title>ampmux on " + addr, "Open tunnels", "/status.json"} {
		if !strings.Contains(page, want) {
			t.Errorf("page lacks %q", want)
		}
	}
	var st statusJSON
	if err := json.Unmarshal(curlBody(t, "--http2-prior-knowledge", "http://"+addr+"/status.json"), &st); err != nil {
		t.Fatal(err)
	}
	if st.Listen != addr || st.AMPCalls < 1 || st.Connections["amp"] < 1 || st.Connections["http1"] < 1 {
		t.Fatalf("status %+v", st)
	}
}

// TestSIGTERMWhileTunnelBusy: serve stops accepting, lets the busy tunnel
// finish within the grace period, then exits 0.
func TestSIGTERMWhileTunnelBusy(t *testing.T) {
	dir, _ := writePKI(t)
	p, addr := startServe(t, "--demo", "--grace", "10s", "--tls-cert", filepath.Join(dir, "server.pem"), "--tls-key", filepath.Join(dir, "server-key.pem"))
	ca, _ := loadPool(filepath.Join(dir, "ca.pem"))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := switching.Dial(ctx, addr, "echo", &tls.Config{RootCAs: ca})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	go io.Copy(io.Discard, io.LimitReader(c, 0))
	// Keep the tunnel busy across the signal.
	chunk := make([]byte, 64<<10)
	sent := 0
	errc := make(chan error, 1)
	go func() {
		got := 0
		buf := make([]byte, 64<<10)
		for got < 40*len(chunk) {
			n, err := c.Read(buf)
			got += n
			if err != nil {
				errc <- err
				return
			}
		}
		errc <- nil
	}()
	for i := range 40 {
		if i == 10 {
			p.cmd.Process.Signal(syscall.SIGTERM)
			p.stderr.waitFor(t, "mux: stopped accepting")
			if cn, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
				cn.Close()
				t.Error("still accepting after SIGTERM")
			}
		}
		n, err := c.Write(chunk)
		sent += n
		if err != nil {
			t.Fatalf("write after %d bytes: %v", sent, err)
		}
	}
	if err := <-errc; err != nil {
		t.Fatalf("echo read: %v", err)
	}
	c.Close()
	select {
	case err := <-p.done:
		p.done <- err
		if err != nil {
			t.Fatalf("serve exited with %v; stderr:\n%s", err, p.stderr.String())
		}
	case <-time.After(15 * time.Second):
		t.Fatal("serve did not exit")
	}
	if !strings.Contains(p.stderr.String(), "tunnel closed") {
		t.Error("no tunnel log line")
	}
}

// TestRouteToDownBackend: the switch is refused UNAVAILABLE at once.
func TestRouteToDownBackend(t *testing.T) {
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	down := l.Addr().String()
	l.Close()
	_, addr := startServe(t, "--allow-plaintext", "--allow-anonymous", "--route", "db="+down)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	start := time.Now()
	_, err := switching.DialInsecurePlaintext(ctx, addr, "db")
	var re *amp.RemoteError
	if !errors.Is(err, switching.ErrUnavailable) || !errors.As(err, &re) || re.Code != "UNAVAILABLE" {
		t.Fatalf("got %v", err)
	}
	if time.Since(start) > 5*time.Second {
		t.Fatal("slow refusal")
	}
}

// TestCertLoadedByTwisted: `ampmux cert` output secures a Twisted client's
// StartTLS against `ampmux serve`.
func TestCertLoadedByTwisted(t *testing.T) {
	dir := t.TempDir()
	out, err := exec.Command(serveTestBinary(t), "cert", "--out", dir).CombinedOutput()
	if err != nil {
		t.Fatalf("cert: %v\n%s", err, out)
	}
	// twisted_tls.py also loads an "intruder" certificate it will not use here.
	for _, f := range []string{"", "-key"} {
		data, _ := os.ReadFile(filepath.Join(dir, "client"+f+".pem"))
		os.WriteFile(filepath.Join(dir, "intruder"+f+".pem"), data, 0o600)
	}
	_, addr := startServe(t, "--demo", "--tls-cert", filepath.Join(dir, "server.pem"), "--tls-key", filepath.Join(dir, "server-key.pem"),
		"--client-ca", filepath.Join(dir, "ca.pem"))
	res := interop.RunTwistedTLSClient(t, dir, addr, "--only", "starttls_sum")
	if len(res) != 1 || res["starttls_sum"] != "" {
		t.Fatalf("Twisted StartTLS with ampmux cert output: %v", res)
	}
}

// TestCallAgainstTwisted runs the binary's call against a Twisted server.
func TestCallAgainstTwistedProcess(t *testing.T) {
	addr := interop.StartTwistedServer(t)
	out, err := exec.Command(serveTestBinary(t), "call", "--server", addr, "Sum", "a=13", "b=81").Output()
	if err != nil || strings.TrimSpace(string(out)) != `{"total":"94"}` {
		t.Fatalf("call Sum: %q %v", out, err)
	}
	cmd := exec.Command(serveTestBinary(t), "call", "--server", addr, "Divide", "numerator=1", "denominator=0")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	err = cmd.Run()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != exitRemoteErr || !strings.Contains(stderr.String(), "ZERO_DIVISION") {
		t.Fatalf("Divide by zero: %v %q", err, stderr.String())
	}
}

// TestServeBadInput: malformed flags and config files fail fast with a
// clear message (and the line).
func TestServeBadInput(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		os.WriteFile(p, []byte(body), 0o644)
		return p
	}
	tests := []struct {
		args []string
		code int
		want string
	}{
		{[]string{"--bogus"}, exitUsage, "flag provided but not defined"},
		{[]string{"--listen"}, exitUsage, "flag needs an argument"},
		{[]string{"--route", "nothing"}, exitUsage, "NAME=HOST:PORT"},
		{[]string{"--route", "a=b"}, exitUsage, "not HOST:PORT"},
		{[]string{"--tls-cert", "x.pem"}, exitUsage, "go together"},
		{[]string{"--log-format", "xml"}, exitUsage, "text or json"},
		{[]string{"--config", write("unknown.yaml", "listen: 127.0.0.1:0\nbogus: 1\n")}, exitFailure, "unknown.yaml:2:"},
		{[]string{"--config", write("route.yaml", "routes:\n  - name: ssh\n    backend: nowhere\n")}, exitFailure, "route.yaml:2: route \"ssh\": backend \"nowhere\""},
		{[]string{"--config", write("rkey.yaml", "routes:\n  - name: ssh\n    backend: 127.0.0.1:22\n    colour: red\n")}, exitFailure, "rkey.yaml:4:"},
		{[]string{"--config", write("type.yaml", "grace: forever\n")}, exitFailure, "type.yaml:1:"},
		{[]string{"--config", filepath.Join(dir, "missing.yaml")}, exitFailure, "no such file"},
		{[]string{"--tls-cert", "/nonexistent.pem", "--tls-key", "/nonexistent.pem"}, exitFailure, "loading --tls-cert"},
	}
	for _, tt := range tests {
		var stdout, stderr bytes.Buffer
		code := run(&env{stdout: &stdout, stderr: &stderr}, append([]string{"serve", "--listen", "127.0.0.1:0"}, tt.args...))
		if code != tt.code || !strings.Contains(stderr.String(), tt.want) {
			t.Errorf("serve %v: exit %d, stderr %q; want exit %d and %q", tt.args, code, stderr.String(), tt.code, tt.want)
		}
		if n := strings.Count(strings.TrimSpace(stderr.String()), "\n"); n > 0 {
			t.Errorf("serve %v: error is %d lines: %q", tt.args, n+1, stderr.String())
		}
	}
}

// TestServeConfigFile: the file sets routes with allowed names; a flag
// overrides the file.
func TestServeConfigFile(t *testing.T) {
	dir, b := writePKI(t)
	echoL, _ := net.Listen("tcp", "127.0.0.1:0")
	defer echoL.Close()
	go func() {
		for {
			c, err := echoL.Accept()
			if err != nil {
				return
			}
			go func() { io.Copy(c, c); c.Close() }()
		}
	}()
	cfg := fmt.Sprintf(`listen: 127.0.0.1:1
tls_cert: %s
tls_key: %s
client_ca: %s
routes:
  - name: only-alice
    backend: %s
    allowed_names: [alice]
  - name: anyone
    backend: %s
`, filepath.Join(dir, "server.pem"), filepath.Join(dir, "server-key.pem"), filepath.Join(dir, "ca.pem"), echoL.Addr(), echoL.Addr())
	path := filepath.Join(dir, "ampmux.yaml")
	os.WriteFile(path, []byte(cfg), 0o644)
	_, addr := startServe(t, "--config", path) // --listen 127.0.0.1:0 overrides the file's
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	clientCfg := &tls.Config{RootCAs: b.CA.Pool(), Certificates: []tls.Certificate{b.Client.TLS()}}
	c, err := switching.Dial(ctx, addr, "anyone", clientCfg)
	if err != nil {
		t.Fatal(err)
	}
	c.Write([]byte("hi"))
	buf := make([]byte, 2)
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "hi" {
		t.Fatalf("echo: %q %v", buf, err)
	}
	c.Close()
	if _, err := switching.Dial(ctx, addr, "only-alice", clientCfg); !errors.Is(err, switching.ErrForbidden) {
		t.Fatalf("client \"client\" on alice's route: %v", err)
	}
	if _, err := switching.Dial(ctx, addr, "anyone", &tls.Config{RootCAs: b.CA.Pool()}); !errors.Is(err, switching.ErrForbidden) {
		t.Fatalf("no certificate with --client-ca: %v", err)
	}
}
