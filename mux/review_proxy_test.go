package mux

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/netip"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/pires/go-proxyproto"
	"github.com/stretchr/testify/require"
)

var (
	rpLoop   = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}
	rpClient = &net.TCPAddr{IP: net.ParseIP("203.0.113.7"), Port: 4242}
	rpFront  = &net.TCPAddr{IP: net.ParseIP("198.51.100.1"), Port: 443}
	rpAMP    = "\x00\x04_ask\x00\x011\x00\x00"
)

func rpHeader(t testing.TB, v byte, src net.Addr) []byte {
	t.Helper()
	b, err := proxyproto.HeaderProxyFromAddrs(v, src, rpFront).Format()
	require.NoError(t, err)
	return b
}

// rpAcceptOrEOF waits for either l to hand out a connection (returned) or
// the client c to see its connection closed (nil).
func rpAcceptOrEOF(t *testing.T, l net.Listener, c net.Conn) net.Conn {
	t.Helper()
	acc := make(chan net.Conn, 1)
	go func() {
		nc, err := l.Accept()
		if err == nil {
			acc <- nc
		}
	}()
	eof := make(chan error, 1)
	go func() {
		c.SetReadDeadline(time.Now().Add(rvBound))
		_, err := io.Copy(io.Discard, c)
		eof <- err
	}()
	select {
	case nc := <-acc:
		t.Cleanup(func() { nc.Close() })
		return nc
	case err := <-eof:
		require.NoError(t, err, "client read")
		return nil
	}
}

// A connection whose PROXY header is refused (malformed, or its client over
// MaxConnsPerSource) must be closed. With Config.Other, every matcher sees
// the header error, matchAny does not read, and the refused connection is
// handed to the Other server instead, its client past its cap.
func TestReviewProxyRefusedGoesToOther(t *testing.T) {
	l := rvListen(t)
	m := rvServe(t, l, Config{ProxyFrom: rpLoop, Other: true, MaxConnsPerSource: 1})
	addr := l.Addr().String()

	t.Run("malformed", func(t *testing.T) {
		c := rvDial(t, 1, addr)
		_, err := c.Write([]byte("PROXY TCP4 not-an-address 1.2.3.4 1 2\r\n" + rpAMP))
		require.NoError(t, err)
		if nc := rpAcceptOrEOF(t, m.Other(), c); nc != nil {
			_, rerr := nc.Read(make([]byte, 1))
			t.Errorf("a malformed header's connection was handed to Other (remote %v, its Read: %v); stats %+v",
				nc.RemoteAddr(), rerr, m.Stats())
		}
	})
	t.Run("over MaxConnsPerSource", func(t *testing.T) {
		a := rvDial(t, 1, addr)
		_, err := a.Write(append(rpHeader(t, 2, rpClient), rpAMP...))
		require.NoError(t, err)
		ca := rvAccept(t, m.AMP())
		defer ca.Close()
		b := rvDial(t, 1, addr)
		_, err = b.Write(append(rpHeader(t, 2, rpClient), rpAMP...))
		require.NoError(t, err)
		if nc := rpAcceptOrEOF(t, m.Other(), b); nc != nil {
			t.Errorf("a client at MaxConnsPerSource 1 got a second connection, to Other (remote %v); stats %+v",
				nc.RemoteAddr(), m.Stats())
		}
	})
}

// matchProxyHeader reads 12 bytes from anything starting with 'P' that is
// not "PROXY": a client of the Other class whose first flight is short
// ("PING\r\n", a Redis inline command; "PASS x\r\n") waits out the whole
// SniffTimeout before matchAny gets it. Before the PROXY change matchHTTP1
// refused it at the '\r' and Other got it at once.
func TestReviewProxyMatcherStallsShortP(t *testing.T) {
	for _, trusted := range []bool{false, true} {
		name := "untrusted"
		// An hour's SniffTimeout: a stall would hold the test to its bound.
		cfg := Config{Other: true, SniffTimeout: time.Hour}
		if trusted {
			name = "trusted, no header"
			cfg.ProxyFrom = rpLoop
		}
		t.Run(name, func(t *testing.T) {
			l := rvListen(t)
			m := rvServe(t, l, cfg)
			c := rvDial(t, 1, l.Addr().String())
			_, err := c.Write([]byte("PING\r\n"))
			require.NoError(t, err)
			nc := rvAccept(t, m.Other())
			defer nc.Close()
			nc.SetReadDeadline(time.Now().Add(rvBound))
			got := make([]byte, 6)
			_, rerr := io.ReadFull(nc, got)
			if rerr != nil || string(got) != "PING\r\n" {
				t.Errorf("its bytes: %q, %v", got, rerr)
			}
		})
	}
}

