package mux_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"math/big"
	"net"
	"runtime"
	"sync/atomic"
	"syscall"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ampmux/ampmux/amp/conn"
	"github.com/ampmux/ampmux/internal/demo"
	"github.com/ampmux/ampmux/mux"
)

// loopback is 127.0.0.n: on Linux all of 127/8 reaches lo, so each n is a
// source of its own.
func loopback(n byte) net.IP { return net.IPv4(127, 0, 0, n) }

// dialFrom connects to addr from 127.0.0.from; the connection is closed
// when the test ends.
func dialFrom(t testing.TB, from byte, addr string) net.Conn {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: loopback(from)}, Timeout: 20 * time.Second}
	nc, err := d.Dial("tcp", addr)
	if errors.Is(err, syscall.EADDRNOTAVAIL) && runtime.GOOS != "linux" {
		t.Skipf("127.0.0.%d is not a local address here: %v", from, err)
	}
	require.NoError(t, err)
	t.Cleanup(func() { nc.Close() })
	return nc
}

// needLoopback skips t where 127.0.0.from is not a local address (macOS
// has only 127.0.0.1 unless told otherwise); on Linux it always is.
func needLoopback(t testing.TB, from byte) {
	t.Helper()
	l, err := net.Listen("tcp", net.JoinHostPort(loopback(from).String(), "0"))
	if err != nil && runtime.GOOS != "linux" {
		t.Skipf("127.0.0.%d is not a local address here: %v", from, err)
	}
	require.NoError(t, err)
	l.Close()
}

// limitsHarness runs one policy case: a mux and named client connections.
type limitsHarness struct {
	t     *testing.T
	s     *shared
	conns map[string]net.Conn
}

// step is one action or check of a policy case; it runs on the test's
// goroutine.
type step func(h *limitsHarness)

// dial opens name from 127.0.0.from and waits until the mux has admitted
// or refused it.
func dial(name string, from byte) step {
	return func(h *limitsHarness) {
		h.conns[name] = dialFrom(h.t, from, h.s.addr)
		h.s.waitAdmitted(h.t, 1)
	}
}

// say writes b on name (not enough to match a class).
func say(name, b string) step {
	return func(h *limitsHarness) {
		_, err := io.WriteString(h.conns[name], b)
		require.NoError(h.t, err, name)
	}
}

// closedByMux reads until name ends: the server closed it.
func closedByMux(name string) step {
	return func(h *limitsHarness) {
		nc := h.conns[name]
		nc.SetReadDeadline(time.Now().Add(20 * time.Second))
		n, err := nc.Read(make([]byte, 1))
		require.Zero(h.t, n, name)
		require.ErrorIs(h.t, err, io.EOF, "%s closed by the server", name)
	}
}

// ampCall makes a Sum call over name, proving that it was still open and
// that the mux took it for AMP; name stays open.
func ampCall(name string) step {
	return func(h *limitsHarness) {
		c := conn.New(h.conns[name], &conn.Config{Logger: quiet()})
		h.t.Cleanup(func() { c.Close() })
		r, err := demo.Sum.Call(ctxT(h.t), c, demo.SumArgs{A: big.NewInt(2), B: big.NewInt(3)})
		require.NoError(h.t, err, name)
		require.EqualValues(h.t, 5, r.Total.Int64(), name)
	}
}

// finishGET completes the request line name started with "GET" and reads
// the answer: name was still open, and the mux took it for HTTP.
func finishGET(name string) step {
	return func(h *limitsHarness) {
		nc := h.conns[name]
		_, err := io.WriteString(nc, " / HTTP/1.0\r\n\r\n")
		require.NoError(h.t, err, name)
		nc.SetReadDeadline(time.Now().Add(20 * time.Second))
		got, err := io.ReadAll(nc)
		require.NoError(h.t, err, name)
		require.Contains(h.t, string(got), "hello GET HTTP/1.0", name)
	}
}

// hangUp closes name from the client's side.
func hangUp(name string) step {
	return func(h *limitsHarness) { require.NoError(h.t, h.conns[name].Close()) }
}

// stats waits until the mux's Stats satisfy ok.
func stats(what string, ok func(mux.Stats) bool) step {
	return func(h *limitsHarness) { waitStats(h.t, h.s.m, what, ok) }
}

// waitStats polls m.Stats until ok holds; the Stats are how a test sees
// what happens in the mux's goroutines (a server closing a connection).
func waitStats(t testing.TB, m *mux.Server, what string, ok func(mux.Stats) bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		st := m.Stats()
		if ok(st) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: never true; stats %+v", what, st)
		}
		time.Sleep(time.Millisecond)
	}
}

