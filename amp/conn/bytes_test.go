package conn_test

import (
	"math/big"
	"net"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/ampmux/ampmux/amp/conn"
	"github.com/ampmux/ampmux/internal/demo"
)

// Bytes counts the AMP stream both ways: what one end wrote, the other
// read, before and after StartTLS; OnTLS reports each handshake's result.
func TestBytesAndOnTLS(t *testing.T) {
	p := newPKI(t)
	a, b := net.Pipe()
	tlsResults := make(chan error, 4)
	onTLS := func(_ *conn.Conn, err error) { tlsResults <- err }
	server := conn.New(b, &conn.Config{Handler: demoMux(), TLS: p.serverTLS, Logger: quietLogger(), OnTLS: onTLS})
	client := conn.New(a, &conn.Config{OnTLS: onTLS})
	t.Cleanup(func() { client.Close(); server.Close() })
	ctx := ctxT(t)
	sum := func() {
		r, err := demo.Sum.Call(ctx, client, demo.SumArgs{A: big.NewInt(2), B: big.NewInt(3)})
		require.NoError(t, err)
		require.Equal(t, int64(5), r.Total.Int64())
	}
	sum()
	_, cw := client.Bytes() // the writer may not have counted the last yet

	cfg := p.clientTLS.Clone()
	cfg.ServerName = "localhost"
	require.NoError(t, client.StartTLS(ctx, cfg))
	require.NoError(t, <-tlsResults)
	require.NoError(t, <-tlsResults)
	sum()
	// Once both have ended, the counts are final and agree.
	client.Close()
	<-server.Done()
	<-client.Done()
	cr2, cw2 := client.Bytes()
	require.Greater(t, cw2, cw)
	require.NotZero(t, cr2)
	sr2, sw2 := server.Bytes()
	require.Equal(t, cw2, sr2, "the client wrote what the server read")
	require.Equal(t, cr2, sw2, "the server wrote what the client read")

	// A failed handshake is reported with its error.
	a2, b2 := net.Pipe()
	bad := make(chan error, 1)
	s2 := conn.New(b2, &conn.Config{Handler: demoMux(), TLS: p.serverTLS, Logger: quietLogger(),
		OnTLS: func(_ *conn.Conn, err error) { bad <- err }})
	c2 := conn.New(a2, nil)
	t.Cleanup(func() { c2.Close(); s2.Close() })
	wrong := p.clientTLS.Clone()
	wrong.ServerName = "not-the-server"
	require.Error(t, c2.StartTLS(ctx, wrong))
	var te *conn.TLSError
	require.ErrorAs(t, <-bad, &te)
	require.True(t, te.Server)
}
