package main

import (
	"context"
	"io"
	"net"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ampmux/ampmux/amp/switching"
)

// chromium finds Debian's headless-capable Chromium.
func chromium(t *testing.T) string {
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("CI") != "" {
		t.Fatal("chromium is missing (apt-get install -y chromium; the test command installs it)")
	}
	t.Skip("no chromium (apt-get install -y chromium)")
	return ""
}

// TestStatusPageGraphs loads the admin status page in headless Chromium
// after some traffic and checks, in the DOM its scripts left, that each of
// the four graphs was drawn with data: connections by class, calls/s,
// tunnel throughput and refusals by reason.
func TestStatusPageGraphs(t *testing.T) {
	bin := chromium(t)
	echo := startEchoBackend(t)
	g := startSecureGateway(t, "--route", "e="+echo)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for range 3 { // calls, connections, tunnel bytes
		tc, err := switching.Dial(ctx, g.addr, "e", g.clientTLS)
		if err != nil {
			t.Fatal(err)
		}
		io.WriteString(tc, strings.Repeat("x", 10000))
		tc.(interface{ CloseWrite() error }).CloseWrite()
		io.ReadAll(tc)
		tc.Close()
	}
	// A refusal: a PROXY header from a source not trusted to send one.
	nc, err := net.Dial("tcp", g.addr)
	if err != nil {
		t.Fatal(err)
	}
	io.WriteString(nc, "PROXY TCP4 192.0.2.1 192.0.2.2 1 2\r\n")
	io.ReadAll(nc)
	nc.Close()
	g.p.stderr.waitFor(t, "PROXY protocol header refused")

	cmd := exec.CommandContext(ctx, bin, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
		"--user-data-dir="+t.TempDir(), "--virtual-time-budget=10000", "--dump-dom", "http://"+g.admin+"/")
	dom, err := cmd.Output()
	if err != nil {
		t.Fatalf("chromium: %v", err)
	}
	for _, id := range []string{"g-conns", "g-calls", "g-bytes", "g-refused"} {
		m := regexp.MustCompile(`<svg[^>]*id="` + id + `"[^>]*>(.*?)</svg>`).FindSubmatch(dom)
		if m == nil {
			t.Fatalf("no graph %s in the page:\n%s", id, dom)
		}
		tag := string(m[0][:strings.Index(string(m[0]), ">")])
		mx := regexp.MustCompile(`data-max="([^"]+)"`).FindStringSubmatch(tag)
		if mx == nil {
			t.Fatalf("graph %s was not drawn (no data-max): %s", id, m[0])
		}
		if v, err := strconv.ParseFloat(mx[1], 64); err != nil || v <= 0 {
			t.Errorf("graph %s has no data: max %q", id, mx[1])
		}
		if !strings.Contains(string(m[1]), "<polyline") {
			t.Errorf("graph %s has no line: %s", id, m[1])
		}
	}
}
