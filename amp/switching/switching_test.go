package switching_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/ampmux/ampmux/amp"
	"github.com/ampmux/ampmux/amp/box"
	"github.com/ampmux/ampmux/amp/conn"
	"github.com/ampmux/ampmux/amp/switching"
	"github.com/ampmux/ampmux/internal/demo"
	"github.com/ampmux/ampmux/internal/pki"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type env struct {
	addr      string
	serverTLS *tls.Config
	ca        *pki.CA
	client    *tls.Config // certificate "alice"
	intruder  *tls.Config // certificate "mallory", same CA
	registry  *switching.Registry
	echoConns sync.WaitGroup
	gate      chan struct{} // the "gated" protocol's Prepare waits for it
	gated     chan struct{} // a "gated" Prepare has begun (buffered)
	mux       *amp.Mux
}

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func echo(c net.Conn, _ switching.Info) {
	defer c.Close()
	io.Copy(c, c)
}

// newEnv serves AMP with StartTLS and a registry holding "echo" (TLS, only
// for alice), "plain" (plaintext allowed) and "down" (Prepare fails).
func newEnv(t *testing.T) *env { return newEnvTB(t) }

func newEnvTB(t testing.TB) *env {
	ca, err := pki.NewCA("test CA")
	require.NoError(t, err)
	srvCert, err := ca.Server("localhost", "127.0.0.1")
	require.NoError(t, err)
	alice, err := ca.Client("alice")
	require.NoError(t, err)
	mallory, err := ca.Client("mallory")
	require.NoError(t, err)
	e := &env{ca: ca, registry: switching.NewRegistry()}
	e.client = &tls.Config{RootCAs: ca.Pool(), Certificates: []tls.Certificate{alice.TLS()}}
	e.intruder = &tls.Config{RootCAs: ca.Pool(), Certificates: []tls.Certificate{mallory.TLS()}}
	track := func(c net.Conn, info switching.Info) {
		e.echoConns.Add(1)
		defer e.echoConns.Done()
		echo(c, info)
	}
	e.registry.Register("echo", track, switching.Policy{AllowedNames: []string{"alice"}})
	e.registry.Register("plain", track, switching.Policy{AllowPlaintext: true})
	e.registry.Register("down", track, switching.Policy{AllowPlaintext: true,
		Prepare: func(context.Context, switching.Info) (any, error) { return nil, errors.New("backend refused") }})
	e.gate, e.gated = make(chan struct{}), make(chan struct{}, 64)
	e.registry.Register("gated", track, switching.Policy{AllowPlaintext: true,
		Prepare: func(ctx context.Context, _ switching.Info) (any, error) {
			select {
			case e.gated <- struct{}{}:
			default:
			}
			select {
			case <-e.gate:
				return nil, nil
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}})
	m := amp.NewMux()
	demo.Register(m)
	e.registry.Install(m)
	e.mux = m
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	e.serverTLS = &tls.Config{
		Certificates: []tls.Certificate{srvCert.TLS()},
		ClientCAs:    ca.Pool(),
		ClientAuth:   tls.VerifyClientCertIfGiven,
	}
	srv := &conn.Server{Config: conn.Config{Handler: m, Logger: quiet(), TLS: e.serverTLS}}
	go srv.Serve(l)
	t.Cleanup(func() {
		srv.Close()
		e.echoConns.Wait()
	})
	e.addr = l.Addr().String()
	return e
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func roundTrip(t *testing.T, c net.Conn, n int) {
	t.Helper()
	payload := make([]byte, n)
	rand.Read(payload)
	errc := make(chan error, 1)
	go func() {
		for off := 0; off < len(payload); off += 100_000 {
			if _, err := c.Write(payload[off:min(off+100_000, len(payload))]); err != nil {
				errc <- err
				return
			}
		}
		errc <- nil
	}()
	got := make([]byte, n)
	_, err := io.ReadFull(c, got)
	require.NoError(t, err)
	require.NoError(t, <-errc)
	require.True(t, bytes.Equal(payload, got), "echoed bytes differ")
}

func TestDialEchoOverTLS(t *testing.T) {
	e := newEnv(t)
	c, err := switching.Dial(ctxT(t), e.addr, "echo", e.client)
	require.NoError(t, err)
	defer c.Close()
	info, ok := switching.InfoOf(c)
	require.True(t, ok)
	require.NotNil(t, info.TLS)
	require.Equal(t, "echo", info.Protocol)
	roundTrip(t, c, 1<<20+12345)
}

func TestDialRefusals(t *testing.T) {
	e := newEnv(t)
	ctx := ctxT(t)
	tests := []struct {
		name string
		dial func() (net.Conn, error)
		step switching.Step
		is   error
		code string
	}{
		{"unknown protocol", func() (net.Conn, error) { return switching.Dial(ctx, e.addr, "nope", e.client) },
			switching.StepSwitch, switching.ErrUnknownProtocol, switching.CodeUnknownProtocol},
		{"TLS required", func() (net.Conn, error) { return switching.DialInsecurePlaintext(ctx, e.addr, "echo") },
			switching.StepSwitch, switching.ErrTLSRequired, switching.CodeTLSRequired},
		{"name not allowed", func() (net.Conn, error) { return switching.Dial(ctx, e.addr, "echo", e.intruder) },
			switching.StepSwitch, switching.ErrForbidden, switching.CodeForbidden},
		{"no client certificate", func() (net.Conn, error) {
			return switching.Dial(ctx, e.addr, "echo", &tls.Config{RootCAs: e.ca.Pool()})
		}, switching.StepSwitch, switching.ErrForbidden, switching.CodeForbidden},
		{"backend down", func() (net.Conn, error) { return switching.DialInsecurePlaintext(ctx, e.addr, "down") },
			switching.StepSwitch, switching.ErrUnavailable, switching.CodeUnavailable},
		{"server not trusted", func() (net.Conn, error) { return switching.Dial(ctx, e.addr, "echo", nil) },
			switching.StepStartTLS, nil, ""},
		{"nobody listening", func() (net.Conn, error) { return switching.Dial(ctx, "127.0.0.1:1", "echo", e.client) },
			switching.StepConnect, nil, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := tt.dial()
			require.Nil(t, c)
			var de *switching.DialError
			require.ErrorAs(t, err, &de)
			require.Equal(t, tt.step, de.Step, "%v", err)
			if tt.is != nil {
				require.ErrorIs(t, err, tt.is)
				var re *amp.RemoteError
				require.ErrorAs(t, err, &re)
				require.Equal(t, tt.code, re.Code)
			}
		})
	}
}

func TestListProtocolsAndRefusedSwitchKeepsAMP(t *testing.T) {
	e := newEnv(t)
	ctx := ctxT(t)
	c, err := conn.Dial(ctx, "tcp", e.addr, &conn.Config{Logger: quiet()})
	require.NoError(t, err)
	defer c.Close()
	r, err := switching.ListProtocols.Call(ctx, c, struct{}{})
	require.NoError(t, err)
	require.Equal(t, []string{"down", "gated", "plain"}, r.Protocols, "before TLS")

	var args box.Box
	args.SetString("protocol", "echo")
	_, err = c.Switch(ctx, switching.CommandProtocolSwitch, &args)
	require.ErrorIs(t, switching.ProtocolSwitch.MapError(err), switching.ErrTLSRequired)
	sum, err := demo.Sum.Call(ctx, c, demo.SumArgs{A: big.NewInt(1), B: big.NewInt(2)})
	require.NoError(t, err, "a refused switch leaves AMP working")
	require.Equal(t, int64(3), sum.Total.Int64())

	cfg := e.client.Clone()
	cfg.ServerName = "localhost"
	require.NoError(t, c.StartTLS(ctx, cfg))
	r, err = switching.ListProtocols.Call(ctx, c, struct{}{})
	require.NoError(t, err)
	require.Equal(t, []string{"down", "echo", "gated", "plain"}, r.Protocols)
}

// While a switch is pending nothing else may be sent, and calls still
// waiting when it succeeds fail with ErrSwitched.
func TestSwitchLocksAndFailsPendingCalls(t *testing.T) {
	e := newEnv(t)
	ctx := ctxT(t)
	c, err := conn.Dial(ctx, "tcp", e.addr, &conn.Config{Logger: quiet()})
	require.NoError(t, err)
	defer c.Close()
	slow := make(chan error, 1)
	var slowArgs box.Box
	require.NoError(t, demo.Slow.EncodeArgs(&slowArgs, &demo.SlowArgs{Delay: 2}, nil))
	// Go returns once the call is pending.
	require.NoError(t, c.Go(ctx, "Slow", &slowArgs, func(_ context.Context, _ *box.Box, err error) { slow <- err }))
	var args box.Box
	args.SetString("protocol", "gated")
	type result struct {
		c   net.Conn
		err error
	}
	done := make(chan result, 1)
	go func() {
		inner, err := c.Switch(ctx, switching.CommandProtocolSwitch, &args)
		done <- result{inner, err}
	}()
	<-e.gated // the server has the request: it was queued, so calls are refused
	_, err = demo.Sum.Call(ctx, c, demo.SumArgs{A: big.NewInt(1), B: big.NewInt(1)})
	require.ErrorIs(t, err, conn.ErrSwitchPending, "calls refused while the switch is pending")
	close(e.gate)
	res := <-done
	require.NoError(t, res.err)
	inner := res.c
	defer inner.Close()
	require.ErrorIs(t, <-slow, conn.ErrSwitched)
	_, err = demo.Sum.Call(ctx, c, demo.SumArgs{A: big.NewInt(1), B: big.NewInt(1)})
	require.ErrorIs(t, err, conn.ErrConnectionLost)
	roundTrip(t, inner, 1000)
	<-c.Done()
	require.NoError(t, c.Err())
}

// Inner-protocol bytes written right behind the switch request, in the
// same segment or split anywhere around the boundary, arrive exactly once.
func TestSwitchBoundaryPlaintext(t *testing.T) {
	e := newEnv(t)
	req, err := box.Append(nil, box.FromMap(map[string]string{"_command": "ProtocolSwitch", "_ask": "1", "protocol": "plain"}))
	require.NoError(t, err)
	answer, err := box.Append(nil, box.FromMap(map[string]string{"_answer": "1"}))
	require.NoError(t, err)
	inner := []byte("inner protocol bytes, sent eagerly \x00\x01\x02")
	stream := append(append([]byte{}, req...), inner...)
	for cut := len(req) - 6; cut <= len(req)+6; cut++ {
		// Over net.Pipe a Write returns only once the server has read
		// it all: the cut is where its reads split the stream.
		nc, sc := net.Pipe()
		srv := conn.New(sc, &conn.Config{Handler: e.mux, Logger: quiet()})
		got := make([]byte, len(answer)+len(inner))
		read := make(chan error, 1)
		go func() { _, err := io.ReadFull(nc, got); read <- err }()
		_, err = nc.Write(stream[:cut])
		require.NoError(t, err)
		_, err = nc.Write(stream[cut:])
		require.NoError(t, err)
		require.NoError(t, <-read, "cut %d", cut)
		require.Equal(t, string(answer), string(got[:len(answer)]), "cut %d", cut)
		require.Equal(t, string(inner), string(got[len(answer):]), "cut %d", cut)
		nc.Close() // the echo sees EOF and ends
		srv.Close()
	}
}

// The same inside TLS: the request and inner bytes in one TLS record, or
// in two records split around the boundary.
func TestSwitchBoundaryTLS(t *testing.T) {
	e := newEnv(t)
	startTLS, _ := box.Append(nil, box.FromMap(map[string]string{"_command": "StartTLS", "_ask": "1"}))
	tlsAnswer, _ := box.Append(nil, box.FromMap(map[string]string{"_answer": "1"}))
	req, _ := box.Append(nil, box.FromMap(map[string]string{"_command": "ProtocolSwitch", "_ask": "2", "protocol": "echo"}))
	answer, _ := box.Append(nil, box.FromMap(map[string]string{"_answer": "2"}))
	inner := bytes.Repeat([]byte("echo me "), 50)
	stream := append(append([]byte{}, req...), inner...)
	for _, cut := range []int{len(stream), len(req) - 3, len(req), len(req) + 3} {
		nc, err := net.Dial("tcp", e.addr)
		require.NoError(t, err)
		nc.SetDeadline(time.Now().Add(5 * time.Second))
		_, err = nc.Write(startTLS)
		require.NoError(t, err)
		got := make([]byte, len(tlsAnswer))
		_, err = io.ReadFull(nc, got)
		require.NoError(t, err)
		require.Equal(t, tlsAnswer, got)
		cfg := e.client.Clone()
		cfg.ServerName = "localhost"
		tc := tls.Client(nc, cfg)
		require.NoError(t, tc.Handshake())
		_, err = tc.Write(stream[:cut])
		require.NoError(t, err)
		if cut < len(stream) {
			_, err = tc.Write(stream[cut:])
			require.NoError(t, err)
		}
		got = make([]byte, len(answer)+len(inner))
		_, err = io.ReadFull(tc, got)
		require.NoError(t, err, "cut %d", cut)
		require.Equal(t, string(answer), string(got[:len(answer)]))
		require.Equal(t, string(inner), string(got[len(answer):]))
		tc.Close()
	}
}

func TestHTTPServerOverSwitchedListener(t *testing.T) {
	e := newEnv(t)
	l := e.registry.Listen("http", switching.Policy{AllowedNames: []string{"alice"}}, nil)
	hs := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			io.WriteString(w, "hello over "+r.Proto+" from "+strings.Repeat("!", 3))
		}),
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			info, _ := switching.InfoOf(c)
			return context.WithValue(ctx, infoKey{}, info)
		},
	}
	go hs.Serve(l)
	defer hs.Close()
	client := &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return switching.Dial(ctx, e.addr, "http", e.client)
		},
	}}
	defer client.CloseIdleConnections()
	for range 3 {
		resp, err := client.Get("http://inner/")
		require.NoError(t, err)
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		require.NoError(t, err)
		require.Equal(t, 200, resp.StatusCode)
		require.Equal(t, "hello over HTTP/1.1 from !!!", string(body))
	}
	require.NoError(t, l.Close())
	_, err := switching.Dial(ctxT(t), e.addr, "http", e.client)
	require.ErrorIs(t, err, switching.ErrUnknownProtocol, "closed listener's protocol is gone")
}

