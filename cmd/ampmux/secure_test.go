package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ampmux/ampmux/amp/switching"
	"github.com/ampmux/ampmux/internal/pki"
)

// startEchoBackend is a TCP echo server for routes; it closes its side
// when the client half-closes.
func startEchoBackend(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	conns := make(chan net.Conn, 64)
	go func() {
		defer close(done)
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			conns <- c
			go func() { io.Copy(c, c); c.Close() }()
		}
	}()
	t.Cleanup(func() {
		l.Close()
		<-done
		for {
			select {
			case c := <-conns:
				c.Close()
			default:
				return
			}
		}
	})
	return l.Addr().String()
}

// secureGateway is a serve process with TLS, a client CA and an admin
// listener, and what a client needs to reach it.
type secureGateway struct {
	p         *proc
	addr      string
	admin     string
	dir       string
	b         *pki.Bundle
	clientTLS *tls.Config // the "client" certificate
	anonTLS   *tls.Config // no certificate
}

func startSecureGateway(t *testing.T, args ...string) *secureGateway {
	t.Helper()
	dir, b := writePKI(t)
	g := &secureGateway{dir: dir, b: b,
		clientTLS: &tls.Config{RootCAs: b.CA.Pool(), Certificates: []tls.Certificate{b.Client.TLS()}},
		anonTLS:   &tls.Config{RootCAs: b.CA.Pool()}}
	all := append([]string{"--tls-cert", filepath.Join(dir, "server.pem"), "--tls-key", filepath.Join(dir, "server-key.pem"),
		"--client-ca", filepath.Join(dir, "ca.pem"), "--admin", "127.0.0.1:0"}, args...)
	g.p, g.addr = startServe(t, all...)
	adm := g.p.line(t)
	var ok bool
	if g.admin, ok = strings.CutPrefix(adm, "admin on "); !ok {
		t.Fatalf("serve printed %q, want the admin address; stderr:\n%s", adm, g.p.stderr.String())
	}
	return g
}

func (g *secureGateway) status(t *testing.T) statusJSON {
	t.Helper()
	var st statusJSON
	if err := json.Unmarshal(curlBody(t, "http://"+g.admin+"/status.json"), &st); err != nil {
		t.Fatal(err)
	}
	return st
}

// TestServeRequiresIdentity: routes without a client CA need the named
// opt-in, and the opt-ins are logged at start.
func TestServeRequiresIdentity(t *testing.T) {
	dir := t.TempDir()
	yamlFile := filepath.Join(dir, "names.yaml")
	os.WriteFile(yamlFile, []byte("routes:\n  - name: ssh\n    backend: 127.0.0.1:22\n    allowed_names: [alice]\n"), 0o644)
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"--route", "ssh=127.0.0.1:22"}, "--allow-anonymous"},
		{[]string{"--route", "ssh=127.0.0.1:22"}, "--client-ca"},
		{[]string{"--config", yamlFile, "--allow-anonymous"}, "allowed_names, which need --client-ca"},
		{[]string{"--max-conns", "-1"}, "--max-conns may not be negative"},
		{[]string{"--max-box-size", "lots"}, "not a size"},
		{[]string{"--admin", "nowhere"}, "--admin \"nowhere\" is not HOST:PORT"},
	} {
		var stdout, stderr bytes.Buffer
		code := run(&env{stdout: &stdout, stderr: &stderr}, append([]string{"serve", "--listen", "127.0.0.1:0"}, tt.args...))
		if code != exitUsage || !strings.Contains(stderr.String(), tt.want) {
			t.Errorf("serve %v: exit %d, stderr %q; want exit %d naming %q", tt.args, code, stderr.String(), exitUsage, tt.want)
		}
	}

	backend := startEchoBackend(t)
	p, addr := startServe(t, "--allow-anonymous", "--allow-plaintext", "--route", "echo2="+backend)
	p.stderr.waitFor(t, "--allow-anonymous")
	p.stderr.waitFor(t, "--allow-plaintext")
	// The opt-in does what it says: no certificate, no TLS, and through.
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	d := switching.Dialer{InsecurePlaintext: true}
	c, err := d.Dial(ctx, addr, "echo2")
	if err != nil {
		t.Fatal(err)
	}
	ctEcho(t, c, 1000)
	c.Close()

	demo, _ := startServe(t, "--demo")
	demo.stderr.waitFor(t, "demo mode")
}

// TestAnonymousClientRefused: with a client CA, a route refuses a client
// without a certificate, and admits one with.
func TestAnonymousClientRefused(t *testing.T) {
	g := startSecureGateway(t, "--route", "web="+startEchoBackend(t))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := switching.Dial(ctx, g.addr, "web", g.anonTLS); !errors.Is(err, switching.ErrForbidden) {
		t.Fatalf("anonymous client: %v, want FORBIDDEN", err)
	}
	c, err := switching.Dial(ctx, g.addr, "web", g.clientTLS)
	if err != nil {
		t.Fatal(err)
	}
	ctEcho(t, c, 1000)
	c.Close()
}

