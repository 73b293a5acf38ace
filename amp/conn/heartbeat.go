package conn

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
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
	// out: a probe is outstanding (queued, neither answered nor
	// forgotten), with tag; its end in the write stream is end, and
	// c.probeMark says whether and when it has been written.
	out bool
	tag uint64
	end int64
	// seq numbers the probes, for their tags.
	seq uint64
	// heard: a sign of life (a byte read, or bytes the peer took from the
	// writer) since the outstanding probe was queued. A probe out and not
	// heard is awaited: the reader counts HeartbeatTimeout from its write.
	heard bool
}

// probeTag marks the tags of heartbeat probes, which are not pending
// calls: answered takes their answers itself, and drops those of probes
// it has forgotten.
const probeTag = 1 << 63

// noFields is the probe's empty argument box (only ever read).
var noFields box.Box

func (hb *heartbeat) awaited() bool { return hb.out && !hb.heard }

// readIdle reads between boxes with the heartbeat on. Invariant: while
// the reader is blocked here, the read deadline is at most Heartbeat
// after the silence began (this read, or the last sign of life), or,
// while a probe is awaited, HeartbeatTimeout after the probe was written
// (or, not written yet, HeartbeatTimeout from now, to look again).
// Re-arming costs a timer update, so a deadline armed less than
// Heartbeat/16 before the read began is kept; if it expires before the
// read has waited Heartbeat, it is re-armed for the rest.
//
// Signs of life are the bytes read and, while a probe is awaited, the
// writer's progress past it (the peer took bytes queued after the probe).
// Any ends the silence, or the wait for the probe.
// The countdown of HeartbeatTimeout starts only once the probe has been
// written: queued behind a backlog it cannot be answered sooner, and
// the writer's own deadline watches a peer that takes nothing. A probe
// the queue refuses (full) is not sent and not awaited: the next silence
// tries again. One probe at a time is out; one unanswered for
// HeartbeatTimeout after its write while signs of life came (the peer
// dropped it: it crossed a switch request, say) is forgotten, and the
// next silence probes again. The probe is only sent in the open state (no
// StartTLS or switch pending, not closing); otherwise the silence is only
// waited out again, since the pending request's own context bounds it.
func (c *Conn) readIdle(r io.Reader, p []byte) (int, error) {
	hb := &c.rd.hb
	every, wait := c.cfg.Heartbeat, c.cfg.HeartbeatTimeout
	start := time.Now()
	if hb.due.IsZero() || start.Sub(hb.armedAt) >= every/16 {
		c.armHeartbeat(start, start.Add(every))
	}
	for {
		n, err := r.Read(p)
		if n > 0 {
			if hb.awaited() {
				hb.due = time.Time{} // the probe's deadline: re-armed by the next read
			}
			hb.heard = true
			if isTimeout(err) {
				err = nil
			}
			return n, err
		}
		if !isTimeout(err) {
			return n, err
		}
		now := time.Now()
		if hb.awaited() {
			mark := c.probeMark.Load()
			switch {
			case mark >= 0:
				// Not written yet: behind a backlog, which the writer's
				// deadline watches. Look again later.
				c.armHeartbeat(now, now.Add(wait))
			case c.wsent.Load() > hb.end:
				// The peer took bytes queued after the probe: alive.
				hb.heard, start = true, now
				c.armHeartbeat(now, now.Add(every))
			default:
				written := time.Unix(0, -mark)
				if now.Sub(written) >= wait {
					return 0, fmt.Errorf("%w: nothing received for %v after a probe, written after %v of silence",
						ErrHeartbeatTimeout, now.Sub(written), every)
				}
				c.armHeartbeat(now, written.Add(wait))
			}
			continue
		}
		if now.Sub(start) < every {
			// Armed before this read began: wait out the rest.
			c.armHeartbeat(start, start.Add(every))
			continue
		}
		if !c.mayProbe() {
			c.armHeartbeat(now, now.Add(every))
			continue
		}
		if hb.out {
			// Heard from since it was queued, but not answered.
			mark := c.probeMark.Load()
			if mark >= 0 {
				c.armHeartbeat(now, now.Add(every)) // not written yet
				continue
			}
			if written := time.Unix(0, -mark); now.Sub(written) < wait {
				c.armHeartbeat(now, written.Add(wait)) // its answer may still come
				continue
			}
			hb.out = false // dropped by the peer: forget it
		}
		if c.probe() {
			c.armHeartbeat(now, now.Add(wait))
		} else {
			c.armHeartbeat(now, now.Add(every))
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

// probe queues a heartbeat call from the reader, and reports whether it
// did. It never waits: with the write queue full (or the Budget short)
// the writer is busy, and its own deadline watches the peer. The probe is
// no pending call: its tag (probeTag set) is the reader's, and answered
// takes its answer.
func (c *Conn) probe() bool {
	hb := &c.rd.hb
	hb.seq++
	tag := probeTag | hb.seq
	var tmp [16]byte
	var err error
	c.rd.probeEnc, err = box.AppendWith(c.rd.probeEnc[:0], &noFields,
		box.Field{Key: amp.KeyAsk, Value: strconv.AppendUint(tmp[:0], tag, 16)},
		box.Field{Key: amp.KeyCommand, Value: []byte(HeartbeatCommand)})
	if err != nil {
		return false
	}
	c.probeMark.Store(0)
	q := c.forAnswer(true)
	q.noWait, q.probe = true, true
	if err := c.enqueue(context.Background(), nil, c.rd.probeEnc, q); err != nil {
		return false
	}
	hb.out, hb.tag, hb.heard = true, tag, false // hb.end set by enqueue
	// The reader is about to block on the network.
	c.flushNow()
	return true
}

// probeAnswered takes the answer to a probe, on the reader: any answer,
// an UNHANDLED error included, shows the peer alive (its bytes already
// did); that of a forgotten probe is dropped.
func (c *Conn) probeAnswered(tag uint64) {
	if hb := &c.rd.hb; hb.out && hb.tag == tag {
		hb.out = false
	}
}

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
