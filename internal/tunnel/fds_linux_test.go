//go:build linux

package tunnel

import (
	"github.com/ampmux/ampmux/internal/proctest"
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func openFDs(t *testing.T) int {
	t.Helper()
	return proctest.OpenFDs(t, proctest.Self)
}

// The case: tunnels whose client sent a request and a FIN, to a
// backend that never answers nor closes. Before HalfCloseTimeout each
// held both its descriptors for ever; now every PipeWith returns, having
// closed both, once the backend has been silent that long.
func TestManyHalfClosedTunnelsToASilentBackendEnd(t *testing.T) {
	n := 2000
	if testing.Short() {
		n = 200
	}
	front, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { front.Close() })
	silent, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { silent.Close() })
	dial := func(l net.Listener) (dialed, accepted net.Conn) {
		dialed, err := net.Dial("tcp", l.Addr().String())
		require.NoError(t, err)
		accepted, err = l.Accept()
		require.NoError(t, err)
		return dialed, accepted
	}

	baseline := openFDs(t)
	held := make([]net.Conn, 0, 2*n) // the clients and the silent backend's ends
	t.Cleanup(func() {
		for _, c := range held {
			c.Close()
		}
	})
	done := make(chan error, n)
	opt := Options{HalfCloseTimeout: 200 * time.Millisecond}
	for range n {
		client, frontEnd := dial(front)
		backEnd, backend := dial(silent)
		held = append(held, client, backend)
		go func() { done <- PipeWith(frontEnd, backEnd, nil, opt) }()
		_, err := client.Write([]byte("request"))
		require.NoError(t, err)
		require.NoError(t, client.(*net.TCPConn).CloseWrite())
	}
	for range n {
		require.ErrorIs(t, <-done, ErrHalfCloseTimeout)
	}
	require.Equal(t, baseline+len(held), openFDs(t), "every PipeWith closed both its ends")
	for _, c := range held {
		c.Close()
	}
	held = nil
	require.Equal(t, baseline, openFDs(t))
}