// TestSharedPortRevealsNothing: browsers on the shared port learn nothing
// of routes, backends or counts; the admin listener shows them, and
// --public-status puts them back on the shared port.
func TestSharedPortRevealsNothing(t *testing.T) {
	backend := startEchoBackend(t)
	_, port, _ := net.SplitHostPort(backend)
	g := startSecureGateway(t, "--route", "secretroute="+backend)
	for _, path := range []string{"/", "/status.json", "/status", "/metrics", "/index.html"} {
		for _, proto := range [][]string{nil, {"--http2-prior-knowledge"}} {
			out, _ := curlOutputAny(append(proto, "-i", "http://"+g.addr+path)...)
			for _, secret := range []string{backend, port, "secretroute", "tunnels", "client_certificates"} {
				if strings.Contains(string(out), secret) {
					t.Errorf("shared port %s %v shows %q:\n%s", path, proto, secret, out)
				}
			}
		}
	}
	st := g.status(t)
	if len(st.Routes) != 1 || st.Routes[0].Backend != backend {
		t.Fatalf("admin status routes %+v, want secretroute → %s", st.Routes, backend)
	}

	pub, addr := startServe(t, "--public-status", "--allow-anonymous", "--route", "secretroute="+backend)
	pub.stderr.waitFor(t, "--public-status")
	if out := curlBody(t, "http://"+addr+"/status.json"); !strings.Contains(string(out), backend) {
		t.Fatalf("--public-status: status.json lacks the backend:\n%s", out)
	}
}

// curlOutputAny is curl without --fail: error pages are answers too.
func curlOutputAny(args ...string) ([]byte, error) {
	return exec.Command("curl", append([]string{"-sS", "--max-time", "30"}, args...)...).Output()
}

// TestTunnelLimits: the per-client and per-route limits refuse the next
// tunnel with UNAVAILABLE, leave the others working, count the
// refusals, and give the place back when a tunnel closes.
func TestTunnelLimits(t *testing.T) {
	backend := startEchoBackend(t)
	g := startSecureGateway(t, "--allow-anonymous", "--route", "a="+backend, "--route", "b="+backend,
		"--max-tunnels-per-client", "2", "--max-tunnels-per-route", "3")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	dial := func(route string, cfg *tls.Config) (net.Conn, error) {
		c, err := switching.Dial(ctx, g.addr, route, cfg)
		if err == nil {
			t.Cleanup(func() { c.Close() })
			if err := echoThrough(c, 100); err != nil {
				t.Fatalf("%s: %v", route, err)
			}
		}
		return c, err
	}
	mine1, err := dial("a", g.clientTLS)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := dial("a", g.clientTLS); err != nil {
		t.Fatal(err)
	}
	// The client's third tunnel, on another route, is over its limit.
	if _, err := dial("b", g.clientTLS); !errors.Is(err, switching.ErrUnavailable) || !strings.Contains(err.Error(), "tunnels open") {
		t.Fatalf("third tunnel of one client: %v, want UNAVAILABLE", err)
	}
	// An anonymous client (by address) is someone else: a's third.
	if _, err := dial("a", g.anonTLS); err != nil {
		t.Fatalf("another client: %v", err)
	}
	if _, err := dial("a", g.anonTLS); !errors.Is(err, switching.ErrUnavailable) || !strings.Contains(err.Error(), `route "a"`) {
		t.Fatalf("a's fourth tunnel: %v, want UNAVAILABLE naming the route", err)
	}
	if _, err := dial("b", g.anonTLS); err != nil {
		t.Fatalf("route b, unaffected: %v", err)
	}
	g.p.stderr.waitFor(t, "max-tunnels-per-route")
	g.p.stderr.waitFor(t, "max-tunnels-per-client")
	st := g.status(t)
	if st.Refused["max_tunnels_per_route"] != 1 || st.Refused["max_tunnels_per_client"] != 1 {
		t.Fatalf("refusals %v, want one of each", st.Refused)
	}
	// Closing a tunnel gives its place back.
	mine1.Close()
	g.p.stderr.waitFor(t, "tunnel closed")
	if _, err := dial("b", g.clientTLS); err != nil {
		t.Fatalf("after a close: %v", err)
	}
}