// A trusted source's connection without a header whose client waits for
// the server to speak (Config.OnTimeout routes it): the header read times
// out, the timeout is kept in headerErr, and every Read of the server that
// gets it fails for ever, also after the client has spoken.
func TestReviewProxyTimeoutIsSticky(t *testing.T) {
	for _, trusted := range []bool{false, true} {
		name := "untrusted"
		amp := ClassAMP
		cfg := Config{OnTimeout: &amp, SniffTimeout: 200 * time.Millisecond, MinSniffTimeout: 200 * time.Millisecond}
		if trusted {
			name = "trusted"
			cfg.ProxyFrom = rpLoop
		}
		t.Run(name, func(t *testing.T) {
			l := rvListen(t)
			m := rvServe(t, l, cfg)
			c := rvDial(t, 1, l.Addr().String())
			nc := rvAccept(t, m.AMP()) // after the sniffing deadline
			defer nc.Close()
			_, err := c.Write([]byte("hello"))
			require.NoError(t, err)
			nc.SetReadDeadline(time.Now().Add(rvBound))
			got := make([]byte, 5)
			_, err = io.ReadFull(nc, got)
			require.NoError(t, err, "the server's read after the client spoke")
			require.Equal(t, "hello", string(got))
		})
	}
}

// A balancer's connection without a header (or a LOCAL one, a health
// check) keeps its own address and no per-source cap (review finding:
// the docs said "until the header is read"; they now say so).
func TestReviewProxyHeaderlessBalancerUncapped(t *testing.T) {
	l := rvListen(t)
	m := rvServe(t, l, Config{ProxyFrom: rpLoop, MaxConnsPerSource: 1})
	addr := l.Addr().String()
	a := rvDial(t, 1, addr)
	_, err := a.Write([]byte(rpAMP))
	require.NoError(t, err)
	ca := rvAccept(t, m.AMP())
	defer ca.Close()
	b := rvDial(t, 1, addr)
	_, err = b.Write([]byte(rpAMP))
	require.NoError(t, err)
	// As documented (Config.ProxyFrom): a balancer's connection that
	// names no client is held to the global caps only.
	if nc := rpAcceptOrEOF(t, m.AMP(), b); nc == nil {
		t.Errorf("a balancer's second header-less connection was refused at MaxConnsPerSource 1; stats %+v", m.Stats())
	}
}

