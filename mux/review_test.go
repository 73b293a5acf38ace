package mux

// Adversarial review of the source table and its lifecycle (see the
// findings in the TestReview... comments). Every wait is bounded.

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/soheilhy/cmux"
	"github.com/stretchr/testify/require"

	"github.com/ampmux/ampmux/internal/pki"
)

const rvBound = 20 * time.Second

func rvQuiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// rvServe runs a mux on l until the test ends.
func rvServe(t *testing.T, l net.Listener, cfg Config) *Server {
	t.Helper()
	if cfg.Logger == nil {
		cfg.Logger = rvQuiet()
	}
	m := New(l, cfg)
	served := make(chan error, 1)
	go func() { served <- m.Serve() }()
	t.Cleanup(func() {
		m.Close()
		select {
		case <-served:
		case <-time.After(rvBound):
			t.Error("Serve did not return after Close")
		}
	})
	return m
}

func rvListen(t *testing.T) net.Listener {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	return l
}

func rvDial(t *testing.T, from byte, addr string) net.Conn {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, from)}, Timeout: rvBound}
	nc, err := d.Dial("tcp", addr)
	require.NoError(t, err)
	t.Cleanup(func() { nc.Close() })
	return nc
}

// rvWait polls cond until it holds, failing after rvBound.
func rvWait(t *testing.T, m *Server, what string, cond func(Stats) bool) {
	t.Helper()
	deadline := time.Now().Add(rvBound)
	for !cond(m.Stats()) {
		if time.Now().After(deadline) {
			t.Fatalf("%s: never true; stats %+v", what, m.Stats())
		}
		time.Sleep(time.Millisecond)
	}
}

func rvZero(st Stats) bool {
	return st.Open == 0 && st.Sniffing == 0 && st.Silent == 0 && st.Sources == 0
}

// rvAccept accepts from l within rvBound.
func rvAccept(t *testing.T, l net.Listener) net.Conn {
	t.Helper()
	ch := make(chan net.Conn, 1)
	go func() {
		c, err := l.Accept()
		if err == nil {
			ch <- c
		} else {
			close(ch)
		}
	}()
	select {
	case c, ok := <-ch:
		require.True(t, ok, "Accept failed")
		return c
	case <-time.After(rvBound):
		t.Fatal("Accept timed out")
		return nil
	}
}

// rvEOF reads nc until it ends; the mux (or a server) closed it.
func rvEOF(t *testing.T, nc net.Conn, what string) {
	t.Helper()
	nc.SetReadDeadline(time.Now().Add(rvBound))
	_, err := io.Copy(io.Discard, nc)
	require.NoError(t, err, "%s: closed by the server (io.Copy sees EOF as nil)", what)
}

// Was a defect: a connection cmux had matched (here AMP) still counted as
// sniffing, and so could be evicted, until its class's pump handed it out,
// and the pump called Config.OnMatch synchronously first: a slow metrics
// callback (or a starved pump) left later matches counted as sniffing, and
// a new connection from the source evicted one that had sent a valid AMP
// box. Now a connection leaves sniffing the moment its matcher matches, in
// cmux's goroutine for it, and OnMatch runs there, after: a and b are both
// waiting (not sniffing) while a's OnMatch blocks, so c, silent, evicts
// neither under MaxSniffingPerSource 1.
func TestReviewMatchedConnIsNotEvicted(t *testing.T) {
	l := rvListen(t)
	entered := make(chan struct{})
	unblock := make(chan struct{})
	var first atomic.Bool
	m := rvServe(t, l, Config{MaxSniffingPerSource: 1, SniffTimeout: rvBound, MinSniffTimeout: rvBound,
		OnMatch: func(c Class) {
			if c == ClassAMP && first.CompareAndSwap(false, true) {
				close(entered)
				select { // a slow metrics sink
				case <-unblock:
				case <-time.After(rvBound):
				}
			}
		}})
	var once sync.Once
	t.Cleanup(func() { once.Do(func() { close(unblock) }) }) // runs before the mux's Close

	a := rvDial(t, 2, l.Addr().String())
	_, err := a.Write([]byte("\x00\x04Ping"))
	require.NoError(t, err)
	select {
	case <-entered:
	case <-time.After(rvBound):
		t.Fatal("OnMatch never called")
	}
	b := rvDial(t, 2, l.Addr().String())
	_, err = b.Write([]byte("\x00\x04Ping"))
	require.NoError(t, err)
	// Both are matched: a while its OnMatch still runs, b queued for AMP.
	// Neither counts as sniffing any more.
	rvWait(t, m, "a and b matched", func(st Stats) bool { return st.Waiting == 2 && st.Sniffing == 0 })
	t.Logf("b matched; stats %+v", m.Stats())

	rvDial(t, 2, l.Addr().String()) // c: silent, same source
	rvWait(t, m, "c admitted", func(st Stats) bool { return st.Silent == 1 })
	st := m.Stats()
	once.Do(func() { close(unblock) })
	require.Zero(t, st.EvictedPerSource, "a matched AMP connection was evicted: %+v", st)

	rvAccept(t, m.AMP()).Close()
	rvAccept(t, m.AMP()).Close()
}

