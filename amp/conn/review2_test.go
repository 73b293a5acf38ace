package conn_test

// Second adversarial review, of commit ebc2124 (one StartTLS or switch at a
// time, ErrCrossed, bounded final flush, nothing on a switched socket, no
// dispatch after Close). Each TestReview2* attacks it; those marked
// "Defect" fail on that commit; TestReview2BothSidesSwitch was narrowed to
// the crossing this end can recognise (see its comment).

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"os"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/ampmux/ampmux/amp"
	"github.com/ampmux/ampmux/amp/box"
	"github.com/ampmux/ampmux/amp/conn"
)

// Defect: command (dispatch.go) drops every command once c.ctx is done, to
// stop dispatching after Close. But c.ctx is also done when the
// connection's BaseContext ends, which does not close the connection: it
// stays open, reads every command and answers none, so the peer's calls
// hang until their own contexts end. Before the commit the responders ran
// with a cancelled context and answered (with an error at worst).
func TestReview2CancelledBaseContextStillAnswers(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		base, cancelBase := context.WithCancel(context.Background())
		defer cancelBase()
		client, server := bubblePair(t, &conn.Config{}, &conn.Config{Handler: demoMux(), BaseContext: base})
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if r, err := client.Call(ctx, "Sum", sumArgs(1, 2)); err != nil || r.GetString("total") != "3" {
			t.Fatalf("Sum before the base context ends: %v %v", r, err)
		}
		cancelBase()
		synctest.Wait()
		start := time.Now()
		_, err := client.Call(ctx, "Sum", sumArgs(1, 2))
		if errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("Sum after the server's BaseContext ended: no answer for %v (server.Err %v): "+
				"the connection is open but answers nothing", time.Since(start), server.Err())
		}
	})
}

// Defect: resumeWriter(stop) (write.go) clears the socket's write deadline
// when a switch is accepted, "a deadline Close armed is not the new
// owner's". With SwitchEarly the new owner has had the write side since
// the request left, and may have set a write deadline of its own, which
// the switch then wipes: a write the peer does not read blocks for ever
// instead of timing out.
func TestReview2SwitchEarlyKeepsWriteDeadline(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		a, b := net.Pipe()
		defer b.Close()
		c := conn.New(a, &conn.Config{Logger: quietLogger()})
		defer c.Close()
		dec := box.NewDecoder(b)
		type result struct {
			nc  net.Conn
			err error
		}
		got := make(chan result, 1)
		go func() {
			nc, err := c.SwitchEarly(context.Background(), "Sw", &box.Box{})
			got <- result{nc, err}
		}()
		m, err := nextBox(b, dec, time.Second)
		if err != nil || m["_command"] != "Sw" {
			t.Fatalf("switch request: %v %v", m, err)
		}
		r := <-got
		if r.err != nil {
			t.Fatal(r.err)
		}
		defer r.nc.Close()
		// Ours from here: bound our writes.
		if err := r.nc.SetWriteDeadline(time.Now().Add(time.Second)); err != nil {
			t.Fatal(err)
		}
		if _, err := b.Write(rawBox(t, map[string]string{"_answer": m["_ask"]})); err != nil {
			t.Fatal(err)
		}
		<-c.Done() // the switch has been taken over
		werr := make(chan error, 1)
		go func() { _, err := r.nc.Write([]byte("unread")); werr <- err }()
		select {
		case err := <-werr:
			if !errors.Is(err, os.ErrDeadlineExceeded) {
				t.Errorf("write past our deadline: %v, want os.ErrDeadlineExceeded", err)
			}
		case <-time.After(10 * time.Second):
			t.Errorf("write still blocked 10 s after the 1 s write deadline we set: the switch cleared it")
			b.Close()
			<-werr
		}
	})
}

