package main

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ampmux/ampmux/amp/switching"
	"github.com/ampmux/ampmux/internal/pki"
)

// TestExposeThroughGateway: an agent (ampmux expose, a real process)
// publishes a route to an HTTP server and an echo server through serve
// --expose; a client reaches both by the gateway; a certificate that is
// not the publisher is refused with FORBIDDEN; kill -9 of the agent makes
// new switches UNAVAILABLE, and a restarted agent serves again.
func TestExposeThroughGateway(t *testing.T) {
	dir := t.TempDir()
	for _, args := range [][]string{{"cert", "--out", dir}, {"cert", "--out", dir, "--client", "agent-1"}} {
		if code, _, stderr := ctRun(args...); code != 0 {
			t.Fatalf("%v: %s", args, stderr)
		}
	}
	web := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "hello from behind the NAT")
	}))
	t.Cleanup(web.Close)
	echo := startEchoBackend(t)

	gw, addr := startServe(t, "--tls-cert", filepath.Join(dir, pki.ServerFile), "--tls-key", filepath.Join(dir, pki.ServerKeyFile),
		"--client-ca", filepath.Join(dir, pki.CAFile), "--expose", "web=agent-1", "--expose", "echo2=agent-1", "--admin", "127.0.0.1:0")
	admin, ok := strings.CutPrefix(gw.line(t), "admin on ")
	if !ok {
		t.Fatalf("no admin address; stderr:\n%s", gw.stderr.String())
	}
	// webStatus is route web as the admin endpoint shows it.
	webStatus := func() routeJSON {
		var st statusJSON
		if err := json.Unmarshal(curlBody(t, "http://"+admin+"/status.json"), &st); err != nil {
			t.Fatal(err)
		}
		for _, r := range st.Routes {
			if r.Name == "web" {
				return r
			}
		}
		t.Fatalf("no route web in %+v", st.Routes)
		return routeJSON{}
	}
	if r := webStatus(); r.PublishedBy != "" || r.Publishes != 0 || !slices.Equal(r.Publishers, []string{"agent-1"}) {
		t.Fatalf("before any agent, status says %+v", r)
	}
	if page := string(curlBody(t, "http://"+admin+"/")); !strings.Contains(page, "no publisher") {
		t.Fatalf("the status page does not say web has no publisher:\n%s", page)
	}
	pool, _ := loadPool(filepath.Join(dir, pki.CAFile))
	client := func(name string) *tls.Config {
		pair, err := tls.LoadX509KeyPair(filepath.Join(dir, name+".pem"), filepath.Join(dir, name+"-key.pem"))
		if err != nil {
			t.Fatal(err)
		}
		return &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{pair}}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if _, err := switching.Dial(ctx, addr, "web", client("client")); !errors.Is(err, switching.ErrUnavailable) {
		t.Fatalf("before any agent: %v, want UNAVAILABLE", err)
	}

	agentArgs := func(cert string) []string {
		return []string{"expose", "--server", addr, "--route", "web=" + strings.TrimPrefix(web.URL, "http://"), "--route", "echo2=" + echo,
			"--ca", filepath.Join(dir, pki.CAFile), "--cert", filepath.Join(dir, cert+".pem"), "--key", filepath.Join(dir, cert+"-key.pem")}
	}
	// The wrong identity is refused, and says so.
	if code, _, stderr := ctRun(agentArgs("client")...); code == 0 || !strings.Contains(stderr, "FORBIDDEN") || !strings.Contains(stderr, `"client"`) {
		t.Fatalf("expose as client: exit %d, %q; want FORBIDDEN naming the identity", code, stderr)
	}

	startAgent := func() *proc {
		p := startProc(t, serveTestBinary(t), agentArgs("agent-1")...)
		if l := p.line(t); !strings.HasPrefix(l, "exposing 2 route(s)") {
			t.Fatalf("expose printed %q; stderr:\n%s", l, p.stderr.String())
		}
		return p
	}
	agent := startAgent()
	gw.stderr.waitCount(t, "route published", 2)
	get := func() string {
		c, err := switching.Dial(ctx, addr, "web", client("client"))
		if err != nil {
			t.Fatalf("switch to web: %v", err)
		}
		defer c.Close()
		io.WriteString(c, "GET / HTTP/1.0\r\nHost: x\r\n\r\n")
		b, _ := io.ReadAll(c)
		return string(b)
	}
	if got := get(); !strings.Contains(got, "hello from behind the NAT") {
		t.Fatalf("through the reverse tunnel: %q", got)
	}
	if r := webStatus(); r.PublishedBy != "agent-1" || r.Publishes != 1 || r.Total != 1 {
		t.Fatalf("published, one tunnel done, status says %+v", r)
	}
	if page := string(curlBody(t, "http://"+admin+"/")); !strings.Contains(page, "published by <code>agent-1</code>") {
		t.Fatalf("the status page does not name web's publisher:\n%s", page)
	}
	c, err := switching.Dial(ctx, addr, "echo2", client("client"))
	if err != nil {
		t.Fatal(err)
	}
	// 1 MiB up, half-close, all of it back: the half-close is carried.
	payload := strings.Repeat("0123456789abcdef", 1<<16)
	go func() {
		io.WriteString(c, payload)
		c.(interface{ CloseWrite() error }).CloseWrite()
	}()
	back, err := io.ReadAll(c)
	if err != nil || string(back) != payload {
		t.Fatalf("echo through the reverse tunnel: %d bytes back of %d, %v", len(back), len(payload), err)
	}
	c.Close()

	agent.cmd.Process.Signal(syscall.SIGKILL)
	agent.done <- <-agent.done                  // the cleanup waits on it too
	gw.stderr.waitCount(t, "publisher gone", 2) // the gateway saw it go
	if r := webStatus(); r.PublishedBy != "" || r.Disconnects != 1 {
		t.Fatalf("agent killed, status says %+v", r)
	}
	if _, err := switching.Dial(ctx, addr, "web", client("client")); !errors.Is(err, switching.ErrUnavailable) {
		t.Fatalf("after kill -9 of the agent: %v, want UNAVAILABLE", err)
	}
	startAgent()
	gw.stderr.waitCount(t, "route published", 4)
	if got := get(); !strings.Contains(got, "hello from behind the NAT") {
		t.Fatalf("after the agent's restart: %q", got)
	}
	if r := webStatus(); r.PublishedBy != "agent-1" || r.Publishes != 2 || r.Disconnects != 1 || r.Total != 2 {
		t.Fatalf("reconnected, status says %+v", r)
	}
}