// Was a defect: connections of a class nobody accepts from (the zero Config
// routes TLS and h2c even when nobody serves them) waited up to
// SniffTimeout for an Accept, counted as open but beyond eviction, so one
// source sending "\x16\x03" per connection filled MaxConns and every other
// client was refused, each costing an unthrottled "nobody accepted" Warn.
// Now such a connection waits evictable: under MaxConns the source the mux
// holds most of loses its oldest silent connection, else the one that has
// waited longest for an Accept; the warning is rate-limited.
func TestReviewUnservedClassHoldsMaxConns(t *testing.T) {
	l := rvListen(t)
	addr := l.Addr().String()
	var tlsMatched atomic.Int64
	m := rvServe(t, l, Config{MaxConns: 8, SniffTimeout: rvBound, OnMatch: func(c Class) {
		if c == ClassTLS {
			tlsMatched.Add(1)
		}
	}})
	for range 8 { // nobody accepts TLS
		c := rvDial(t, 30, addr)
		_, err := c.Write([]byte("\x16\x03\x01"))
		require.NoError(t, err)
	}
	rvWait(t, m, "the flood matched", func(Stats) bool { return tlsMatched.Load() == 8 })
	t.Logf("flood waiting for delivery: %+v", m.Stats())

	accepted := make(chan struct{}, 1)
	go func() {
		if c, err := m.AMP().Accept(); err == nil {
			c.Close()
			accepted <- struct{}{}
		}
	}()
	victim := rvDial(t, 31, addr)
	_, err := victim.Write([]byte("\x00\x04Ping"))
	require.NoError(t, err)
	deadline := time.After(rvBound)
	for {
		select {
		case <-accepted:
			require.EqualValues(t, 1, m.Stats().EvictedWaiting, "the flood's oldest waiting connection made room")
			return
		case <-deadline:
			t.Fatalf("the AMP client from another source was never accepted; stats %+v", m.Stats())
		default:
		}
		if st := m.Stats(); st.RefusedTotal > 0 {
			t.Fatalf("an AMP client from another source was refused: one source's undeliverable connections hold MaxConns: %+v", st)
		}
		time.Sleep(time.Millisecond)
	}
}

