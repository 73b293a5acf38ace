//go:build linux

package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pires/go-proxyproto"

	"github.com/ampmux/ampmux/amp/conn"
	"github.com/ampmux/ampmux/amp/switching"
	"github.com/ampmux/ampmux/internal/demo"
)

// whoBackend reads the PROXY header serve sends (route send_proxy),
// answers with the client address it names, then echoes.
func whoBackend(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				br := bufio.NewReader(c)
				h, err := proxyproto.Read(br)
				if err != nil {
					fmt.Fprintf(c, "no PROXY header: %v\n", err)
					return
				}
				fmt.Fprintf(c, "%v\n", h.SourceAddr)
				io.Copy(c, br)
			}()
		}
	}()
	t.Cleanup(func() { l.Close(); <-done })
	return l.Addr().String()
}

// startHAProxy runs haproxy in TCP mode on a listener of the test's
// (inherited as fd 3, so it is ready before haproxy is), balancing over
// servers with send-proxy-v2 and health checks.
func startHAProxy(t testing.TB, sendProxy bool, servers ...string) string {
	t.Helper()
	bin, err := exec.LookPath("haproxy")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("haproxy is missing (apt-get install -y haproxy; the test command installs it)")
		}
		t.Skip("no haproxy (apt-get install -y haproxy)")
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f, err := l.(*net.TCPListener).File()
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close() // f keeps the socket listening
	var b strings.Builder
	b.WriteString("global\n  maxconn 1024\ndefaults\n  mode tcp\n  timeout connect 5s\n  timeout client 60s\n  timeout server 60s\n")
	b.WriteString("  retries 3\n  option redispatch 1\nfrontend f\n  bind fd@3\n  default_backend b\nbackend b\n  balance roundrobin\n")
	opt := ""
	if sendProxy {
		opt = " send-proxy-v2"
	}
	for i, s := range servers {
		fmt.Fprintf(&b, "  server s%d %s%s check inter 100ms fall 1 rise 1\n", i, s, opt)
	}
	cfg := filepath.Join(t.TempDir(), "haproxy.cfg")
	if err := os.WriteFile(cfg, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-db", "-f", cfg)
	cmd.ExtraFiles = []*os.File{f}
	out := &logBuf{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	f.Close()
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-exited
		if t.Failed() {
			t.Logf("haproxy output:\n%s", out.String())
		}
	})
	return addr
}

// haGateway is one serve behind haproxy.
type haGateway struct {
	p     *proc
	addr  string
	admin string
}

