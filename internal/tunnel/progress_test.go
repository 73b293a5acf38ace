package tunnel

import (
	"errors"
	"io"
	"os"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/require"
)

// Both directions blocked writing, neither moving a byte: each write's
// deadline sees the silence, and the first to look puts the expiry off
// for the other's write only once, so the tunnel is closed at IdleTimeout
// (plus at most deadlineSlack), not kept open by the two deferring to each
// other.
func TestPipeBothWritesStuck(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := startRig(t, Options{IdleTimeout: 10 * time.Second}, nil)
		go r.client.Write(make([]byte, 200_000))  // the backend never reads
		go r.backend.Write(make([]byte, 200_000)) // the client never reads
		synctest.Wait()
		from := time.Now()
		require.ErrorIs(t, <-r.done, ErrIdleTimeout)
		require.GreaterOrEqual(t, time.Since(from), 10*time.Second)
		require.LessOrEqual(t, time.Since(from), 10*time.Second+deadlineSlack)
	})
}

// One write stuck (the backend does not read the upload) while the other
// way moves a KiB a second to a slow client: bytes are moving, so
// IdleTimeout does not cut the tunnel. When the client stops reading, the
// tunnel is closed: IdleTimeout after the last byte, or up to one more
// (progress inside a write is seen when its deadline passes).
func TestPipeStuckWriteWhileOtherWayFlows(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := startRig(t, Options{IdleTimeout: 10 * time.Second}, nil)
		go r.client.Write(make([]byte, 200_000)) // the backend never reads
		go r.backend.Write(make([]byte, 200_000))
		buf := make([]byte, 1<<10)
		var last time.Time
		for range 60 {
			time.Sleep(time.Second)
			_, err := io.ReadFull(r.client, buf)
			require.NoError(t, err, "tunnel %s", r.outcome())
			last = time.Now()
		}
		require.ErrorIs(t, <-r.done, ErrIdleTimeout)
		require.GreaterOrEqual(t, time.Since(last), 10*time.Second)
		require.LessOrEqual(t, time.Since(last), 20*time.Second+deadlineSlack)
	})
}

// cutForGood fails every write for good once a deadline interrupted one,
// as a *tls.Conn does (crypto/tls cannot resume a record).
type cutForGood struct {
	*halfConn
	err error
}

func (c *cutForGood) Write(p []byte) (int, error) {
	if c.err != nil {
		return 0, c.err
	}
	n, err := c.halfConn.Write(p)
	if errors.Is(err, os.ErrDeadlineExceeded) {
		c.err = err
	}
	return n, err
}

// A write its deadline interrupted after some progress goes on with the
// rest, but an end that cannot resume it fails at once, before the new
// deadline: the tunnel ends then, with the timeout's error saying why,
// rather than retrying in a loop until the tunnel has been silent that
// long (for ever, in a synctest bubble, where time stands still while a
// goroutine spins).
func TestPipeWriteToEndThatCannotResume(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		client, front := halfPair()
		back, backend := halfPair()
		t.Cleanup(func() { client.Close(); backend.Close() })
		done := make(chan error, 1)
		go func() {
			done <- PipeWith(&cutForGood{halfConn: front}, back, nil, Options{HalfCloseTimeout: 10 * time.Second})
		}()
		r := &rig{client: client, backend: backend}
		r.request(t, "req")
		go backend.Write(make([]byte, 32<<10)) // one read of PipeWith's
		start := time.Now()
		drained := make(chan struct{})
		go func() {
			defer close(drained)
			buf := make([]byte, 1<<10)
			for { // a KiB a second: the write is cut at 10 s, having moved 10 KiB
				if _, err := io.ReadFull(client, buf); err != nil {
					return
				}
				time.Sleep(time.Second)
			}
		}()
		err := <-done
		require.ErrorIs(t, err, ErrHalfCloseTimeout)
		require.ErrorContains(t, err, "cannot resume")
		require.Equal(t, 10*time.Second, time.Since(start))
		<-drained // the client sees the close
	})
}
