package switching_test

import (
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ampmux/ampmux/amp/switching"
)

// netConnOnly hides every method of the connection but net.Conn's and
// NetConn, as conn's prefixConn (bytes read past a switch request,
// replayed) does.
type netConnOnly struct{ net.Conn }

func (w netConnOnly) NetConn() net.Conn { return w.Conn }

// unsupported says errors.ErrUnsupported to CloseWrite, and has NetConn.
type unsupported struct{ net.Conn }

func (unsupported) CloseWrite() error   { return errors.ErrUnsupported }
func (u unsupported) NetConn() net.Conn { return u.Conn }

func tcpPair(t *testing.T) (net.Conn, net.Conn) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer l.Close()
	a, err := net.Dial("tcp", l.Addr().String())
	require.NoError(t, err)
	b, err := l.Accept()
	require.NoError(t, err)
	for _, c := range []net.Conn{a, b} {
		require.NoError(t, c.SetDeadline(time.Now().Add(10*time.Second)))
		t.Cleanup(func() { c.Close() })
	}
	return a, b
}

// Conn.CloseWrite half-closes the TCP connection however deep under
// wrappers that have only NetConn, or whose CloseWrite is unsupported,
// it is; with nothing that can, it says errors.ErrUnsupported.
func TestConnCloseWriteFollowsNetConn(t *testing.T) {
	for _, tt := range []struct {
		name string
		wrap func(net.Conn) net.Conn
	}{
		{"direct", func(c net.Conn) net.Conn { return c }},
		{"under a NetConn wrapper", func(c net.Conn) net.Conn { return netConnOnly{c} }},
		{"under two", func(c net.Conn) net.Conn { return netConnOnly{unsupported{c}} }},
	} {
		t.Run(tt.name, func(t *testing.T) {
			a, b := tcpPair(t)
			sc := &switching.Conn{Conn: tt.wrap(a)}
			_, err := sc.Write([]byte("last words"))
			require.NoError(t, err)
			require.NoError(t, sc.CloseWrite())
			got, err := io.ReadAll(b) // EOF: a half-close
			require.NoError(t, err)
			require.Equal(t, "last words", string(got))
			_, err = b.Write([]byte("answer")) // the other way still open
			require.NoError(t, err)
			buf := make([]byte, 6)
			_, err = io.ReadFull(sc, buf)
			require.NoError(t, err)
			require.Equal(t, "answer", string(buf))
		})
	}
	p, q := net.Pipe()
	defer q.Close()
	defer p.Close()
	require.ErrorIs(t, (&switching.Conn{Conn: netConnOnly{p}}).CloseWrite(), errors.ErrUnsupported)
}
