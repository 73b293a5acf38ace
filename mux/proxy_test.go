package mux_test

import (
	"bufio"
	"errors"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/pires/go-proxyproto"
	"github.com/stretchr/testify/require"

	"github.com/ampmux/ampmux/mux"
)

// proxyMux is a mux on trustLoopback whose AMP and HTTP classes the test
// accepts itself.
type proxyMux struct {
	addr string
	m    *mux.Server
	amp  chan net.Conn
}

func startProxyMux(t *testing.T, cfg mux.Config) *proxyMux {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	if cfg.Logger == nil {
		cfg.Logger = quiet()
	}
	hs := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, r.RemoteAddr)
	})}
	cfg.HTTP = hs
	p := &proxyMux{addr: l.Addr().String(), m: mux.New(l, cfg), amp: make(chan net.Conn, 16)}
	served := make(chan error, 1)
	go func() { served <- p.m.Serve() }()
	accepted := make(chan struct{})
	go func() {
		defer close(accepted)
		for {
			c, err := p.m.AMP().Accept()
			if err != nil {
				return
			}
			p.amp <- c
		}
	}()
	t.Cleanup(func() {
		p.m.Close()
		<-served
		<-accepted
		close(p.amp)
		for c := range p.amp {
			c.Close()
		}
	})
	return p
}

var (
	trustLoopback = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}
	elsewhere     = []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}
	clientAddr    = &net.TCPAddr{IP: net.ParseIP("203.0.113.7"), Port: 4242}
	frontAddr     = &net.TCPAddr{IP: net.ParseIP("198.51.100.1"), Port: 443}
	ampBytes      = "\x00\x04_ask\x00\x011\x00\x00" // a box's start, then more
)

func header(t *testing.T, version byte, src net.Addr) []byte {
	t.Helper()
	b, err := proxyproto.HeaderProxyFromAddrs(version, src, frontAddr).Format()
	require.NoError(t, err)
	return b
}

// dialSend connects, writes b, and returns the connection.
func dialSend(t *testing.T, addr string, b []byte) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	_, err = c.Write(b)
	require.NoError(t, err)
	return c
}

// From a trusted source, v1 and v2 headers give the AMP connection its
// client's address, and the bytes after the header arrive intact.
func TestProxyHeaderTrusted(t *testing.T) {
	p := startProxyMux(t, mux.Config{ProxyFrom: trustLoopback})
	for _, v := range []byte{1, 2} {
		dialSend(t, p.addr, append(header(t, v, clientAddr), ampBytes...))
		c := recv(t, p.amp)
		require.Equal(t, clientAddr.String(), c.RemoteAddr().String(), "v%d", v)
		require.Equal(t, frontAddr.String(), c.LocalAddr().String(), "v%d", v)
		got := make([]byte, len(ampBytes))
		_, err := io.ReadFull(c, got)
		require.NoError(t, err)
		require.Equal(t, ampBytes, string(got))
		c.Close()
	}
	require.Equal(t, int64(2), p.m.Stats().ProxyHeaders)

	// Without a header a trusted source keeps its own address.
	raw := dialSend(t, p.addr, []byte(ampBytes))
	c := recv(t, p.amp)
	require.Equal(t, raw.LocalAddr().String(), c.RemoteAddr().String())
	c.Close()

	// HTTP too, and a real peer's v1 header (curl --haproxy-protocol
	// sends its own addresses).
	resp := httpOver(t, p.addr, header(t, 2, clientAddr))
	require.Equal(t, clientAddr.String(), resp)
	out, err := curl("--haproxy-protocol", "http://"+p.addr+"/")
	require.NoError(t, err)
	require.True(t, strings.HasPrefix(out, "127.0.0.1:"), "curl --haproxy-protocol: %q", out)
}

// httpOver sends pre, then a GET, and returns the body.
func httpOver(t *testing.T, addr string, pre []byte) string {
	t.Helper()
	c := dialSend(t, addr, append(pre, "GET / HTTP/1.0\r\nHost: x\r\n\r\n"...))
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return string(b)
}

