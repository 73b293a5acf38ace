package tunnel

import (
	"context"
	"io"
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// tcpPairKeepAlive is tcpPair with Go's own keep-alive on (the default) or
// off on both ends, so that what PipeWith sets shows.
func tcpPairKeepAlive(t *testing.T, on bool) (net.Conn, net.Conn) {
	t.Helper()
	ka := time.Duration(-1)
	if on {
		ka = 0
	}
	lc := net.ListenConfig{KeepAlive: ka}
	l, err := lc.Listen(context.Background(), "tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer l.Close()
	d := net.Dialer{KeepAlive: ka}
	a, err := d.Dial("tcp", l.Addr().String())
	require.NoError(t, err)
	b, err := l.Accept()
	require.NoError(t, err)
	t.Cleanup(func() { a.Close(); b.Close() })
	return a, b
}

// PipeWith turns keep-alive on for its TCP ends, with the package's
// settings unless told otherwise, or off when told so.
func TestPipeSetsKeepAlive(t *testing.T) {
	tests := []struct {
		name      string
		opt       Options
		goDefault bool // the sockets start with Go's keep-alive on
		wrap      bool // PipeWith gets the front end behind a NetConn wrapper, as a *tls.Conn is
		want      keepAlive
	}{
		{"default", Options{}, false, false, keepAlive{on: true, idle: KeepAliveIdle, interval: KeepAliveInterval, count: KeepAliveCount}},
		{"default over Go's", Options{}, true, false, keepAlive{on: true, idle: KeepAliveIdle, interval: KeepAliveInterval, count: KeepAliveCount}},
		{"custom", Options{KeepAlive: &net.KeepAliveConfig{Enable: true, Idle: 5 * time.Second, Interval: 2 * time.Second, Count: 4}}, false, false,
			keepAlive{on: true, idle: 5 * time.Second, interval: 2 * time.Second, count: 4}},
		{"off", Options{KeepAlive: &net.KeepAliveConfig{}}, true, false, keepAlive{on: false}},
		{"under a wrapper", Options{}, false, true, keepAlive{on: true, idle: KeepAliveIdle, interval: KeepAliveInterval, count: KeepAliveCount}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			client, front := tcpPairKeepAlive(t, tt.goDefault)
			back, backend := tcpPairKeepAlive(t, tt.goDefault)
			done := make(chan error, 1)
			var a net.Conn = front
			if tt.wrap {
				a = wrapped{front}
			}
			go func() { done <- PipeWith(a, back, nil, tt.opt) }()
			// A byte through the tunnel: PipeWith has set keep-alive
			// before it copies anything.
			_, err := client.Write([]byte{1})
			require.NoError(t, err)
			_, err = io.ReadFull(backend, make([]byte, 1))
			require.NoError(t, err)
			for _, c := range []net.Conn{front, back} {
				got, ok := keepAliveOf(t, c)
				if !ok {
					t.Skip("no way to read keep-alive settings on this system")
				}
				if !tt.want.on {
					got = keepAlive{on: got.on}
				}
				require.Equal(t, tt.want, got)
			}
			client.Close()
			backend.Close()
			<-done
		})
	}
}

// keepAlive is a socket's keep-alive settings.
type keepAlive struct {
	on             bool
	idle, interval time.Duration
	count          int
}

// wrapped hides a connection's methods but NetConn's, as a *tls.Conn does.
type wrapped struct{ net.Conn }

func (w wrapped) NetConn() net.Conn { return w.Conn }