// Defect: a StartTLS (or switch) refused before the writer has taken its
// marked batch (the peer answers the tag before reading the request, here
// while the writer is blocked on an earlier box) leaves resumeWriter
// (write.go) setting w.unlend and clearing w.special while w.mark and
// w.paused are still queued. A second StartTLS is then accepted by enqueue
// and overwrites the mark (the defect the commit fixed, back again); the
// writer writes both requests, the leftover unlend voids the second
// request's lend, and the writer goes on writing in the clear: a box
// queued behind the second StartTLS, which doc.go says leaves encrypted,
// reaches the peer in plain text before the handshake.
func TestReview2EarlyRefusalThenStartTLSKeepsQueueBehindMark(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		a, b := net.Pipe()
		defer b.Close()
		client := conn.New(a, &conn.Config{Logger: quietLogger()})
		defer client.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		cfg := &tls.Config{InsecureSkipVerify: true}

		// The writer blocks on this box: the peer reads nothing yet.
		if err := client.SendBox(ctx, "First", &box.Box{}); err != nil {
			t.Fatal(err)
		}
		synctest.Wait()
		first := make(chan error, 1)
		go func() { first <- client.StartTLS(ctx, cfg) }()
		synctest.Wait()
		// Refused (tag 1) before its request has even left.
		if _, err := b.Write(rawBox(t, map[string]string{"_error": "1", "_error_code": "TLS_ERROR", "_error_description": "no"})); err != nil {
			t.Fatal(err)
		}
		var re *amp.RemoteError
		if err := <-first; !errors.As(err, &re) {
			t.Fatalf("refused StartTLS: %v", err)
		}
		second := make(chan error, 1)
		go func() { second <- client.StartTLS(ctx, cfg) }()
		synctest.Wait()
		if err := client.SendBox(ctx, "Secret", &box.Box{}); err != nil {
			t.Fatal(err)
		}
		synctest.Wait()

		dec := box.NewDecoder(b)
		var seen []string
		for {
			m, err := nextBox(b, dec, time.Second)
			if errors.Is(err, os.ErrDeadlineExceeded) {
				break
			}
			if err != nil {
				t.Fatalf("peer read: %v (after %v)", err, seen)
			}
			seen = append(seen, m["_command"]+"/"+m["_ask"])
			if m["_command"] == "Secret" {
				t.Errorf("peer read %v: the box queued behind the second StartTLS went out in the clear", seen)
				break
			}
		}
		cancel()
		<-second
	})
}

// Both ends ask for a switch each would accept. Each end's request reaches
// the other while its own is pending: the end that sees it closes the
// connection with ErrCrossed at once, instead of both waiting for their
// contexts (the reviewer's repro used a command neither end handles; that
// case cannot be told from a command sent innocently just before the
// switch, so it is dropped with a log line and bounded by the caller's
// context, as doc.go says).
func TestReview2BothSidesSwitch(t *testing.T) {
	// The end that served the other's switch: its own request is refused
	// before it is sent, or lost with the switch.
	servedOther := func(err error) bool {
		return errors.Is(err, conn.ErrSwitchPending) || errors.Is(err, conn.ErrSwitched)
	}
	crossed := 0
	synctest.Test(t, func(t *testing.T) {
		for range 20 {
			a, b := net.Pipe()
			cfg := func() *conn.Config {
				m := demoMux()
				m.HandleBoxInline("Sw", func(ctx context.Context, req, resp *box.Box) error {
					return conn.FromContext(ctx).SwitchAfterAnswer(ctx, func(nc net.Conn) {
						if nc != nil {
							nc.Close()
						}
					})
				})
				return &conn.Config{Handler: m, Logger: quietLogger()}
			}
			x, y := conn.New(a, cfg()), conn.New(b, cfg())
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			start := time.Now()
			type result struct {
				nc  net.Conn
				err error
			}
			res := make(chan result, 2)
			for _, c := range []*conn.Conn{x, y} {
				go func() { nc, err := c.Switch(ctx, "Sw", &box.Box{}); res <- result{nc, err} }()
			}
			r1, r2 := <-res, <-res
			cancel()
			for _, r := range []result{r1, r2} {
				if r.nc != nil {
					r.nc.Close()
				}
			}
			if d := time.Since(start); d != 0 {
				t.Errorf("Switch from both ends took %v of bubble time (errors %v, %v; conn errors %v, %v), want none",
					d, r1.err, r2.err, x.Err(), y.Err())
			}
			switch {
			case errors.Is(r1.err, conn.ErrConnectionLost) && errors.Is(r2.err, conn.ErrConnectionLost):
				crossed++
				<-x.Done()
				<-y.Done()
				if !errors.Is(x.Err(), conn.ErrCrossed) && !errors.Is(y.Err(), conn.ErrCrossed) {
					t.Errorf("connection errors %v and %v, want ErrCrossed", x.Err(), y.Err())
				}
			case r1.err == nil && servedOther(r2.err), r2.err == nil && servedOther(r1.err):
				// Not crossed: one request was served before the other end
				// marked its own, and that end's own request is refused.
			default:
				t.Errorf("Switch from both ends: %v and %v, want both ErrConnectionLost, or one switched and one refused", r1.err, r2.err)
			}
			x.Close()
			y.Close()
			if t.Failed() {
				break
			}
		}
	})
	t.Logf("%d of 20 crossed", crossed)
}