// Hostile and unusual headers from a trusted source: no panic, the bytes
// after the header arrive intact (also past the 512-byte bufio), and the
// addresses are right.
func TestReviewProxyHeaderZoo(t *testing.T) {
	l := rvListen(t)
	m := rvServe(t, l, Config{ProxyFrom: rpLoop})
	addr := l.Addr().String()
	accepted := make(chan net.Conn, 64)
	go func() {
		for {
			nc, err := m.AMP().Accept()
			if err != nil {
				return
			}
			accepted <- nc
		}
	}()
	big := rpAMP + strings.Repeat("x", 3000)
	v2tlv := func(src, dst net.Addr, cmd proxyproto.ProtocolVersionAndCommand, tp proxyproto.AddressFamilyAndProtocol, tlvLen int) []byte {
		h := &proxyproto.Header{Version: 2, Command: cmd, TransportProtocol: tp, SourceAddr: src, DestinationAddr: dst}
		if tlvLen > 0 {
			require.NoError(t, h.SetTLVs([]proxyproto.TLV{{Type: proxyproto.PP2_TYPE_NOOP, Value: bytes.Repeat([]byte{7}, tlvLen)}}))
		}
		b, err := h.Format()
		require.NoError(t, err)
		return b
	}
	udp := &net.UDPAddr{IP: net.ParseIP("203.0.113.9"), Port: 53}
	unix := &net.UnixAddr{Net: "unix", Name: "/tmp/x"}
	cases := []struct {
		name   string
		pre    []byte
		remote string // "" : the socket's
		split  int    // write the first split bytes, then the rest
	}{
		{"v1", rpHeader(t, 1, rpClient), rpClient.String(), 0},
		{"v2", rpHeader(t, 2, rpClient), rpClient.String(), 0},
		{"v2 split", rpHeader(t, 2, rpClient), rpClient.String(), 7},
		{"v2 split after sig", rpHeader(t, 2, rpClient), rpClient.String(), 14},
		{"v2 TLV 1000", v2tlv(rpClient, rpFront, proxyproto.PROXY, proxyproto.TCPv4, 1000), rpClient.String(), 0},
		{"v2 TLV 4000", v2tlv(rpClient, rpFront, proxyproto.PROXY, proxyproto.TCPv4, 4000), rpClient.String(), 0},
		{"v2 LOCAL", v2tlv(nil, nil, proxyproto.LOCAL, proxyproto.UNSPEC, 0), "", 0},
		{"v2 LOCAL tcp", v2tlv(rpClient, rpFront, proxyproto.LOCAL, proxyproto.TCPv4, 0), "", 0},
		{"v2 UDP", v2tlv(udp, udp, proxyproto.PROXY, proxyproto.UDPv4, 0), "", 0},
		{"v2 unix", v2tlv(unix, unix, proxyproto.PROXY, proxyproto.UnixStream, 0), "", 0},
		{"v1 unknown", []byte("PROXY UNKNOWN\r\n"), "", 0},
		{"v1 tcp6 mapped", []byte("PROXY TCP6 ::ffff:203.0.113.7 ::1 5 6\r\n"), "203.0.113.7:5", 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := rvDial(t, 1, addr)
			all := append(append([]byte{}, tc.pre...), big...)
			if tc.split > 0 {
				_, err := c.Write(all[:tc.split])
				require.NoError(t, err)
				all = all[tc.split:]
			}
			go c.Write(all)
			var nc net.Conn
			select {
			case nc = <-accepted:
			case <-time.After(rvBound):
				t.Fatalf("not accepted; stats %+v", m.Stats())
			}
			defer nc.Close()
			want := tc.remote
			if want == "" {
				want = c.LocalAddr().String()
			}
			if a := nc.RemoteAddr().String(); a != want && !(strings.HasPrefix(a, "[::ffff:") && tc.remote != "") {
				t.Errorf("RemoteAddr %s, want %s", a, want)
			}
			nc.SetReadDeadline(time.Now().Add(rvBound))
			got := make([]byte, len(big))
			_, err := io.ReadFull(nc, got)
			require.NoError(t, err)
			require.True(t, string(got) == big, "bytes after the header differ")
		})
	}
	st := m.Stats()
	t.Logf("stats %+v", st)
	require.Zero(t, st.ProxyRefused)
}