// TestHTTPSideHostileInput: --http-dir never serves what a symlink points
// to outside the site, and --http-backend never sees a browser's own
// forwarding headers.
func TestHTTPSideHostileInput(t *testing.T) {
	site, outside := t.TempDir(), t.TempDir()
	os.WriteFile(filepath.Join(site, "index.html"), []byte("welcome"), 0o644)
	os.WriteFile(filepath.Join(outside, "passwd"), []byte("root:x:0:0"), 0o644)
	if err := os.Symlink(outside, filepath.Join(site, "etcdir")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(outside, "passwd"), filepath.Join(site, "passwd-link")); err != nil {
		t.Fatal(err)
	}
	_, addr := startServe(t, "--http-dir", site)
	if got := curlBody(t, "http://"+addr+"/"); !strings.Contains(string(got), "welcome") {
		t.Fatalf("index: %q", got)
	}
	for _, path := range []string{"/etcdir/passwd", "/passwd-link", "/etcdir/"} {
		out, _ := curlOutputAny("-i", "http://"+addr+path)
		if strings.Contains(string(out), "root:x") || strings.Contains(string(out), "passwd") && path == "/etcdir/" {
			t.Errorf("%s leaves the site:\n%s", path, out)
		}
	}

	seen := make(chan http.Header, 1)
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen <- r.Header.Clone()
	}))
	t.Cleanup(backend.Close)
	_, addr = startServe(t, "--http-backend", backend.URL)
	curlBody(t, "-H", "X-Real-IP: 6.6.6.6", "-H", "Forwarded: for=6.6.6.6", "-H", "X-Forwarded-For: 6.6.6.6",
		"-H", "X-Forwarded-Host: evil.example", "http://"+addr+"/")
	h := <-seen
	for k, v := range h {
		if strings.Contains(strings.Join(v, ","), "6.6.6.6") || strings.Contains(strings.Join(v, ","), "evil.example") {
			t.Errorf("the backend saw the browser's %s: %v", k, v)
		}
	}
	if got := h.Get("X-Forwarded-For"); got != "127.0.0.1" {
		t.Errorf("X-Forwarded-For %q, want the real peer 127.0.0.1", got)
	}
}

// TestCertClient: cert --client adds a certificate signed by the CA in
// --out, leaves the other files alone, and serve admits it by its name.
func TestCertClient(t *testing.T) {
	dir := t.TempDir()
	if code, _, stderr := ctRun("cert", "--out", dir); code != 0 {
		t.Fatalf("cert: %s", stderr)
	}
	before, _ := os.ReadFile(filepath.Join(dir, pki.ClientFile))
	code, stdout, stderr := ctRun("cert", "--out", dir, "--client", "alice")
	if code != 0 || !strings.Contains(stdout, "alice.pem") {
		t.Fatalf("cert --client: exit %d %s %s", code, stdout, stderr)
	}
	if after, _ := os.ReadFile(filepath.Join(dir, pki.ClientFile)); !bytes.Equal(before, after) {
		t.Fatal("cert --client rewrote client.pem")
	}
	if st, err := os.Stat(filepath.Join(dir, "alice-key.pem")); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("alice-key.pem: %v %v", st, err)
	}
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"--client", "alice"}, "not replacing"},
		{[]string{"--client", "../x"}, "a name is"},
		{[]string{"--client", "ca"}, "would replace ca.pem"},
		{[]string{"--client", "bob", "--host", "h"}, "not with --client"},
	} {
		if code, _, stderr := ctRun(append([]string{"cert", "--out", dir}, tt.args...)...); code == 0 || !strings.Contains(stderr, tt.want) {
			t.Errorf("cert %v: exit %d, %q; want %q", tt.args, code, stderr, tt.want)
		}
	}
	if code, _, stderr := ctRun("cert", "--out", t.TempDir(), "--client", "bob"); code == 0 || !strings.Contains(stderr, "needs the CA") {
		t.Errorf("cert --client without a CA: exit %d, %q", code, stderr)
	}

	cfg := fmt.Sprintf("tls_cert: %s\ntls_key: %s\nclient_ca: %s\nroutes:\n  - name: alices\n    backend: %s\n    allowed_names: [alice]\n",
		filepath.Join(dir, pki.ServerFile), filepath.Join(dir, pki.ServerKeyFile), filepath.Join(dir, pki.CAFile), startEchoBackend(t))
	path := filepath.Join(dir, "gw.yaml")
	os.WriteFile(path, []byte(cfg), 0o644)
	_, addr := startServe(t, "--config", path)
	pool, _ := loadPool(filepath.Join(dir, pki.CAFile))
	load := func(name string) *tls.Config {
		pair, err := tls.LoadX509KeyPair(filepath.Join(dir, name+".pem"), filepath.Join(dir, name+"-key.pem"))
		if err != nil {
			t.Fatal(err)
		}
		return &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{pair}}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, err := switching.Dial(ctx, addr, "alices", load("alice"))
	if err != nil {
		t.Fatalf("alice on her route: %v", err)
	}
	ctEcho(t, c, 1000)
	c.Close()
	if _, err := switching.Dial(ctx, addr, "alices", load("client")); !errors.Is(err, switching.ErrForbidden) {
		t.Fatalf("client on alice's route: %v, want FORBIDDEN", err)
	}
}