// Close while the answer to a switch request is stuck behind a peer that
// reads nothing: Close returns once the final flush's deadline passes, and
// serve is told (nil) that the switch did not happen, since the answer
// never left.
func TestReview2CloseDuringUnreadSwitchAnswer(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		a, b := net.Pipe()
		defer b.Close()
		served := make(chan net.Conn, 1)
		sm := amp.NewMux()
		sm.HandleBoxInline("Sw", func(ctx context.Context, req, resp *box.Box) error {
			return conn.FromContext(ctx).SwitchAfterAnswer(ctx, func(nc net.Conn) { served <- nc })
		})
		c := conn.New(a, &conn.Config{Handler: sm, Logger: quietLogger()})
		if _, err := b.Write(rawBox(t, map[string]string{"_command": "Sw", "_ask": "1"})); err != nil {
			t.Fatal(err)
		}
		synctest.Wait() // the answer's write blocks
		start := time.Now()
		c.Close()
		if d := time.Since(start); d > 3*time.Second {
			t.Errorf("Close took %v with a switch answer the peer does not read, want the final flush's 2 s", d)
		}
		if nc := <-served; nc != nil {
			nc.Close()
			t.Error("serve got a connection although the switch answer was never sent")
		}
		<-c.Done()
	})
}

// The final flush is bounded over TLS too: after StartTLS the writer
// writes through the *tls.Conn (armFinal sets its deadline, Close sets the
// raw socket's), and a peer that decrypts one chunk and stops cannot hold
// Close beyond the final deadline.
func TestReview2CloseBoundedOverTLS(t *testing.T) {
	p := newPKI(t)
	now := time.Now() // the bubble's clock starts in 2000
	clock := func() time.Time { return now }
	srv := p.serverTLS.Clone()
	srv.Time = clock
	ccfg := p.clientTLS.Clone()
	ccfg.ServerName = "localhost"
	ccfg.Time = clock
	synctest.Test(t, func(t *testing.T) {
		a, b := net.Pipe()
		defer b.Close()
		c := conn.New(a, &conn.Config{Logger: quietLogger()})
		tlsDone := make(chan error, 1)
		go func() { tlsDone <- c.StartTLS(context.Background(), ccfg) }()
		dec := box.NewDecoder(b)
		m, err := nextBox(b, dec, time.Second)
		if err != nil || m["_command"] != conn.StartTLSCommand {
			t.Fatalf("StartTLS request: %v %v", m, err)
		}
		if _, err := b.Write(rawBox(t, map[string]string{"_answer": m["_ask"]})); err != nil {
			t.Fatal(err)
		}
		ts := tls.Server(b, srv)
		if err := ts.Handshake(); err != nil {
			t.Fatal(err)
		}
		if err := <-tlsDone; err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		defer cancel()
		if err := c.CallBox(ctx, "Big", bigArgs(), nil); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("CallBox: %v", err)
		}
		start := time.Now()
		closed := make(chan struct{})
		go func() { c.Close(); close(closed) }()
		synctest.Wait() // Close has armed the final deadline
		// The peer decrypts one chunk, then reads nothing.
		if _, err := ioReadFull(ts, make([]byte, 1<<20)); err != nil {
			t.Fatal(err)
		}
		<-closed
		if d := time.Since(start); d > 3*time.Second {
			t.Errorf("Close over TLS took %v with a peer that stopped reading, want the final flush's 2 s", d)
		}
	})
}