// refusedRead reports whether c was closed without a byte.
func refusedRead(c net.Conn) bool {
	n, err := c.Read(make([]byte, 1))
	return n == 0 && (errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) || err != nil)
}

// From an untrusted source a header is refused, and the same source's
// plain AMP and HTTP still work; a second header, a malformed one, and
// one from a trusted source after a first are refused too.
func TestProxyHeaderRefused(t *testing.T) {
	p := startProxyMux(t, mux.Config{ProxyFrom: elsewhere})
	for _, v := range []byte{1, 2} {
		c := dialSend(t, p.addr, append(header(t, v, clientAddr), ampBytes...))
		require.True(t, refusedRead(c), "v%d header from an untrusted source", v)
	}
	require.Equal(t, int64(2), p.m.Stats().ProxyRefused)
	require.Equal(t, int64(0), p.m.Stats().ProxyHeaders)
	raw := dialSend(t, p.addr, []byte(ampBytes))
	c := recv(t, p.amp)
	require.Equal(t, raw.LocalAddr().String(), c.RemoteAddr().String())
	c.Close()
	require.True(t, strings.HasPrefix(httpOver(t, p.addr, nil), "127.0.0.1:"))

	// A header inside an AMP stream is the stream's business.
	inner := append([]byte(ampBytes), header(t, 1, clientAddr)...)
	dialSend(t, p.addr, inner)
	c = recv(t, p.amp)
	got := make([]byte, len(inner))
	_, err := io.ReadFull(c, got)
	require.NoError(t, err)
	require.Equal(t, inner, got)
	c.Close()

	q := startProxyMux(t, mux.Config{ProxyFrom: trustLoopback})
	cases := map[string][]byte{
		"second header": append(header(t, 2, clientAddr), header(t, 1, clientAddr)...),
		"malformed v1":  []byte("PROXY TCP4 not-an-address 1.2.3.4 1 2\r\n" + ampBytes),
		"truncated v2":  append(header(t, 2, clientAddr)[:14], 0xff, 0xff),
	}
	for name, b := range cases {
		c := dialSend(t, q.addr, b)
		c.(*net.TCPConn).CloseWrite() // the truncated one ends there
		require.True(t, refusedRead(c), name)
	}
	require.Equal(t, int64(3), q.m.Stats().ProxyRefused)
}

// The per-source caps key on the header's client, not the balancer.
func TestProxyHeaderLimitsKeyOnClient(t *testing.T) {
	p := startProxyMux(t, mux.Config{ProxyFrom: trustLoopback, MaxConnsPerSource: 1})
	a := dialSend(t, p.addr, append(header(t, 2, clientAddr), ampBytes...))
	ca := recv(t, p.amp)
	defer ca.Close()
	// The same client again, through the same balancer: over its cap.
	b := dialSend(t, p.addr, append(header(t, 2, clientAddr), ampBytes...))
	require.True(t, refusedRead(b), "a second connection of a client at MaxConnsPerSource 1")
	// Another client through the same balancer: fine.
	other := &net.TCPAddr{IP: net.ParseIP("203.0.113.8"), Port: 1}
	dialSend(t, p.addr, append(header(t, 2, other), ampBytes...))
	cb := recv(t, p.amp)
	require.Equal(t, other.String(), cb.RemoteAddr().String())
	cb.Close()
	require.Equal(t, int64(1), p.m.Stats().RefusedPerSource)
	_ = a
}

// OnSniffed reports each matched connection's class and sniffing time.
func TestOnSniffed(t *testing.T) {
	type got struct {
		c    mux.Class
		took time.Duration
	}
	ch := make(chan got, 4)
	p := startProxyMux(t, mux.Config{OnSniffed: func(c mux.Class, took time.Duration) { ch <- got{c, took} }})
	dialSend(t, p.addr, []byte(ampBytes))
	g := recv(t, ch)
	require.Equal(t, mux.ClassAMP, g.c)
	require.Positive(t, g.took)
	recv(t, p.amp).Close()
	httpOver(t, p.addr, nil)
	require.Equal(t, mux.ClassHTTP1, recv(t, ch).c)
}
