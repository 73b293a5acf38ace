package mux_test

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ampmux/ampmux/mux"
)

// Issue 11's goal: 10,000 idle connections being sniffed, from 40
// addresses, and new clients still answered.
const (
	floodSources = 40  // 127.0.0.2 to 127.0.0.41
	floodPer     = 250 // connections from each
	floodConns   = floodSources * floodPer
	// floodEnv tells the child process what to hold: "ADDR SOURCES PER".
	floodEnv = "MUX_FLOOD_HELPER"
)

// floodConfig keeps the flood sniffing for as long as the test runs and
// above every cap, so that what is measured is sniffing, not eviction.
// (MaxConns's default, half the descriptor limit, is 10,000 where the
// limit is 20,000.)
func floodConfig() mux.Config {
	return mux.Config{SniffTimeout: time.Hour, MaxConns: 4 * floodConns}
}

// TestFloodHelper is the child process of TestFlood and
// BenchmarkFloodedPort: the client sockets of a flood do not fit in the
// server's process under a 20,000-descriptor limit. It dials, says READY on
// stdout, and holds the connections until its stdin closes.
func TestFloodHelper(t *testing.T) {
	spec := os.Getenv(floodEnv)
	if spec == "" {
		t.Skip("the child process of TestFlood and BenchmarkFloodedPort")
	}
	var addr string
	var sources, per int
	if _, err := fmt.Sscan(spec, &addr, &sources, &per); err != nil {
		t.Fatalf("%s=%q: %v", floodEnv, spec, err)
	}
	raiseFDLimit(t, sources*per+100)
	conns, err := dialIdle(addr, sources, per)
	defer func() {
		for _, nc := range conns {
			nc.Close()
		}
	}()
	if err != nil {
		fmt.Printf("ERROR %v\n", err)
		t.Fatal(err)
	}
	fmt.Printf("READY %d\n", len(conns))
	io.Copy(io.Discard, os.Stdin)
}

// dialIdle opens sources*per connections to addr, from 127.0.0.2 on,
// taking the sources in turn, and sends nothing on them.
func dialIdle(addr string, sources, per int) ([]net.Conn, error) {
	conns := make([]net.Conn, sources*per)
	next := make(chan int)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var first error
	for range 32 {
		wg.Go(func() {
			for i := range next {
				d := net.Dialer{LocalAddr: &net.TCPAddr{IP: loopback(byte(2 + i%sources))}, Timeout: 30 * time.Second}
				nc, err := d.Dial("tcp", addr)
				mu.Lock()
				if err != nil && first == nil {
					first = err
				}
				conns[i] = nc
				mu.Unlock()
			}
		})
	}
	for i := range conns {
		mu.Lock()
		failed := first != nil
		mu.Unlock()
		if failed {
			break
		}
		next <- i
	}
	close(next)
	wg.Wait()
	held := conns[:0]
	for _, nc := range conns {
		if nc != nil {
			held = append(held, nc)
		}
	}
	return held, first
}

// startFlood runs TestFloodHelper in a child process against addr and
// returns once its connections are open; they close when the test ends.
func startFlood(t testing.TB, addr string, sources, per int) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestFloodHelper$", "-test.count=1")
	cmd.Env = append(os.Environ(), fmt.Sprintf("%s=%s %d %d", floodEnv, addr, sources, per))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdin, err := cmd.StdinPipe()
	require.NoError(t, err)
	stdout, err := cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	lines := make(chan string, 16)
	readDone := make(chan struct{})
	go func() {
		defer close(readDone)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			select {
			case lines <- sc.Text():
			default: // nobody listens any more
			}
		}
	}()
	t.Cleanup(func() {
		stdin.Close() // the child closes its connections and exits
		<-readDone
		if err := cmd.Wait(); err != nil {
			t.Errorf("flood helper: %v; stderr: %s", err, stderr.String())
		}
	})
	timeout := time.After(2 * time.Minute)
	for {
		select {
		case line := <-lines:
			if n, ok := strings.CutPrefix(line, "READY "); ok {
				require.Equal(t, strconv.Itoa(sources*per), n, "connections the helper holds")
				return
			}
			if strings.HasPrefix(line, "ERROR ") || strings.HasPrefix(line, "--- FAIL") {
				t.Fatalf("flood helper: %s", line)
			}
		case <-readDone:
			t.Fatalf("flood helper ended before it was ready; stderr: %s", stderr.String())
		case <-timeout:
			t.Fatal("flood helper not ready after 2 minutes")
		}
	}
}

// memory is the process's Go memory (heap and stacks in use) and its
// resident set (Linux only; 0 elsewhere).
type memory struct{ goMem, rss int64 }

