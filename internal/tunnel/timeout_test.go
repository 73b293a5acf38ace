package tunnel

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/require"
)

// halfConn is one end of an in-memory connection that can be half-closed,
// which net.Pipe cannot: it reads one net.Pipe and writes another.
// Deadlines are net.Pipe's, which follow the fake clock in a synctest
// bubble.
type halfConn struct{ r, w net.Conn }

func halfPair() (*halfConn, *halfConn) {
	r1, w1 := net.Pipe()
	r2, w2 := net.Pipe()
	return &halfConn{r: r1, w: w2}, &halfConn{r: r2, w: w1}
}

func (c *halfConn) Read(p []byte) (int, error)         { return c.r.Read(p) }
func (c *halfConn) Write(p []byte) (int, error)        { return c.w.Write(p) }
func (c *halfConn) CloseWrite() error                  { return c.w.Close() }
func (c *halfConn) LocalAddr() net.Addr                { return c.r.LocalAddr() }
func (c *halfConn) RemoteAddr() net.Addr               { return c.r.RemoteAddr() }
func (c *halfConn) SetReadDeadline(t time.Time) error  { return c.r.SetReadDeadline(t) }
func (c *halfConn) SetWriteDeadline(t time.Time) error { return c.w.SetWriteDeadline(t) }
func (c *halfConn) SetDeadline(t time.Time) error {
	return errors.Join(c.r.SetReadDeadline(t), c.w.SetWriteDeadline(t))
}
func (c *halfConn) Close() error {
	c.r.Close()
	c.w.Close()
	return nil
}

// noDeadlines is an end that takes no deadline, as a StdioConn over a
// terminal: PipeWith must time it with a timer.
type noDeadlines struct{ *halfConn }

func (noDeadlines) SetReadDeadline(time.Time) error  { return os.ErrNoDeadline }
func (noDeadlines) SetWriteDeadline(time.Time) error { return os.ErrNoDeadline }

// rig is a tunnel client ⇄ front =PipeWith= back ⇄ backend, the test
// holding client and backend.
type rig struct {
	client, backend *halfConn
	done            chan error
	st              *Stats
}

func startRig(t *testing.T, opt Options, wrapBack func(*halfConn) net.Conn) *rig {
	client, front := halfPair()
	back, backend := halfPair()
	var b net.Conn = back
	if wrapBack != nil {
		b = wrapBack(back)
	}
	r := &rig{client: client, backend: backend, done: make(chan error, 1), st: &Stats{}}
	go func() { r.done <- PipeWith(front, b, r.st, opt) }()
	t.Cleanup(func() {
		client.Close()
		backend.Close()
	})
	return r
}

// request sends req from the client and half-closes; the backend reads it
// to EOF. The tunnel is then half-closed, the backend's way still open.
func (r *rig) request(t *testing.T, req string) {
	t.Helper()
	_, err := r.client.Write([]byte(req))
	require.NoError(t, err)
	require.NoError(t, r.client.CloseWrite())
	got, err := io.ReadAll(r.backend)
	require.NoError(t, err)
	require.Equal(t, req, string(got))
}

// running fails the test if the tunnel has ended.
func (r *rig) running(t *testing.T) {
	t.Helper()
	synctest.Wait()
	select {
	case err := <-r.done:
		t.Fatalf("tunnel ended early: %v", err)
	default:
	}
}

// The tunnel is closed for silence exactly when the timeout has run since
// the last byte (or the half-close), not a moment before.
func TestPipeClosesSilentTunnels(t *testing.T) {
	tests := []struct {
		name string
		opt  Options
		back func(*halfConn) net.Conn
		// traffic runs on the open tunnel and returns when the silence that
		// should end it began.
		traffic func(t *testing.T, r *rig) time.Time
		after   time.Duration
		is      error
	}{
		{"half-closed, silent backend", Options{HalfCloseTimeout: 10 * time.Second}, nil,
			func(t *testing.T, r *rig) time.Time { r.request(t, "req"); return time.Now() },
			10 * time.Second, ErrHalfCloseTimeout},
		{"half-closed, default timeout", Options{}, nil,
			func(t *testing.T, r *rig) time.Time { r.request(t, "req"); return time.Now() },
			DefaultHalfCloseTimeout, ErrHalfCloseTimeout},
		{"half-closed, backend silent after some answer", Options{HalfCloseTimeout: 10 * time.Second}, nil,
			func(t *testing.T, r *rig) time.Time {
				r.request(t, "req")
				for range 3 {
					time.Sleep(9 * time.Second)
					r.running(t)
					_, err := r.backend.Write([]byte("part"))
					require.NoError(t, err)
					got := make([]byte, 4)
					_, err = io.ReadFull(r.client, got)
					require.NoError(t, err)
				}
				return time.Now()
			},
			10 * time.Second, ErrHalfCloseTimeout},
		{"half-closed, client not reading the answer", Options{HalfCloseTimeout: 10 * time.Second}, nil,
			func(t *testing.T, r *rig) time.Time {
				r.request(t, "req")
				time.Sleep(3 * time.Second)
				// Returns once PipeWith has read it; its write to the
				// client then blocks.
				_, err := r.backend.Write([]byte("answer nobody reads"))
				require.NoError(t, err)
				return time.Now()
			},
			10 * time.Second, ErrHalfCloseTimeout},
		{"half-closed, backend end takes no deadline", Options{HalfCloseTimeout: 10 * time.Second},
			func(c *halfConn) net.Conn { return noDeadlines{c} },
			func(t *testing.T, r *rig) time.Time { r.request(t, "req"); return time.Now() },
			10 * time.Second, ErrHalfCloseTimeout},
		{"idle, traffic one way keeps both alive", Options{IdleTimeout: 10 * time.Second}, nil,
			func(t *testing.T, r *rig) time.Time {
				for range 4 {
					time.Sleep(7 * time.Second)
					r.running(t)
					_, err := r.client.Write([]byte("ping"))
					require.NoError(t, err)
					got := make([]byte, 4)
					_, err = io.ReadFull(r.backend, got)
					require.NoError(t, err)
				}
				return time.Now()
			},
			10 * time.Second, ErrIdleTimeout},
		{"idle, nothing ever sent", Options{IdleTimeout: 10 * time.Second}, nil,
			func(t *testing.T, r *rig) time.Time { return time.Now() },
			10 * time.Second, ErrIdleTimeout},
		{"idle shorter than half-close", Options{IdleTimeout: 5 * time.Second, HalfCloseTimeout: 10 * time.Second}, nil,
			func(t *testing.T, r *rig) time.Time { r.request(t, "req"); return time.Now() },
			5 * time.Second, ErrIdleTimeout},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				r := startRig(t, tt.opt, tt.back)
				from := tt.traffic(t, r)
				time.Sleep(tt.after - time.Nanosecond)
				r.running(t)
				time.Sleep(time.Nanosecond)
				synctest.Wait()
				select {
				case err := <-r.done:
					require.ErrorIs(t, err, tt.is)
					require.Equal(t, tt.after, time.Since(from))
				default:
					t.Fatalf("tunnel still open %v after the silence began", tt.after)
				}
				// Both of PipeWith's ends are closed: the test's ends see EOF.
				_, err := io.ReadAll(r.backend)
				require.NoError(t, err)
			})
		})
	}
}

