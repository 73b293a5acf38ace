package conn_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"math/big"
	"net"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ampmux/ampmux/amp"
	"github.com/ampmux/ampmux/amp/box"
	"github.com/ampmux/ampmux/amp/conn"
	"github.com/ampmux/ampmux/internal/demo"
	"github.com/ampmux/ampmux/internal/pki"
)

type testPKI struct {
	ca, otherCA    *pki.CA
	server, client *pki.Cert
	intruder       *pki.Cert // signed by otherCA
	serverTLS      *tls.Config
	clientTLS      *tls.Config
}

func newPKI(t *testing.T) *testPKI {
	ca, err := pki.NewCA("test CA")
	require.NoError(t, err)
	other, err := pki.NewCA("other CA")
	require.NoError(t, err)
	srv, err := ca.Server("localhost", "127.0.0.1", "::1")
	require.NoError(t, err)
	cli, err := ca.Client("alice")
	require.NoError(t, err)
	intr, err := other.Client("mallory")
	require.NoError(t, err)
	p := &testPKI{ca: ca, otherCA: other, server: srv, client: cli, intruder: intr}
	p.serverTLS = &tls.Config{
		Certificates: []tls.Certificate{srv.TLS()},
		ClientCAs:    ca.Pool(),
		ClientAuth:   tls.VerifyClientCertIfGiven,
	}
	p.clientTLS = &tls.Config{RootCAs: ca.Pool(), Certificates: []tls.Certificate{cli.TLS()}}
	return p
}

// recordingConn keeps a copy of everything written.
type recordingConn struct {
	net.Conn
	mu  sync.Mutex
	out bytes.Buffer
}

func (r *recordingConn) Write(p []byte) (int, error) {
	r.mu.Lock()
	r.out.Write(p)
	r.mu.Unlock()
	return r.Conn.Write(p)
}

func (r *recordingConn) written() []byte {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]byte(nil), r.out.Bytes()...)
}

func TestStartTLS(t *testing.T) {
	p := newPKI(t)
	forEachTransport(t, func(t *testing.T, mk func(*testing.T) (net.Conn, net.Conn)) {
		a, b := mk(t)
		rec := &recordingConn{Conn: a}
		server := conn.New(b, &conn.Config{Handler: demoMux(), TLS: p.serverTLS, Logger: quietLogger()})
		client := conn.New(rec, nil)
		t.Cleanup(func() { client.Close(); server.Close() })
		ctx := ctxT(t)

		_, ok := client.ConnectionState()
		require.False(t, ok)
		// Calls made while TLS starts must wait and go out encrypted.
		var wg sync.WaitGroup
		start := make(chan struct{})
		errs := make(chan error, 50)
		for i := range 50 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				for range i % 5 * 20 { // some before the switch, some during
					runtime.Gosched()
				}
				r, err := demo.Sum.Call(ctx, client, demo.SumArgs{A: big.NewInt(int64(i)), B: big.NewInt(1)})
				if err == nil && r.Total.Int64() != int64(i+1) {
					err = errors.New("wrong sum")
				}
				if err != nil {
					errs <- err
				}
			}()
		}
		cfg := p.clientTLS.Clone()
		cfg.ServerName = "localhost"
		close(start)
		require.NoError(t, client.StartTLS(ctx, cfg))
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
		cst, ok := client.ConnectionState()
		require.True(t, ok)
		require.True(t, cst.HandshakeComplete)
		require.Equal(t, "localhost", client.PeerCertificate().DNSNames[0])
		require.Eventually(t, func() bool { return server.PeerCertificate() != nil }, time.Second, time.Millisecond)
		require.Equal(t, "alice", server.PeerCertificate().Subject.CommonName)
		sst, _ := server.ConnectionState()
		require.NotEmpty(t, sst.VerifiedChains, "the client certificate was verified")

		raw := rec.written()
		at := bytes.Index(raw, []byte("StartTLS"))
		require.GreaterOrEqual(t, at, 0)
		require.NotContains(t, string(raw[at:]), "_command", "plaintext AMP after StartTLS")

		// A second StartTLS is refused locally, and by the server when
		// sent raw; the connection goes on.
		require.ErrorIs(t, client.StartTLS(ctx, cfg), conn.ErrTLSActive)
		_, err := client.Call(ctx, conn.StartTLSCommand, &box.Box{})
		var re *amp.RemoteError
		require.ErrorAs(t, err, &re)
		require.Equal(t, conn.CodeTLSError, re.Code)
		r, err := demo.Sum.Call(ctx, client, demo.SumArgs{A: big.NewInt(40), B: big.NewInt(2)})
		require.NoError(t, err)
		require.Equal(t, int64(42), r.Total.Int64())
	})
}

func TestStartTLSRefusedWithoutConfig(t *testing.T) {
	client, _ := pair(t, transports["tcp"], nil)
	ctx := ctxT(t)
	err := client.StartTLS(ctx, &tls.Config{InsecureSkipVerify: true})
	var re *amp.RemoteError
	require.ErrorAs(t, err, &re)
	require.Equal(t, conn.CodeTLSError, re.Code)
	r, err := demo.Sum.Call(ctx, client, demo.SumArgs{A: big.NewInt(1), B: big.NewInt(2)})
	require.NoError(t, err, "still AMP in the clear")
	require.Equal(t, int64(3), r.Total.Int64())
}