// counts is a check of the gauges (sniffing, open) and the counters that
// are not zero; every other counter must be.
func counts(sniffing, open int64, counters mux.Stats) func(mux.Stats) bool {
	return func(st mux.Stats) bool {
		counters.Sniffing, counters.Open = sniffing, open
		st.Silent, st.Sources = 0, 0
		return st == counters
	}
}

func TestSniffingLimits(t *testing.T) {
	long := time.Hour // no connection times out unless its deadline was shortened
	tests := []struct {
		name  string
		cfg   mux.Config
		steps []step
	}{
		{
			name: "per-source cap closes that source's oldest, silent ones first",
			cfg:  mux.Config{SniffTimeout: long, MinSniffTimeout: long, MaxSniffingPerSource: 3},
			steps: []step{
				dial("a1", 2), dial("a2", 2), dial("a3", 2), dial("b1", 3),
				stats("4 sniffing", counts(4, 4, mux.Stats{})),
				dial("a4", 2), // a1 goes: the oldest of a's
				closedByMux("a1"),
				stats("a1 evicted", counts(4, 4, mux.Stats{EvictedPerSource: 1})),
				say("a2", "GET"), // a2 talks: a3 is now a's oldest silent one
				stats("a2 talking", func(st mux.Stats) bool { return st.Silent == 3 }),
				dial("a5", 2),
				closedByMux("a3"),
				stats("a3 evicted", counts(4, 4, mux.Stats{EvictedPerSource: 2})),
				ampCall("b1"), finishGET("a2"), ampCall("a4"), ampCall("a5"),
			},
		},
		{
			name: "global cap closes the oldest of the source sniffing most",
			cfg:  mux.Config{SniffTimeout: long, MaxSniffing: 5, MinSniffTimeout: long},
			steps: []step{
				dial("a1", 2), dial("b1", 3), dial("b2", 3), dial("b3", 3), dial("a2", 2),
				dial("c1", 4), // b has the most: b1 goes, not a1 (older)
				closedByMux("b1"),
				stats("b1 evicted", counts(5, 5, mux.Stats{EvictedGlobal: 1})),
				ampCall("a1"), ampCall("a2"), ampCall("b2"), ampCall("b3"), ampCall("c1"),
				stats("all handed out", counts(0, 5, mux.Stats{EvictedGlobal: 1})),
			},
		},
		{
			name: "connection cap closes a sniffer, else the new connection",
			cfg:  mux.Config{SniffTimeout: long, MaxConns: 3},
			steps: []step{
				dial("a1", 2), ampCall("a1"), dial("b1", 3), dial("b2", 3),
				dial("c1", 4), // b has the most sniffing
				closedByMux("b1"),
				stats("b1 evicted", counts(2, 3, mux.Stats{EvictedGlobal: 1})),
				ampCall("b2"), ampCall("c1"),
				dial("d1", 5), // nobody sniffs: d1 is refused
				closedByMux("d1"),
				stats("d1 refused", counts(0, 3, mux.Stats{EvictedGlobal: 1, RefusedTotal: 1})),
			},
		},
		{
			name: "per-source connection cap refuses the new connection",
			cfg:  mux.Config{SniffTimeout: long, MaxConnsPerSource: 2},
			steps: []step{
				dial("a1", 2), ampCall("a1"), dial("a2", 2),
				dial("a3", 2), // a has 2 open: refused, a2 (sniffing) stays
				closedByMux("a3"),
				stats("a3 refused", counts(1, 2, mux.Stats{RefusedPerSource: 1})),
				dial("b1", 3), ampCall("b1"), // other sources are not held to a's cap
				hangUp("a1"), // its server closes it: a has room again
				stats("a1 released", counts(1, 2, mux.Stats{RefusedPerSource: 1})),
				dial("a4", 2), ampCall("a4"), ampCall("a2"),
				stats("a2 and a4 open", counts(0, 3, mux.Stats{RefusedPerSource: 1})),
			},
		},
		{
			name: "a closed connection is released",
			cfg:  mux.Config{SniffTimeout: long},
			steps: []step{
				dial("a1", 2),
				stats("sniffing", counts(1, 1, mux.Stats{})),
				ampCall("a1"),
				stats("handed out", counts(0, 1, mux.Stats{})),
				hangUp("a1"),
				stats("released", func(st mux.Stats) bool { return st == mux.Stats{} }),
				dial("a2", 2), hangUp("a2"), // closed while sniffing
				stats("released while sniffing", func(st mux.Stats) bool { return st == mux.Stats{} }),
			},
		},
		{
			name: "the deadline is shortened past half the global cap",
			cfg:  mux.Config{SniffTimeout: long, MinSniffTimeout: 50 * time.Millisecond, MaxSniffing: 4},
			steps: []step{
				dial("a1", 2), dial("b1", 3), // 2 of 4: no pressure
				stats("not shortened", counts(2, 2, mux.Stats{})),
				dial("c1", 4), // 3 of 4: pressure
				stats("shortened", func(st mux.Stats) bool { return st.DeadlinesShortened == 1 }),
				closedByMux("c1"), // only its shortened deadline can close it
				stats("c1 timed out", counts(2, 2, mux.Stats{DeadlinesShortened: 1})),
				ampCall("a1"), ampCall("b1"),
			},
		},
		{
			name: "the deadline is shortened past half the per-source cap",
			cfg:  mux.Config{SniffTimeout: long, MinSniffTimeout: 50 * time.Millisecond, MaxSniffingPerSource: 4},
			steps: []step{
				dial("a1", 2), dial("a2", 2), dial("b1", 3), dial("b2", 3),
				stats("not shortened", counts(4, 4, mux.Stats{})),
				dial("a3", 2), // 3 of a's 4
				closedByMux("a3"),
				stats("a3 timed out", counts(4, 4, mux.Stats{DeadlinesShortened: 1})),
				ampCall("a1"), ampCall("a2"), ampCall("b1"), ampCall("b2"),
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := &limitsHarness{t: t, s: startShared(t, tc.cfg), conns: make(map[string]net.Conn)}
			for _, st := range tc.steps {
				st(h)
			}
		})
	}
}

