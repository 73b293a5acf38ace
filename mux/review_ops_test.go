package mux

// From the adversarial review of Server.SetLimits, now that cmux's own
// sniffing deadline is sniffCeiling (24 h) and each connection holds it to
// its own.

import (
	"errors"
	"io"
	"os"
	"sync"
	"testing"
	"time"
)

// TestReviewOpsSetLimitsStillCloses: after SetLimits (shorter or longer
// than New's SniffTimeout), a client that says nothing is still closed by
// the mux, not left to the 24 h ceiling. The read deadline only detects a
// failure (it is far above both timeouts); it orders nothing.
func TestReviewOpsSetLimitsStillCloses(t *testing.T) {
	for _, tc := range []struct{ at, set time.Duration }{{time.Second, 100 * time.Millisecond}, {50 * time.Millisecond, 200 * time.Millisecond}} {
		l := rvListen(t)
		m := rvServe(t, l, Config{SniffTimeout: tc.at})
		m.SetLimits(Config{SniffTimeout: tc.set, MinSniffTimeout: tc.set})
		c := rvDial(t, 1, l.Addr().String())
		c.SetReadDeadline(time.Now().Add(time.Minute))
		if _, err := io.Copy(io.Discard, c); errors.Is(err, os.ErrDeadlineExceeded) {
			t.Errorf("New %v, SetLimits %v: a silent client is still open after a minute", tc.at, tc.set)
		}
	}
}

// TestReviewOpsSetLimitsRace: SetLimits in a loop while connections are
// admitted, evicted (warn reads the limits), matched, delivered and
// counted (race detector).
func TestReviewOpsSetLimitsRace(t *testing.T) {
	l := rvListen(t)
	m := rvServe(t, l, Config{SniffTimeout: time.Second, MaxSniffingPerSource: 2})
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			m.SetLimits(Config{SniffTimeout: time.Duration(200+i%5*100) * time.Millisecond, MaxSniffingPerSource: 1 + i%3, MaxConns: 50 + i%7})
			m.Stats()
		}
	})
	for range 60 {
		c := rvDial(t, 4, l.Addr().String())
		c.Write([]byte(rpAMP))
		c.Close()
	}
	close(stop)
	wg.Wait()
	rvWait(t, m, "all gone", rvZero)
}