// Held: however a handed-out connection ends (closed twice by its
// server, through a tls.Server wrapper, hijacked by net/http and closed by
// the handler, closed by the mux because its class's listener is closed
// (before it arrived, or while it waited for an Accept), evicted while sniffing, or on a unix socket, where every client is one
// source), the counts come back to zero.
func TestReviewCountsReturnToZero(t *testing.T) {
	l := rvListen(t)
	addr := l.Addr().String()
	var wg sync.WaitGroup
	t.Cleanup(wg.Wait) // after the mux's Close, which ends the Accepts
	m := rvServe(t, l, Config{MaxSniffingPerSource: 2, SniffTimeout: rvBound, Other: true})

	ca, err := pki.NewCA("review CA")
	require.NoError(t, err)
	cert, err := ca.Server("localhost")
	require.NoError(t, err)
	wg.Go(func() { // TLS, terminated by the test through the class listener
		tl := tls.NewListener(m.TLS(), &tls.Config{Certificates: []tls.Certificate{cert.TLS()}})
		for {
			c, err := tl.Accept()
			if err != nil {
				return
			}
			c.SetDeadline(time.Now().Add(rvBound))
			io.ReadFull(c, make([]byte, 1))
			c.Close()
			c.Close()
		}
	})
	hs := &http.Server{ErrorLog: nil, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, _, err := w.(http.Hijacker).Hijack()
		if err != nil {
			return
		}
		io.WriteString(c, "HTTP/1.0 200 OK\r\n\r\nhijacked")
		c.Close()
		c.Close()
	})}
	wg.Go(func() { hs.Serve(m.HTTP()) })
	t.Cleanup(func() { hs.Close() })
	wg.Go(func() { // AMP: read, then close twice
		for {
			c, err := m.AMP().Accept()
			if err != nil {
				return
			}
			c.SetDeadline(time.Now().Add(rvBound))
			io.ReadFull(c, make([]byte, 2))
			c.Close()
			c.Close()
		}
	})
	require.NoError(t, m.HTTP2().Close()) // h2c connections wait for delivery, then are closed

	tc := tls.Client(rvDial(t, 3, addr), &tls.Config{RootCAs: ca.Pool(), ServerName: "localhost"})
	tc.SetDeadline(time.Now().Add(rvBound))
	require.NoError(t, tc.Handshake())
	_, err = tc.Write([]byte("x"))
	require.NoError(t, err)
	_, err = io.Copy(io.Discard, tc)
	require.NoError(t, err)
	tc.Close()

	hc := rvDial(t, 4, addr)
	io.WriteString(hc, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	hc.SetReadDeadline(time.Now().Add(rvBound))
	got, err := io.ReadAll(hc)
	require.NoError(t, err)
	require.Contains(t, string(got), "hijacked")

	ac := rvDial(t, 5, addr)
	io.WriteString(ac, "\x00\x04Ping")
	rvEOF(t, ac, "amp")

	h2 := rvDial(t, 6, addr)
	io.WriteString(h2, http2Preface)
	rvEOF(t, h2, "h2c with its listener closed")

	oc := rvDial(t, 6, addr) // Other: nobody accepts, so it waits in deliver
	io.WriteString(oc, "\x05\x05")
	rvWait(t, m, "other waiting for delivery", func(st Stats) bool { return st.Open == 1 && st.Sniffing == 0 })
	require.NoError(t, m.Other().Close())
	rvEOF(t, oc, "other, its listener closed while it waited")

	var evicted []net.Conn
	for range 3 {
		evicted = append(evicted, rvDial(t, 7, addr))
		n := int64(len(evicted))
		rvWait(t, m, "admitted", func(st Stats) bool { return st.Silent == min(n, 2) && st.EvictedPerSource == max(n-2, 0) })
	}
	rvEOF(t, evicted[0], "evicted")

	for _, c := range evicted {
		c.Close()
	}
	rvWait(t, m, "all released", rvZero)

	// A unix socket: RemoteAddr is an unnamed *net.UnixAddr, the zero key.
	ul, err := net.Listen("unix", filepath.Join(t.TempDir(), "s"))
	require.NoError(t, err)
	um := rvServe(t, ul, Config{MaxSniffingPerSource: 1, SniffTimeout: rvBound})
	u1, err := net.Dial("unix", ul.Addr().String())
	require.NoError(t, err)
	t.Cleanup(func() { u1.Close() })
	rvWait(t, um, "u1 admitted", func(st Stats) bool { return st.Sniffing == 1 })
	u2, err := net.Dial("unix", ul.Addr().String())
	require.NoError(t, err)
	t.Cleanup(func() { u2.Close() })
	rvEOF(t, u1, "u1 evicted by u2: one source")
	io.WriteString(u2, "\x00\x04Ping")
	rvAccept(t, um.AMP()).Close()
	rvWait(t, um, "unix released", func(st Stats) bool { return rvZero(st) && st.EvictedPerSource == 1 })
}