type infoKey struct{}

// errUnknownAuthority stands for a *conn.TLSError wrapping an
// x509.UnknownAuthorityError in test tables.
var errUnknownAuthority = errors.New("test: TLS handshake: unknown authority")

// Client over a connection dialled elsewhere: nil means the system roots
// there too (never plaintext), and with no ServerName it says so instead
// of verifying the socket's address.
func TestClientOverExistingConn(t *testing.T) {
	e := newEnv(t)
	named := e.client.Clone()
	named.ServerName = "localhost"
	systemRoots := &tls.Config{ServerName: "localhost"}
	tests := []struct {
		name   string
		client func(context.Context, net.Conn) (net.Conn, error)
		proto  string
		step   switching.Step // "" means it works
		is     error
		tls    bool
	}{
		{"server name given", func(ctx context.Context, nc net.Conn) (net.Conn, error) {
			return switching.Client(ctx, nc, "echo", named)
		}, "echo", "", nil, true},
		{"nil config has no server name", func(ctx context.Context, nc net.Conn) (net.Conn, error) {
			return switching.Client(ctx, nc, "plain", nil)
		}, "plain", switching.StepStartTLS, conn.ErrNoServerName, false},
		{"config without server name", func(ctx context.Context, nc net.Conn) (net.Conn, error) {
			return switching.Client(ctx, nc, "echo", e.client)
		}, "echo", switching.StepStartTLS, conn.ErrNoServerName, false},
		{"system roots do not know our CA", func(ctx context.Context, nc net.Conn) (net.Conn, error) {
			return switching.Client(ctx, nc, "plain", systemRoots)
		}, "plain", switching.StepStartTLS, errUnknownAuthority, false},
		{"insecure plaintext", func(ctx context.Context, nc net.Conn) (net.Conn, error) {
			return switching.ClientInsecurePlaintext(ctx, nc, "plain")
		}, "plain", "", nil, false},
		{"insecure plaintext refused", func(ctx context.Context, nc net.Conn) (net.Conn, error) {
			return switching.ClientInsecurePlaintext(ctx, nc, "echo")
		}, "echo", switching.StepSwitch, switching.ErrTLSRequired, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := ctxT(t)
			nc, err := net.Dial("tcp", e.addr)
			require.NoError(t, err)
			defer nc.Close()
			c, err := tt.client(ctx, nc)
			if tt.step != "" {
				require.Nil(t, c)
				var de *switching.DialError
				require.ErrorAs(t, err, &de)
				require.Equal(t, tt.step, de.Step, "%v", err)
				require.Equal(t, tt.proto, de.Protocol)
				if tt.is == errUnknownAuthority {
					var te *conn.TLSError
					require.ErrorAs(t, err, &te)
					var ua x509.UnknownAuthorityError
					require.ErrorAs(t, err, &ua)
				} else if tt.is != nil {
					require.ErrorIs(t, err, tt.is)
				}
				_, err = nc.Write([]byte{0})
				require.ErrorIs(t, err, net.ErrClosed, "nc is closed on error")
				return
			}
			require.NoError(t, err)
			defer c.Close()
			info, ok := switching.InfoOf(c)
			require.True(t, ok)
			require.Equal(t, tt.tls, info.TLS != nil)
			roundTrip(t, c, 10_000)
		})
	}
}