// A connection a class hands out is uncounted once, however it is closed.
func TestHandedOutConnReleasedOnce(t *testing.T) {
	t.Run("closed twice by its server", func(t *testing.T) {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		require.NoError(t, err)
		m := mux.New(l, mux.Config{Logger: quiet()})
		served := make(chan error, 1)
		go func() { served <- m.Serve() }()
		t.Cleanup(func() { m.Close(); <-served })
		c1 := dialFrom(t, 1, l.Addr().String())
		c2 := dialFrom(t, 1, l.Addr().String())
		for _, c := range []net.Conn{c1, c2} {
			_, err = c.Write([]byte("\x00\x04Ping"))
			require.NoError(t, err)
		}
		a, err := m.AMP().Accept()
		require.NoError(t, err)
		b, err := m.AMP().Accept()
		require.NoError(t, err)
		waitStats(t, m, "both handed out", counts(0, 2, mux.Stats{}))
		require.NoError(t, a.Close())
		a.Close()
		waitStats(t, m, "one released", counts(0, 1, mux.Stats{}))
		require.NoError(t, b.Close())
		waitStats(t, m, "both released", func(st mux.Stats) bool { return st == mux.Stats{} })
	})

	t.Run("closed by the mux when nobody accepts it", func(t *testing.T) {
		s := startShared(t, mux.Config{SniffTimeout: 100 * time.Millisecond})
		c := dialFrom(t, 2, s.addr)
		_, err := c.Write([]byte("\x16\x03\x01")) // TLS: nobody serves the TLS class
		require.NoError(t, err)
		c.SetReadDeadline(time.Now().Add(20 * time.Second))
		_, err = c.Read(make([]byte, 1))
		require.ErrorIs(t, err, io.EOF)
		waitStats(t, s.m, "released", func(st mux.Stats) bool { return st == mux.Stats{} })
	})

	t.Run("closed by cmux when no class matches", func(t *testing.T) {
		var unmatched atomic.Int32
		s := startShared(t, mux.Config{OnMatch: func(c mux.Class) {
			if c == -1 {
				unmatched.Add(1)
			}
		}})
		c := dialFrom(t, 2, s.addr)
		_, err := c.Write([]byte("\x05\x05 not a protocol\r\n"))
		require.NoError(t, err)
		c.SetReadDeadline(time.Now().Add(20 * time.Second))
		_, err = c.Read(make([]byte, 1))
		require.ErrorIs(t, err, io.EOF)
		waitStats(t, s.m, "released", func(st mux.Stats) bool { return st == mux.Stats{} })
		require.Eventually(t, func() bool { return unmatched.Load() == 1 }, 20*time.Second, time.Millisecond,
			"OnMatch(-1), after cmux closed it")
	})

	t.Run("HTTP keep-alive and close", func(t *testing.T) {
		s := startShared(t, mux.Config{})
		for range 3 {
			_, err := get(s.http, "http://"+s.addr+"/")
			require.NoError(t, err)
		}
		s.http.CloseIdleConnections()
		waitStats(t, s.m, "released", func(st mux.Stats) bool { return st.Open == 0 })
	})
}