// Many trusted connections at once under tight caps (rekey evictions,
// admit evictions, refusals), closed by clients, by servers, by Shutdown;
// RemoteAddr read by the warn logs meanwhile. Under -race: no race, and
// the table ends empty, no goroutine left.
func TestReviewProxyStress(t *testing.T) {
	l := rvListen(t)
	log := slog.New(slog.NewTextHandler(io.Discard, &slog.HandlerOptions{Level: slog.LevelDebug}))
	m := New(l, Config{ProxyFrom: rpLoop, MaxSniffingPerSource: 3, MaxSniffing: 40, MaxConns: 60, MaxConnsPerSource: 10,
		SniffTimeout: 2 * time.Second, Logger: log, Other: true})
	served := make(chan error, 1)
	go func() { served <- m.Serve() }()
	var srv sync.WaitGroup
	for _, ln := range []net.Listener{m.AMP(), m.Other(), m.HTTP()} {
		srv.Add(1)
		go func() {
			defer srv.Done()
			for {
				nc, err := ln.Accept()
				if err != nil {
					return
				}
				go func() {
					_ = nc.RemoteAddr().String()
					_ = nc.LocalAddr().String()
					nc.SetReadDeadline(time.Now().Add(3 * time.Second))
					io.Copy(io.Discard, nc)
					nc.Close()
				}()
			}
		}()
	}
	clients := []*net.TCPAddr{rpClient, {IP: net.ParseIP("203.0.113.8"), Port: 1}, {IP: net.ParseIP("2001:db8::1"), Port: 2}}
	addr := l.Addr().String()
	var wg sync.WaitGroup
	for i := range 300 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(i), 1))
			d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, byte(1+r.IntN(2)))}, Timeout: 5 * time.Second}
			c, err := d.Dial("tcp", addr)
			if err != nil {
				return
			}
			defer c.Close()
			src := clients[r.IntN(len(clients))]
			switch r.IntN(6) {
			case 0:
				c.Write(append(rpHeader(t, 2, src), rpAMP...))
			case 1:
				c.Write(rpHeader(t, 1, src)) // then silent
			case 2:
				c.Write([]byte("PROXY TCP4 x\r\n"))
			case 3:
				c.Write(append(rpHeader(t, 2, src), rpHeader(t, 1, src)...))
			case 4:
				c.Write(append(rpHeader(t, 1, src), "GET / HTTP/1.0\r\n\r\n"...))
			case 5:
				c.Write(rpHeader(t, 2, src)[:10])
			}
			if r.IntN(2) == 0 {
				c.SetReadDeadline(time.Now().Add(time.Duration(r.IntN(300)) * time.Millisecond))
				io.Copy(io.Discard, c)
			}
		}()
	}
	wg.Wait()
	// Everything the clients opened is closed: the table must drain.
	rvWait(t, m, "table drained", func(st Stats) bool { return st.Open == 0 && st.Sources == 0 && st.Sniffing == 0 && st.Waiting == 0 })
	st := m.Stats()
	t.Logf("stats %+v", st)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	m.Shutdown(ctx)
	require.ErrorIs(t, <-served, ErrServerClosed)
	srv.Wait()
}

// Shutdown while trusted connections are mid-header (a v2 header whose
// TLVs never finish): Shutdown returns, the table is empty.
func TestReviewProxyShutdownMidHeader(t *testing.T) {
	l := rvListen(t)
	m := New(l, Config{ProxyFrom: rpLoop, SniffTimeout: time.Minute, Logger: rvQuiet()})
	served := make(chan error, 1)
	go func() { served <- m.Serve() }()
	h := &proxyproto.Header{Version: 2, Command: proxyproto.PROXY, TransportProtocol: proxyproto.TCPv4, SourceAddr: rpClient, DestinationAddr: rpFront}
	require.NoError(t, h.SetTLVs([]proxyproto.TLV{{Type: proxyproto.PP2_TYPE_NOOP, Value: make([]byte, 3000)}}))
	b, err := h.Format()
	require.NoError(t, err)
	var cs []net.Conn
	for range 20 {
		c := rvDial(t, 1, l.Addr().String())
		c.Write(b[:1000])
		cs = append(cs, c)
	}
	rvWait(t, m, "all admitted", func(st Stats) bool { return st.Sniffing == 20 })
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	require.NoError(t, m.Shutdown(ctx))
	require.True(t, errors.Is(<-served, ErrServerClosed))
	require.True(t, rvZero(m.Stats()), "%+v", m.Stats())
	for _, c := range cs {
		// Closed by the server: an EOF, or a reset, since the server closed
		// with the rest of the client's header unread.
		c.SetReadDeadline(time.Now().Add(rvBound))
		_, err := io.Copy(io.Discard, c)
		if err != nil && !errors.Is(err, syscall.ECONNRESET) {
			t.Fatalf("mid-header: %v, want the server's close", err)
		}
	}
}
