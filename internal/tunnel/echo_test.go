package tunnel

import (
	"bytes"
	"crypto/rand"
	"io"
	"net"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/require"
)

// Echo sends everything back, counts it both ways, passes the client's
// half-close back once the echo is through, and ends cleanly.
func TestEcho(t *testing.T) {
	client, front := tcpPair(t)
	boundTCP(t, client, front)
	st := &Stats{}
	done := make(chan error, 1)
	go func() { done <- Echo(front, st) }()
	req := make([]byte, 300_000)
	rand.Read(req)
	go func() {
		client.Write(req)
		client.(*net.TCPConn).CloseWrite()
	}()
	got, err := io.ReadAll(client)
	require.NoError(t, err)
	require.True(t, bytes.Equal(req, got), "echo: %d bytes of %d", len(got), len(req))
	require.NoError(t, waitDone(t, done))
	require.Equal(t, int64(len(req)), st.AToB.Load())
	require.Equal(t, int64(len(req)), st.BToA.Load())
}

// EchoWith applies the Options as PipeWith does: a client that
// half-closed but does not read its echo, one that is silent, one whose
// echo is stuck both ways, is closed when the timeout has run.
func TestEchoWithTimeouts(t *testing.T) {
	tests := []struct {
		name    string
		opt     Options
		traffic func(client *halfConn)
		after   time.Duration
		is      error
	}{
		{"half-closed, echo not read", Options{HalfCloseTimeout: 10 * time.Second},
			func(c *halfConn) { c.Write([]byte("hello")); c.CloseWrite() }, 10 * time.Second, ErrHalfCloseTimeout},
		{"silent", Options{IdleTimeout: 10 * time.Second},
			func(c *halfConn) {}, 10 * time.Second, ErrIdleTimeout},
		// Both of PipeWith's writes are stuck: the one to the client, and so
		// the one to the echo end. The expiry is put off once, by at most
		// deadlineSlack, for the other write.
		{"echo not read", Options{IdleTimeout: 10 * time.Second},
			func(c *halfConn) { go c.Write(make([]byte, 200_000)) }, 10 * time.Second, ErrIdleTimeout},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				client, front := halfPair()
				t.Cleanup(func() { client.Close() })
				done := make(chan error, 1)
				go func() { done <- EchoWith(front, nil, tt.opt) }()
				tt.traffic(client)
				synctest.Wait()
				from := time.Now()
				err := <-done
				require.ErrorIs(t, err, tt.is)
				require.GreaterOrEqual(t, time.Since(from), tt.after)
				require.LessOrEqual(t, time.Since(from), tt.after+deadlineSlack)
			})
		})
	}
}