// Under a flood of evictions the log gets a line a second of each kind,
// not one per connection. In a bubble, all 50 come at the same instant.
func TestLimitWarningsAreRateLimited(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		logged := make(chan string, 100)
		fl := &fakeListener{conns: make(chan net.Conn), closed: make(chan struct{})}
		s := mux.New(fl, mux.Config{Logger: slog.New(warnLog{logged}), SniffTimeout: time.Hour,
			MinSniffTimeout: time.Hour, MaxSniffingPerSource: 1}) // pipes are all one source
		done := make(chan error, 1)
		go func() { done <- s.Serve() }()
		connect := func() {
			client, server := net.Pipe()
			t.Cleanup(func() { client.Close() })
			fl.conns <- server
		}
		for range 50 {
			connect()
		}
		synctest.Wait() // the last one admitted
		require.EqualValues(t, 49, s.Stats().EvictedPerSource)
		require.Len(t, logged, 1)
		require.Contains(t, <-logged, "sniffing cap")
		time.Sleep(time.Second) // of the bubble's clock
		connect()
		synctest.Wait()
		require.Len(t, logged, 1)
		require.Contains(t, <-logged, "suppressed=48")
		require.NoError(t, s.Close())
		require.ErrorIs(t, <-done, mux.ErrServerClosed)
	})
}

// warnLog sends the messages of warn records to ch, with their attributes.
type warnLog struct{ ch chan string }

func (h warnLog) Enabled(_ context.Context, l slog.Level) bool { return l >= slog.LevelWarn }
func (h warnLog) Handle(_ context.Context, r slog.Record) error {
	msg := r.Message
	r.Attrs(func(a slog.Attr) bool { msg += " " + a.String(); return true })
	h.ch <- msg
	return nil
}
func (h warnLog) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h warnLog) WithGroup(string) slog.Handler      { return h }

// A connection matched to a class nobody accepts from waits SniffTimeout,
// counted as waiting (not sniffing), then is closed; the warning of that
// is rate-limited like the caps'. Shutdown closes those still waiting.
func TestUndeliveredWaitAndWarningsAreRateLimited(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		logged := make(chan string, 100)
		fl := &fakeListener{conns: make(chan net.Conn), closed: make(chan struct{})}
		s := mux.New(fl, mux.Config{Logger: slog.New(warnLog{logged}), SniffTimeout: time.Second})
		done := make(chan error, 1)
		go func() { done <- s.Serve() }()
		var clients []net.Conn
		tlsHello := func(n int) { // nobody accepts TLS
			for range n {
				client, server := net.Pipe()
				t.Cleanup(func() { client.Close() })
				clients = append(clients, client)
				fl.conns <- server
				go client.Write([]byte("\x16\x03\x01"))
			}
		}
		tlsHello(20)
		synctest.Wait()
		st := s.Stats()
		require.EqualValues(t, 20, st.Waiting, "%+v", st)
		require.Zero(t, st.Sniffing, "%+v", st)
		require.EqualValues(t, 20, st.Open, "%+v", st)
		require.Empty(t, logged)

		time.Sleep(time.Second) // of the bubble: every wait ends at once
		synctest.Wait()
		require.Equal(t, mux.Stats{}, s.Stats())
		require.Len(t, logged, 1)
		require.Contains(t, <-logged, "nobody accepted")

		time.Sleep(time.Second)
		tlsHello(1)
		time.Sleep(time.Second)
		synctest.Wait()
		require.Len(t, logged, 1)
		require.Contains(t, <-logged, "suppressed=19")

		tlsHello(3)
		synctest.Wait()
		require.EqualValues(t, 3, s.Stats().Waiting)
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		require.NoError(t, s.Shutdown(ctx))
		require.ErrorIs(t, <-done, mux.ErrServerClosed)
		synctest.Wait()
		require.Equal(t, mux.Stats{}, s.Stats(), "Shutdown closed the connections still waiting")
		for _, c := range clients[len(clients)-3:] {
			_, err := c.Read(make([]byte, 1))
			require.ErrorIs(t, err, io.EOF)
		}
		require.Empty(t, logged, "closed by Shutdown, not by the wait")
	})
}
