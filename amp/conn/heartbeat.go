package conn

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/ampmux/ampmux/amp"
	"github.com/ampmux/ampmux/amp/box"
)

// HeartbeatCommand is the command a heartbeat probe calls. No responder
// implements it: a Twisted peer answers it with an UNHANDLED error, and
// this package answers it with an empty answer, without asking the
// Locator; either way the peer has shown that it is alive.
const HeartbeatCommand = "_ampmux_heartbeat"

// ErrHeartbeatTimeout: the peer sent nothing for Config.HeartbeatTimeout
// after a heartbeat probe, itself sent after Config.Heartbeat of silence;
// the connection is closed.
var ErrHeartbeatTimeout = errors.New("conn: peer silent (heartbeat timeout)")

// heartbeat is the reader's liveness state (the reader goroutine's).
type heartbeat struct {
	// due is the read deadline armed for the heartbeat, computed at armedAt
	// (zero: the deadline on the socket is not the heartbeat's).
	due, armedAt time.Time
	// probeAt: a probe was due then and nothing has arrived since (zero:
	// not probing).
	probeAt time.Time
}

// readIdle reads between boxes with the heartbeat on. Invariant: while
// the reader is blocked here, the read deadline is at most Heartbeat
// after this read began (the last byte came before it), or, once a probe
// has gone, HeartbeatTimeout after the probe. Re-arming costs a timer
// update, so a deadline armed less than Heartbeat/16 before the read
// began is kept; if it expires before the read has waited Heartbeat, it
// is re-armed for the rest. Any byte ends the probing. The probe is only
// sent in the open state (no StartTLS or switch pending, not closing);
// otherwise the silence is only waited out again, since the pending
// request's own context bounds it.
func (c *Conn) readIdle(r io.Reader, p []byte) (int, error) {
	hb := &c.rd.hb
	every, wait := c.cfg.Heartbeat, c.cfg.HeartbeatTimeout
	start := time.Now()
	if hb.probeAt.IsZero() && (hb.due.IsZero() || start.Sub(hb.armedAt) >= every/16) {
		c.armHeartbeat(start, start.Add(every))
	}
	for {
		n, err := r.Read(p)
		if n > 0 {
			if !hb.probeAt.IsZero() {
				hb.probeAt, hb.due = time.Time{}, time.Time{} // re-armed by the next read
			}
			if isTimeout(err) {
				err = nil
			}
			return n, err
		}
		if !isTimeout(err) {
			return n, err
		}
		now := time.Now()
		switch {
		case !hb.probeAt.IsZero() && now.Sub(hb.probeAt) >= wait:
			return 0, fmt.Errorf("%w: nothing received for %v after a probe, sent after %v of silence",
				ErrHeartbeatTimeout, now.Sub(hb.probeAt), every)
		case !hb.probeAt.IsZero():
			c.armHeartbeat(now, hb.probeAt.Add(wait))
		case now.Sub(start) < every:
			// Armed before this read began: wait out the rest.
			c.armHeartbeat(start, start.Add(every))
		case !c.mayProbe():
			c.armHeartbeat(now, now.Add(every))
		default:
			c.probe()
			hb.probeAt = now
			c.armHeartbeat(now, now.Add(wait))
		}
	}
}

func (c *Conn) armHeartbeat(at, due time.Time) {
	c.rd.hb.armedAt, c.rd.hb.due = at, due
	c.nc.SetReadDeadline(due)
}

func isTimeout(err error) bool { return err != nil && errors.Is(err, os.ErrDeadlineExceeded) }

// mayProbe: the connection is open, with no StartTLS or switch pending.
func (c *Conn) mayProbe() bool {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	return c.w.special == nil && c.w.owner != ownerLent && !c.w.closing
}

// probe sends a heartbeat call from the reader, unless one is still
// unanswered (a peer that answers nothing is judged by its other bytes,
// and pending calls do not pile up). It never waits: with the write queue
// full the writer is busy, and its own deadline watches the peer.
func (c *Conn) probe() {
	if !c.probes.CompareAndSwap(0, 1) {
		return
	}
	cl := c.getCall()
	cl.cb = c.probeDone
	cl.refs.Store(2)
	tag, _, err := c.register(cl)
	if err != nil {
		c.probes.Store(0)
		c.putCall(cl)
		return
	}
	var args box.Box
	if err = c.encodeCall(cl, HeartbeatCommand, tag, &args); err == nil {
		q := c.forAnswer(true)
		q.noWait = true
		err = c.enqueue(c.ctx, nil, cl.enc, q)
	}
	if err != nil {
		if c.unregister(tag, cl) {
			c.probes.Store(0)
			c.putCall(cl)
			return
		}
		// failPending took it and calls probeDone.
	}
	c.releaseCall(cl)
	c.flushNow() // the reader is about to block on the network
}

// probeAnswered is the probe's callback: any answer, an UNHANDLED error
// included, shows the peer alive (its bytes already did).
func (c *Conn) probeAnswered(context.Context, *box.Box, error) { c.probes.Store(0) }

// serveHeartbeat answers a peer's probe on the reader.
func (c *Conn) serveHeartbeat(ask []byte, hasAsk bool) error {
	if !hasAsk {
		return nil
	}
	b := &c.rd.errBox
	b.Reset()
	b.Set(amp.KeyAnswer, ask)
	if err := c.queueAnswer(b, true); err != nil {
		c.reportAnswerFailure([]byte(HeartbeatCommand), err)
	}
	return nil
}