// A half-closed tunnel whose other side keeps sending, each byte within
// the timeout of the one before, goes on for as long as it takes and
// delivers everything; so does one with no half-close limit at all.
func TestPipeHalfClosedAnswerKeepsFlowing(t *testing.T) {
	tests := []struct {
		name  string
		opt   Options
		pause time.Duration
	}{
		{"within the timeout", Options{HalfCloseTimeout: 10 * time.Second}, 9 * time.Second},
		{"within the default", Options{}, DefaultHalfCloseTimeout - time.Second},
		{"no limit", Options{HalfCloseTimeout: -1}, time.Hour},
		{"within the idle timeout too", Options{HalfCloseTimeout: 10 * time.Second, IdleTimeout: time.Minute}, 9 * time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				r := startRig(t, tt.opt, nil)
				r.request(t, "req")
				var want bytes.Buffer
				for i := range 10 {
					time.Sleep(tt.pause)
					r.running(t)
					chunk := bytes.Repeat([]byte{byte('a' + i)}, 50_000) // more than a copy buffer
					want.Write(chunk)
					errc := make(chan error, 1)
					go func() { _, err := r.backend.Write(chunk); errc <- err }()
					got := make([]byte, len(chunk))
					_, err := io.ReadFull(r.client, got)
					require.NoError(t, err)
					require.NoError(t, <-errc)
					require.Equal(t, chunk, got)
				}
				require.NoError(t, r.backend.CloseWrite())
				rest, err := io.ReadAll(r.client)
				require.NoError(t, err)
				require.Empty(t, rest)
				require.NoError(t, <-r.done)
				require.Equal(t, int64(3), r.st.AToB.Load())
				require.Equal(t, int64(want.Len()), r.st.BToA.Load())
			})
		})
	}
}

// Without timeouts that apply, PipeWith sets no deadline: one its caller
// set is not mistaken for its own, and ends the tunnel with its error.
func TestPipeForeignDeadline(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		client, front := halfPair()
		back, backend := halfPair()
		t.Cleanup(func() { client.Close(); backend.Close() })
		require.NoError(t, back.SetReadDeadline(time.Now().Add(time.Second)))
		err := PipeWith(front, back, nil, Options{HalfCloseTimeout: -1})
		require.ErrorIs(t, err, os.ErrDeadlineExceeded)
		require.NotErrorIs(t, err, ErrIdleTimeout)
	})
}

// StdioConn passes deadlines on to what takes them (an os.Pipe does) and
// says os.ErrNoDeadline otherwise, so that PipeWith knows to use a timer.
func TestStdioConnDeadlines(t *testing.T) {
	r, w, err := os.Pipe()
	require.NoError(t, err)
	t.Cleanup(func() { r.Close(); w.Close() })
	tests := []struct {
		name string
		c    *StdioConn
		is   error // nil: deadlines work
	}{
		{"os.Pipe", &StdioConn{In: r, Out: w}, nil},
		{"reader and writer", &StdioConn{In: io.NopCloser(bytes.NewReader(nil)), Out: nopWriteCloser{io.Discard}}, os.ErrNoDeadline},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			past := time.Now().Add(-time.Second)
			for _, set := range []func(time.Time) error{tt.c.SetReadDeadline, tt.c.SetWriteDeadline, tt.c.SetDeadline} {
				if tt.is == nil {
					require.NoError(t, set(past))
				} else {
					require.ErrorIs(t, set(past), tt.is)
				}
			}
			if tt.is == nil {
				_, err := tt.c.Read(make([]byte, 1))
				require.ErrorIs(t, err, os.ErrDeadlineExceeded)
				require.NoError(t, tt.c.SetDeadline(time.Time{}))
			}
		})
	}
}

type nopWriteCloser struct{ io.Writer }

func (nopWriteCloser) Close() error { return nil }