// Held: Shutdown in the middle of a flood from several sources (silent
// connections, AMP, HTTP, garbage; evictions and refusals under small
// caps) returns, Serve returns, and once every client has gone the counts
// are zero: nothing uncounted twice, nothing left counted.
func TestReviewShutdownDuringFlood(t *testing.T) {
	l := rvListen(t)
	addr := l.Addr().String()
	hs := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }),
		ReadHeaderTimeout: 5 * time.Second}
	m := New(l, Config{Logger: rvQuiet(), HTTP: hs, SniffTimeout: 3 * time.Second, MinSniffTimeout: time.Second,
		MaxSniffingPerSource: 8, MaxSniffing: 20, MaxConns: 50, MaxConnsPerSource: 30})
	served := make(chan error, 1)
	go func() { served <- m.Serve() }()
	var servers sync.WaitGroup
	servers.Go(func() { // AMP: read the first box's start, then close
		for {
			c, err := m.AMP().Accept()
			if err != nil {
				return
			}
			servers.Go(func() {
				c.SetDeadline(time.Now().Add(5 * time.Second))
				io.ReadFull(c, make([]byte, 6))
				c.Close()
			})
		}
	})

	var clients sync.WaitGroup
	var dialed atomic.Int64
	for i := range 160 {
		clients.Go(func() {
			d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, byte(20+i%4))}, Timeout: 5 * time.Second}
			nc, err := d.Dial("tcp", addr)
			dialed.Add(1)
			if err != nil {
				return
			}
			defer nc.Close()
			nc.SetDeadline(time.Now().Add(5 * time.Second))
			switch i % 5 {
			case 1:
				io.WriteString(nc, "\x00\x04Ping")
			case 2:
				io.WriteString(nc, "GET / HTTP/1.0\r\n\r\n")
			case 3:
				io.WriteString(nc, strings.Repeat("\x05", 40))
			case 4:
				return // hang up at once
			}
			io.Copy(io.Discard, nc)
		})
	}
	deadline := time.Now().Add(rvBound)
	for dialed.Load() < 60 {
		require.False(t, time.Now().After(deadline), "flood never started")
		time.Sleep(time.Millisecond)
	}
	ctx, cancel := context.WithTimeout(context.Background(), rvBound)
	defer cancel()
	require.NoError(t, m.Shutdown(ctx))
	select {
	case err := <-served:
		require.ErrorIs(t, err, ErrServerClosed)
	case <-time.After(rvBound):
		t.Fatal("Serve did not return after Shutdown")
	}
	done := make(chan struct{})
	go func() { clients.Wait(); servers.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(rvBound):
		t.Fatal("clients or servers never finished")
	}
	st := m.Stats()
	t.Logf("%+v", st)
	rvWait(t, m, "all released after Shutdown", rvZero)
}

// Held: a connection that was given MinSniffTimeout under pressure keeps
// no clamp once handed out: its server's later read deadline is its own,
// even after the short sniffing deadline has passed.
func TestReviewHandedDeadlineNotClamped(t *testing.T) {
	l := rvListen(t)
	m := rvServe(t, l, Config{MaxSniffingPerSource: 2, SniffTimeout: rvBound, MinSniffTimeout: 300 * time.Millisecond})
	rvDial(t, 8, l.Addr().String()) // silent: the source is at half its cap
	rvWait(t, m, "first admitted", func(st Stats) bool { return st.Sniffing == 1 })
	c := rvDial(t, 8, l.Addr().String())
	_, err := c.Write([]byte("\x00\x04Ping"))
	require.NoError(t, err)
	hc := rvAccept(t, m.AMP())
	defer hc.Close()
	sc := hc.(*Conn).Conn.(*cmux.MuxConn).Conn.(*sniffConn)
	require.True(t, sc.shortened)
	require.EqualValues(t, 1, m.Stats().DeadlinesShortened)
	require.NoError(t, hc.SetReadDeadline(time.Now().Add(rvBound)))
	buf := make([]byte, 6)
	_, err = io.ReadFull(hc, buf) // replayed from cmux's buffer
	require.NoError(t, err)
	<-time.After(time.Until(sc.deadline) + 50*time.Millisecond) // the short deadline is past
	_, err = c.Write([]byte("more"))
	require.NoError(t, err)
	_, err = io.ReadFull(hc, buf[:4])
	require.NoError(t, err, "the server's own deadline was clamped to the sniffing one")
	require.Equal(t, "more", string(buf[:4]))
}

// rvFailingListener fails Accept with a temporary error until closed.
type rvFailingListener struct {
	closed chan struct{}
	once   sync.Once
}

type rvTempErr struct{}

func (rvTempErr) Error() string   { return "temporary" }
func (rvTempErr) Temporary() bool { return true }
func (rvTempErr) Timeout() bool   { return false }

func (f *rvFailingListener) Accept() (net.Conn, error) {
	select {
	case <-f.closed:
		return nil, net.ErrClosed
	default:
		return nil, rvTempErr{}
	}
}
func (f *rvFailingListener) Close() error   { f.once.Do(func() { close(f.closed) }); return nil }
func (f *rvFailingListener) Addr() net.Addr { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)} }

// Held: Close during the Accept backoff (at its 1 s cap) ends Serve at once,
// on the bubble's clock: it does not wait out the delay.
func TestReviewCloseDuringAcceptBackoff(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := New(&rvFailingListener{closed: make(chan struct{})}, Config{Logger: rvQuiet()})
		done := make(chan error, 1)
		go func() { done <- s.Serve() }()
		time.Sleep(5 * time.Second) // of the bubble: the delay is at 1 s
		synctest.Wait()
		start := time.Now()
		require.NoError(t, s.Close())
		err := <-done
		require.True(t, errors.Is(err, ErrServerClosed), "%v", err)
		require.Zero(t, time.Since(start), "Serve waited out the backoff")
	})
}