// Defect (same cause as TestReview2CancelledBaseContextStillAnswers):
// readFailed (read.go) takes a done c.ctx to mean "we closed it" and calls
// c.fail(c.err). When only the BaseContext has ended, c.err is still nil:
// the peer's hang-up fails the pending calls with a *LostError whose Cause
// is nil (its Error method then dereferences nil), Err and OnError report a
// clean end, and, when Close runs meanwhile, that read of c.err races with
// setErr writing it (the race detector reports it).
func TestReview2CancelledBaseContextPeerHangUp(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		base, cancelBase := context.WithCancel(context.Background())
		cancelBase()
		a, b := net.Pipe()
		c := conn.New(a, &conn.Config{BaseContext: base, Logger: quietLogger()})
		defer c.Close()
		res := make(chan error, 1)
		go func() { res <- c.CallBox(context.Background(), "X", &box.Box{}, nil) }()
		if m, err := nextBox(b, box.NewDecoder(b), time.Second); err != nil || m["_command"] != "X" {
			t.Fatalf("request: %v %v", m, err)
		}
		b.Close() // the peer hangs up
		err := <-res
		var le *conn.LostError
		if !errors.As(err, &le) || le.Cause == nil {
			t.Errorf("call failed with %#v, want a *LostError with a cause (io.EOF)", err)
		}
	})
}

// stallCtx runs hook the first time its Done method is called: waitSpace
// (write.go) calls it when the write queue is full, after StartTLS has
// checked that TLS is neither on nor under way and before it queues its
// request.
type stallCtx struct {
	context.Context
	once atomic.Bool
	hook func()
}

func (s *stallCtx) Done() <-chan struct{} {
	if s.once.CompareAndSwap(false, true) {
		s.hook()
	}
	return s.Context.Done()
}

