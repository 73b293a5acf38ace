package main

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"net/http"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/ampmux/ampmux/amp/switching"
	"github.com/ampmux/ampmux/internal/proctest"
)

// TestExposeMemory measures what published routes and idle standby
// connections cost a real serve process (VmRSS) and the agents (Go heap
// and stacks, in this process): routes published with one standby each,
// then as many more with nine each; the difference between the two
// batches is eight standbys a route. It fails past 256 KiB a route or a
// standby on the gateway: a leak or a per-connection buffer gone wrong.
func TestExposeMemory(t *testing.T) {
	if testing.Short() {
		t.Skip("publishes 200 routes")
	}
	const routes = 100 // per batch
	dir, b := writePKI(t)
	args := []string{"--tls-cert", filepath.Join(dir, "server.pem"), "--tls-key", filepath.Join(dir, "server-key.pem"),
		"--client-ca", filepath.Join(dir, "ca.pem"), "--admin", "127.0.0.1:0", "--max-conns-per-source", "100000",
		"--max-sniffing-per-source", "100000"}
	for i := range 2 * routes {
		args = append(args, "--expose", fmt.Sprintf("r%d=client", i))
	}
	gw, addr := startServe(t, args...)
	admin, ok := strings.CutPrefix(gw.line(t), "admin on ")
	if !ok {
		t.Fatalf("no admin address; stderr:\n%s", gw.stderr.String())
	}
	pid := gw.cmd.Process.Pid
	agentTLS := &tls.Config{RootCAs: b.CA.Pool(), Certificates: []tls.Certificate{b.Client.TLS()}}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	// standbys waits until the gateway holds want standbys in all.
	standbys := func(want int) {
		t.Helper()
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for {
			resp, err := http.Get("http://" + admin + "/status.json")
			if err != nil {
				t.Fatal(err)
			}
			var st statusJSON
			err = json.NewDecoder(resp.Body).Decode(&st)
			resp.Body.Close()
			if err != nil {
				t.Fatal(err)
			}
			n := 0
			for _, r := range st.Routes {
				n += r.Standby
			}
			if n == want {
				return
			}
			select {
			case <-tick.C:
			case <-ctx.Done():
				t.Fatalf("the gateway holds %d standbys, want %d", n, want)
			}
		}
	}
	agentHeap := func() int64 {
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return int64(ms.HeapInuse + ms.StackInuse)
	}
	publish := func(from, standby int) {
		t.Helper()
		for i := from; i < from+routes; i++ {
			p := &switching.Publisher{TLSConfig: agentTLS, Standby: standby, MaxStandby: standby}
			ln, err := p.Listen(ctx, addr, fmt.Sprintf("r%d", i))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { ln.Close() })
		}
	}
	rss := func() int64 { return proctest.StatusKB(t, pid, "VmRSS") << 10 }

	standbys(0)
	gw0, ag0 := rss(), agentHeap()
	publish(0, 1)
	standbys(routes)
	gw1, ag1 := rss(), agentHeap()
	publish(routes, 9)
	standbys(routes + 9*routes)
	gw2, ag2 := rss(), agentHeap()

	perStandby := func(a, b, c int64) float64 { return float64((c-b)-(b-a)) / (8 * routes) }
	perRoute := func(a, b, c int64) float64 { return float64(b-a)/routes - perStandby(a, b, c) }
	gwRoute, gwStandby := perRoute(gw0, gw1, gw2), perStandby(gw0, gw1, gw2)
	agRoute, agStandby := perRoute(ag0, ag1, ag2), perStandby(ag0, ag1, ag2)
	t.Logf("gateway (serve's VmRSS): %.1f KiB per published route, %.1f KiB per idle standby", gwRoute/1024, gwStandby/1024)
	t.Logf("agent (Go heap+stacks): %.1f KiB per published route, %.1f KiB per idle standby", agRoute/1024, agStandby/1024)
	if gwRoute > 256<<10 || gwStandby > 256<<10 {
		t.Fatalf("gateway memory: %.0f B per route, %.0f B per standby; want under 256 KiB each", gwRoute, gwStandby)
	}
}