func TestStartTLSFailures(t *testing.T) {
	p := newPKI(t)
	requireCert := p.serverTLS.Clone()
	requireCert.ClientAuth = tls.RequireAndVerifyClientCert
	tests := []struct {
		name      string
		server    *tls.Config
		client    *tls.Config
		clientErr func(error) bool
	}{
		{"unknown authority", p.serverTLS, &tls.Config{RootCAs: p.otherCA.Pool(), ServerName: "localhost"},
			func(err error) bool { var e x509.UnknownAuthorityError; return errors.As(err, &e) }},
		{"system roots do not know a dev CA", p.serverTLS, &tls.Config{ServerName: "localhost"},
			func(err error) bool { var e x509.UnknownAuthorityError; return errors.As(err, &e) }},
		{"name mismatch", p.serverTLS, &tls.Config{RootCAs: p.ca.Pool(), ServerName: "wrong.example"},
			func(err error) bool { var e x509.HostnameError; return errors.As(err, &e) }},
		{"client certificate from another CA", requireCert,
			&tls.Config{RootCAs: p.ca.Pool(), ServerName: "localhost", Certificates: []tls.Certificate{p.intruder.TLS()}},
			func(err error) bool { var e *conn.TLSError; return errors.As(err, &e) && e.Remote }},
		{"no client certificate", requireCert, &tls.Config{RootCAs: p.ca.Pool(), ServerName: "localhost"},
			func(err error) bool { var e *conn.TLSError; return errors.As(err, &e) && e.Remote }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, b := tcpPair(t)
			serverErr := make(chan error, 1)
			server := conn.New(b, &conn.Config{Handler: demoMux(), TLS: tt.server, Logger: quietLogger(),
				OnError: func(_ *conn.Conn, err error) { serverErr <- err }})
			client := conn.New(a, nil)
			t.Cleanup(func() { client.Close(); server.Close() })
			ctx := ctxT(t)
			err := client.StartTLS(ctx, tt.client)
			if err == nil {
				// TLS 1.3: the client learns of a refused client
				// certificate on its next read.
				_, err = demo.Sum.Call(ctx, client, demo.SumArgs{A: big.NewInt(1), B: big.NewInt(1)})
			}
			require.Error(t, err)
			var te *conn.TLSError
			require.ErrorAs(t, err, &te, "client error %v", err)
			require.False(t, te.Server)
			require.True(t, tt.clientErr(err), "client error %v", err)
			select {
			case err := <-serverErr:
				require.ErrorAs(t, err, &te, "server error %v", err)
				require.True(t, te.Server)
			case <-time.After(5 * time.Second):
				t.Fatal("server connection not closed")
			}
			<-client.Done()
		})
	}
}

// A client may send its ClientHello in the same segment as the StartTLS
// request: those bytes must reach the TLS server, not the AMP parser.
func TestStartTLSClientHelloInSameSegment(t *testing.T) {
	p := newPKI(t)
	a, b := tcpPair(t)
	server := conn.New(b, &conn.Config{Handler: demoMux(), TLS: p.serverTLS, Logger: quietLogger()})
	t.Cleanup(func() { server.Close() })
	req, err := box.Append(nil, box.FromMap(map[string]string{"_command": "StartTLS", "_ask": "1"}))
	require.NoError(t, err)
	wantAnswer, err := box.Append(nil, box.FromMap(map[string]string{"_answer": "1"}))
	require.NoError(t, err)
	eager := &eagerConn{Conn: a, prefix: req, expect: wantAnswer}
	tc := tls.Client(eager, &tls.Config{RootCAs: p.ca.Pool(), ServerName: "localhost"})
	require.NoError(t, tc.HandshakeContext(ctxT(t)))
	client := conn.New(tc, nil)
	t.Cleanup(func() { client.Close() })
	r, err := demo.Sum.Call(ctxT(t), client, demo.SumArgs{A: big.NewInt(20), B: big.NewInt(22)})
	require.NoError(t, err)
	require.Equal(t, int64(42), r.Total.Int64())
}

// eagerConn sends prefix with its first write and checks that the first
// bytes read are expect.
type eagerConn struct {
	net.Conn
	prefix, expect []byte
	wrote, read    bool
}

func (e *eagerConn) Write(p []byte) (int, error) {
	if !e.wrote {
		e.wrote = true
		if _, err := e.Conn.Write(append(append([]byte{}, e.prefix...), p...)); err != nil {
			return 0, err
		}
		return len(p), nil
	}
	return e.Conn.Write(p)
}

func (e *eagerConn) Read(p []byte) (int, error) {
	if !e.read {
		e.read = true
		got := make([]byte, len(e.expect))
		if _, err := ioReadFull(e.Conn, got); err != nil {
			return 0, err
		}
		if !bytes.Equal(got, e.expect) {
			return 0, errors.New("unexpected answer " + string(got))
		}
	}
	return e.Conn.Read(p)
}

var _ = context.Background