// TestThroughHAProxy: two serve instances behind a real HAProxy with
// send-proxy-v2. A client on 127.0.0.2 makes AMP calls, a StartTLS +
// switch tunnel and an HTTP request through it; serve logs, and tells the
// backend (send_proxy), the client's address, not HAProxy's. With one
// instance killed new connections still succeed; restarted, it takes
// traffic again. A PROXY header straight from the client is refused, and
// the same client's plain call works.
func TestThroughHAProxy(t *testing.T) {
	dir, b := writePKI(t)
	who := whoBackend(t)
	args := func(listen string) []string {
		return []string{"--listen", listen, "--tls-cert", filepath.Join(dir, "server.pem"), "--tls-key", filepath.Join(dir, "server-key.pem"),
			"--client-ca", filepath.Join(dir, "ca.pem"), "--admin", "127.0.0.1:0", "--demo",
			"--proxy-from", "127.0.0.1", "--route", "who=" + who, "--send-proxy", "who"}
	}
	start := func(listen string) *haGateway {
		p, addr := startServe(t, args(listen)...)
		adm, ok := strings.CutPrefix(p.line(t), "admin on ")
		if !ok {
			t.Fatalf("no admin address; stderr:\n%s", p.stderr.String())
		}
		return &haGateway{p: p, addr: addr, admin: adm}
	}
	gA, gB := start("127.0.0.1:0"), start("127.0.0.1:0")
	front := startHAProxy(t, true, gA.addr, gB.addr)

	client := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 2)}}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	sum := func(addr string) error {
		nc, err := client.DialContext(ctx, "tcp", addr)
		if err != nil {
			return err
		}
		c := conn.New(nc, &conn.Config{})
		defer c.Close()
		r, err := demo.Sum.Call(ctx, c, demo.SumArgs{A: big.NewInt(40), B: big.NewInt(2)})
		if err == nil && r.Total.Int64() != 42 {
			err = fmt.Errorf("40 + 2 = %v", r.Total)
		}
		return err
	}
	for i := range 4 { // both instances, round robin
		if err := sum(front); err != nil {
			t.Fatalf("Sum %d through haproxy: %v", i, err)
		}
	}

	// A tunnel: serve's backend hears of the client, through two PROXY
	// headers (haproxy → serve, serve → backend).
	d := &switching.Dialer{NetDialer: client, TLSConfig: &tls.Config{RootCAs: b.CA.Pool(),
		Certificates: []tls.Certificate{b.Client.TLS()}, ServerName: "127.0.0.1"}}
	tc, err := d.Dial(ctx, front, "who")
	if err != nil {
		t.Fatalf("switch to who through haproxy: %v", err)
	}
	br := bufio.NewReader(tc)
	line, err := br.ReadString('\n')
	if err != nil {
		t.Fatal(err)
	}
	if want := tc.LocalAddr().String(); strings.TrimSpace(line) != want {
		t.Fatalf("the backend was told the client is %q; it is %s", line, want)
	}
	// The status page lists the open tunnel under the client's address.
	listed := false
	for _, g := range []*haGateway{gA, gB} {
		for _, ot := range status(t, g.admin).OpenTunnels {
			listed = listed || ot.Peer == tc.LocalAddr().String()
		}
	}
	if !listed {
		t.Fatalf("no status page lists the open tunnel of %s", tc.LocalAddr())
	}
	io.WriteString(tc, "ping\n")
	if echo, _ := br.ReadString('\n'); echo != "ping\n" {
		t.Fatalf("echo through the tunnel: %q", echo)
	}
	tc.Close()
	// The instance that served it logs the client, not haproxy.
	g := gA
	if routeTotal(status(t, gB.admin), "who") == 1 {
		g = gB
	}
	g.p.stderr.waitFor(t, "peer="+tc.LocalAddr().String())

	// HTTP (the demo's status page) from the same client.
	hc := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return client.DialContext(ctx, "tcp", front)
	}}}
	defer hc.CloseIdleConnections()
	resp, err := hc.Get("http://" + front + "/status.json")
	if err != nil {
		t.Fatalf("HTTP through haproxy: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("HTTP through haproxy: %s", resp.Status)
	}

	// One instance killed: new connections still succeed.
	aListen := gA.addr
	gA.p.cmd.Process.Signal(syscall.SIGKILL)
	gA.p.done <- <-gA.p.done
	for i := range 10 {
		if err := sum(front); err != nil {
			t.Fatalf("Sum %d with one instance down: %v", i, err)
		}
	}
	// Restarted on its port, it takes traffic again.
	gA = start(aListen)
	for calls := 0; status(t, gA.admin).AMPCalls == 0; calls++ {
		if err := sum(front); err != nil {
			t.Fatalf("Sum after the restart: %v", err)
		}
		if ctx.Err() != nil {
			t.Fatalf("the restarted instance got none of %d calls", calls)
		}
	}

	// A PROXY header straight from a client is refused; its plain call
	// works.
	nc, err := client.DialContext(ctx, "tcp", gB.addr)
	if err != nil {
		t.Fatal(err)
	}
	h, _ := proxyproto.HeaderProxyFromAddrs(2, &net.TCPAddr{IP: net.IPv4(198, 51, 100, 9), Port: 1}, nc.RemoteAddr()).Format()
	nc.Write(h)
	if n, _ := nc.Read(make([]byte, 1)); n != 0 {
		t.Fatal("a client's own PROXY header was not refused")
	}
	nc.Close()
	gB.p.stderr.waitFor(t, "PROXY protocol header refused")
	if err := sum(gB.addr); err != nil {
		t.Fatalf("a plain call from the client whose header was refused: %v", err)
	}
	if st := status(t, gB.admin); st.Refused["proxy_header"] != 1 {
		t.Fatalf("status refused: %v, want proxy_header 1", st.Refused)
	}
}

// status is the status.json of the serve whose admin listener is admin.
func status(t *testing.T, admin string) statusJSON {
	t.Helper()
	var st statusJSON
	if err := json.Unmarshal(curlBody(t, "http://"+admin+"/status.json"), &st); err != nil {
		t.Fatal(err)
	}
	return st
}

func routeTotal(st statusJSON, name string) int64 {
	for _, r := range st.Routes {
		if r.Name == name {
			return r.Total
		}
	}
	return -1
}

// BenchmarkHAProxy: Sum calls (16 callers, one connection) and echo-tunnel
// bytes through a real HAProxy in front of serve, with PROXY v2 (haproxy
// send-proxy-v2, serve --proxy-from) and without.
func BenchmarkHAProxy(b *testing.B) {
	for _, mode := range []struct {
		name  string
		proxy bool
	}{{"proxy=on", true}, {"proxy=off", false}} {
		set := func(c *serveConfig) {
			if mode.proxy {
				c.ProxyFrom = []string{"127.0.0.1"}
			}
		}
		b.Run("calls/"+mode.name, func(b *testing.B) {
			addr, _ := startBenchServeWith(b, set)
			front := startHAProxy(b, mode.proxy, addr)
			c, err := conn.Dial(context.Background(), "tcp", front, nil)
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			sumCalls(b, c)
		})
		b.Run("tunnel/"+mode.name, func(b *testing.B) {
			addr, tcfg := startBenchServeWith(b, set)
			front := startHAProxy(b, mode.proxy, addr)
			tc, err := switching.Dial(context.Background(), front, "echo", tcfg)
			if err != nil {
				b.Fatal(err)
			}
			defer tc.Close()
			echoBench(b, tc)
		})
	}
}