// Defect: the commit dropped tlsBusy from serveStartTLS (tls.go), counting
// on enqueue's w.special to catch crossed requests. But StartTLS checks
// tlsState/tlsBusy, then queues its request (possibly waiting for room);
// a peer's StartTLS served in between runs the whole handshake, and
// resumeWriter clears w.special, so the request is then queued and sent
// inside the fresh TLS session, where the peer refuses it. StartTLS
// returns the peer's TLS_ERROR instead of ErrTLSActive, and the peer sees
// a StartTLS on a secured connection. (This is also why
// TestReviewBothSidesStartTLS fails now and then with "<nil> and
// TLS_ERROR: TLS already started".)
func TestReview2StartTLSQueuedAfterPeersHandshake(t *testing.T) {
	p := newPKI(t)
	now := time.Now()
	clock := func() time.Time { return now }
	srv := p.serverTLS.Clone()
	srv.Time = clock
	ccfg := p.clientTLS.Clone()
	ccfg.ServerName = "localhost"
	ccfg.Time = clock
	synctest.Test(t, func(t *testing.T) {
		held, release := make(chan struct{}), make(chan struct{})
		xm := amp.NewMux()
		xm.HandleBoxInline("Hold", func(context.Context, *box.Box, *box.Box) error {
			close(held)
			<-release
			return nil
		})
		a, b := net.Pipe()
		x := conn.New(a, &conn.Config{Handler: xm, TLS: srv, Logger: quietLogger()})
		y := conn.New(b, &conn.Config{TLS: srv, MaxWriteBuffer: 1 << 16, Logger: quietLogger()})
		defer x.Close()
		defer y.Close()
		// x's reader stops in Hold: y's writer blocks, y's queue fills.
		if err := y.SendBox(context.Background(), "Hold", &box.Box{}); err != nil {
			t.Fatal(err)
		}
		<-held
		big := &box.Box{}
		big.SetString("v", string(make([]byte, 40000)))
		for full := false; !full; {
			ctx, cancel := context.WithTimeout(context.Background(), time.Millisecond)
			err := y.SendBox(ctx, "Note", big)
			cancel()
			switch {
			case errors.Is(err, context.DeadlineExceeded):
				full = true // no room: the next box waits too
			case err != nil:
				t.Fatal(err)
			}
		}
		// y's StartTLS stops, its checks done, waiting for room.
		stalled, resume := make(chan struct{}), make(chan struct{})
		sctx := &stallCtx{Context: context.Background(), hook: func() { close(stalled); <-resume }}
		yDone := make(chan error, 1)
		go func() { yDone <- y.StartTLS(sctx, ccfg) }()
		<-stalled
		// Meanwhile x secures the connection, y serving it.
		xDone := make(chan error, 1)
		go func() { xDone <- x.StartTLS(context.Background(), ccfg) }()
		synctest.Wait()
		close(release)
		if err := <-xDone; err != nil {
			t.Fatalf("x.StartTLS: %v", err)
		}
		synctest.Wait()
		if _, ok := y.ConnectionState(); !ok {
			t.Fatal("y is not secured after serving x's StartTLS")
		}
		close(resume)
		err := <-yDone
		if !errors.Is(err, conn.ErrTLSActive) && !errors.Is(err, conn.ErrTLSPending) {
			t.Errorf("y.StartTLS racing the StartTLS it served: %v, want ErrTLSActive (or ErrTLSPending)", err)
		}
	})
}

// The caller's context ends at the instant the switch's answer arrives.
// Whichever wins, Switch returns a connection that works, or an error and
// no connection: never a connection already closed by the abandonment
// (the window the second review saw: ctx ending while the reader is in
// takeOver, so fail closes the socket and Switch still returns nil).
func TestReview2SwitchAnswerAtContextEnd(t *testing.T) {
	var switched, abandoned int
	synctest.Test(t, func(t *testing.T) {
		for range 200 {
			a, b := net.Pipe()
			c := conn.New(a, &conn.Config{Logger: quietLogger()})
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			type result struct {
				nc  net.Conn
				err error
			}
			res := make(chan result, 1)
			go func() { nc, err := c.Switch(ctx, "Sw", &box.Box{}); res <- result{nc, err} }()
			dec := box.NewDecoder(b)
			m, err := nextBox(b, dec, 10*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			time.Sleep(time.Second) // to the context's end, on the bubble's clock
			go b.Write(rawBox(t, map[string]string{"_answer": m["_ask"]}))
			r := <-res
			cancel()
			switch {
			case r.err == nil && r.nc == nil:
				t.Fatal("Switch returned neither a connection nor an error")
			case r.err == nil:
				got := make(chan error, 1)
				go func() { _, err := io.ReadFull(b, make([]byte, 4)); got <- err }()
				if _, err := r.nc.Write([]byte("ping")); err != nil {
					t.Fatalf("Switch returned a connection that does not work: %v", err)
				}
				if err := <-got; err != nil {
					t.Fatal(err)
				}
				r.nc.Close()
				switched++
			case r.nc != nil:
				t.Fatalf("Switch returned a connection and the error %v", r.err)
			default:
				abandoned++
			}
			b.Close()
			c.Close()
			<-c.Done()
		}
	})
	t.Logf("switched %d, abandoned %d", switched, abandoned)
}