func memNow() memory {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	m := memory{goMem: int64(ms.HeapInuse + ms.StackInuse)}
	if b, err := os.ReadFile("/proc/self/status"); err == nil {
		for line := range strings.Lines(string(b)) {
			if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
				kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
				m.rss = kb << 10
			}
		}
	}
	return m
}

// perConn is the growth from m to after per connection of n.
func (m memory) perConn(after memory, n int) (goMem, rss float64) {
	return float64(after.goMem-m.goMem) / float64(n), float64(after.rss-m.rss) / float64(n)
}

// Issue 11's goal: with 10,000 idle connections sniffing, a new AMP call
// and a new HTTP request from another address are answered; each idle
// connection costs the server little memory.
func TestFlood(t *testing.T) {
	if testing.Short() {
		t.Skip("opens 10,000 connections")
	}
	raiseFDLimit(t, floodConns+1000)
	needLoopback(t, 1+floodSources)
	s := startShared(t, floodConfig())
	ctx := ctxT(t)
	require.NoError(t, ampSum(ctx, s.addr)) // the servers' first-use allocations, before measuring
	s.http.CloseIdleConnections()
	before := memNow()

	startFlood(t, s.addr, floodSources, floodPer)
	s.waitAdmitted(t, floodConns+1) // and the first AMP client
	st := s.m.Stats()
	require.EqualValues(t, floodConns, st.Sniffing, "%+v", st)
	require.EqualValues(t, floodConns, st.Silent)
	require.EqualValues(t, floodSources, st.Sources)

	require.NoError(t, ampSum(ctx, s.addr))
	got, err := get(s.http, "http://"+s.addr+"/")
	require.NoError(t, err)
	require.Equal(t, "hello GET HTTP/1.1", got)

	after := memNow()
	st = s.m.Stats()
	require.EqualValues(t, floodConns, st.Sniffing, "the flood still sniffing: %+v", st)
	require.Zero(t, st.EvictedPerSource+st.EvictedGlobal+st.RefusedPerSource+st.RefusedTotal, "%+v", st)
	goMem, rss := before.perConn(after, floodConns)
	t.Logf("per idle sniffing connection: %.0f bytes of Go heap and stacks, %.0f bytes of RSS (race detector: %v)", goMem, rss, raceEnabled)
	require.Less(t, goMem, float64(64<<10), "bytes of memory per idle connection")
}

// BenchmarkFloodedPort measures a new client's AMP call (dial, Sum, close)
// and HTTP request (a fresh connection) while 10,000 idle connections from
// other addresses are being sniffed, and with none for comparison.
func BenchmarkFloodedPort(b *testing.B) {
	for _, idle := range []int{0, floodConns} {
		b.Run(fmt.Sprintf("idle=%d", idle), func(b *testing.B) { benchFlooded(b, idle) })
	}
}

func benchFlooded(b *testing.B, idle int) {
	raiseFDLimit(b, idle+1000)
	needLoopback(b, 1+floodSources)
	s := startShared(b, floodConfig())
	ctx := context.Background()
	if err := ampSum(ctx, s.addr); err != nil {
		b.Fatal(err)
	}
	before := memNow()
	if idle > 0 {
		startFlood(b, s.addr, floodSources, idle/floodSources)
	}
	s.waitAdmitted(b, idle+1)
	if err := ampSum(ctx, s.addr); err != nil { // under the flood, before measuring
		b.Fatal(err)
	}
	after := memNow()
	hc := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 30 * time.Second}
	b.Cleanup(hc.CloseIdleConnections)
	url := "http://" + s.addr + "/"
	var amp, web []time.Duration
	for b.Loop() {
		t0 := time.Now()
		if err := ampSum(ctx, s.addr); err != nil {
			b.Fatal(err)
		}
		t1 := time.Now()
		if _, err := get(hc, url); err != nil {
			b.Fatal(err)
		}
		amp, web = append(amp, t1.Sub(t0)), append(web, time.Since(t1))
	}
	b.StopTimer()
	if st := s.m.Stats(); st.Sniffing != int64(idle) {
		b.Fatalf("%d sniffing at the end, want %d: %+v", st.Sniffing, idle, st)
	}
	report := func(name string, d []time.Duration) {
		slices.Sort(d)
		var sum time.Duration
		for _, x := range d {
			sum += x
		}
		b.ReportMetric(float64(sum.Nanoseconds())/float64(len(d)), name+"-ns/op")
		b.ReportMetric(float64(d[len(d)*99/100].Nanoseconds()), name+"-p99-ns")
		b.ReportMetric(float64(d[len(d)-1].Nanoseconds()), name+"-max-ns")
	}
	report("amp", amp)
	report("http", web)
	if idle > 0 { // RSS is left out: freed pages of the runs before blur it
		goMem, _ := before.perConn(after, idle)
		b.ReportMetric(goMem, "bytes/idle-conn")
	}
}
