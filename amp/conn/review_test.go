package conn_test

// Adversarial review of the rewritten connection. Each TestReview* is an
// attack on it: those whose comment says "Observed" failed so before the
// fix that came with them; the others held from the start.

import (
	"bytes"
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

// rawBox encodes m as one box.
func rawBox(t *testing.T, m map[string]string) []byte {
	t.Helper()
	p, err := box.Append(nil, box.FromMap(m))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// nextBox reads one box from dec, giving up after d of (bubble) time.
func nextBox(nc net.Conn, dec *box.Decoder, d time.Duration) (map[string]string, error) {
	nc.SetReadDeadline(time.Now().Add(d))
	defer nc.SetReadDeadline(time.Time{})
	var b box.Box
	if err := dec.Next(&b); err != nil {
		return nil, err
	}
	return b.Map(), nil
}

// Fixed: a second StartTLS or switch request is refused while one is
// pending (ErrTLSPending, ErrSwitchPending).
//
// A Switch called while a StartTLS request is queued behind a busy writer
// overwrites the StartTLS mark (enqueue sets w.mark/w.paused
// unconditionally, write.go enqueue "if paused != nil"). The writer then
// sends the Switch request in the clear right behind the StartTLS request,
// lends the socket at the Switch's mark and closes the Switch's paused
// channel; the StartTLS paused channel is never closed, so when the peer
// accepts StartTLS the reader waits in waitPaused (tls.go upgradeTLS) for
// ever: no ClientHello is ever sent and the connection hangs until the
// StartTLS context ends.
//
// Observed: the Switch request arrives in the clear before the handshake,
// and no ClientHello follows the StartTLS answer.
func TestReviewSwitchWhileStartTLSPending(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		a, b := net.Pipe()
		client := conn.New(a, &conn.Config{Logger: quietLogger()})
		defer b.Close()
		defer client.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()

		// The writer blocks on this box: the peer reads nothing yet.
		if err := client.SendBox(ctx, "First", &box.Box{}); err != nil {
			t.Fatal(err)
		}
		synctest.Wait()
		tlsDone := make(chan error, 1)
		go func() { tlsDone <- client.StartTLS(ctx, &tls.Config{InsecureSkipVerify: true}) }()
		synctest.Wait()
		swDone := make(chan error, 1)
		go func() { _, err := client.Switch(ctx, "Sw", &box.Box{}); swDone <- err }()
		synctest.Wait()

		dec := box.NewDecoder(b)
		for _, want := range []string{"First", conn.StartTLSCommand} {
			m, err := nextBox(b, dec, time.Second)
			if err != nil || m["_command"] != want {
				t.Fatalf("peer read %v (%v), want %s", m, err, want)
			}
		}
		// Nothing may follow the StartTLS request in the clear.
		if m, err := nextBox(b, dec, time.Second); err == nil {
			t.Errorf("peer read %v in the clear right after the StartTLS request", m)
		} else if !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("peer read: %v", err)
		}
		dec = nil
		if err := <-swDone; !errors.Is(err, conn.ErrTLSPending) {
			t.Errorf("Switch while StartTLS is pending: %v, want ErrTLSPending", err)
		}
		// Accept StartTLS: the client must start the handshake.
		if _, err := b.Write(rawBox(t, map[string]string{"_answer": "1"})); err != nil {
			t.Fatal(err)
		}
		b.SetReadDeadline(time.Now().Add(5 * time.Second))
		var hello [1]byte
		if _, err := b.Read(hello[:]); err != nil || hello[0] != 0x16 {
			t.Errorf("after the StartTLS answer: read %x (%v), want a TLS ClientHello (0x16)", hello, err)
		}
	})
}

// Close promises to wait "at most a few seconds for a peer that does not
// read" (finalFlushTimeout, 2 s). But a batch taken before Close is written
// in 1 MiB chunks, and each chunk after the first re-arms the write
// deadline to the full WriteTimeout (write.go armDeadline: b.closing is the
// value from before Close, so force=true re-arms 30 s, overriding the
// final-flush deadline closeAfterFlush set). A peer that reads one chunk
// and stops holds Close for a whole WriteTimeout; reading a chunk every
// 29 s would hold it for ever.
//
// Observed: Close returns after ~31 s instead of ~2 s.
func TestReviewCloseBoundedWhilePeerTrickles(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		a, b := net.Pipe()
		defer b.Close()
		c := conn.New(a, &conn.Config{Logger: quietLogger()})
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		defer cancel()
		// ~19 MB in one batch; the call gives up, the writer goes on.
		if err := c.CallBox(ctx, "Big", bigArgs(), nil); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("CallBox: %v", err)
		}
		start := time.Now()
		closed := make(chan struct{})
		go func() { c.Close(); close(closed) }()
		synctest.Wait()
		// The peer takes the first chunk a second later, then nothing.
		time.Sleep(time.Second)
		if _, err := ioReadFull(b, make([]byte, 1<<20)); err != nil {
			t.Fatal(err)
		}
		<-closed
		if d := time.Since(start); d > 5*time.Second {
			t.Errorf("Close took %v with a peer that stopped reading, want a few seconds", d)
		}
	})
}

// hookCtx is a BaseContext that runs hook when a cancelCtx below it is
// cancelled: context's removeChild asks the parent for its cancelCtx
// (Value with a *int key). Conn cancels its context in setErr, so the
// hook runs on whichever goroutine ends the connection, at that point: a
// stand-in for another goroutine scheduled right then.
type hookCtx struct {
	context.Context
	never chan struct{}
	armed atomic.Bool
	hook  func()
}

func (h *hookCtx) Done() <-chan struct{} { return h.never }

func (h *hookCtx) Value(key any) any {
	if _, ok := key.(*int); ok && h.armed.CompareAndSwap(true, false) {
		h.hook()
	}
	return h.Context.Value(key)
}

// takeOver (switch.go) gives the socket back to the writer with stop set
// (resumeWriter, which also clears w.locked), then calls setErr and
// failPending, and only then sets w.closing. In between, the write queue is
// open (closing false, locked nil, owner none, mark -1, wconn == nc), so a
// Go or CallBox from any goroutine, found "alone", takes the fast path
// (tryFastWrite) and writes an AMP box onto the socket that now belongs to
// the switched protocol. The hook below makes the Go call land in that
// window deterministically (on the real thing it is a scheduling race).
//
// Observed: after the switch answer, the switched stream starts with the
// AMP box "_command: Leak" instead of the new protocol's "SERVED".
func TestReviewNoAMPBytesAfterSwitch(t *testing.T) {
	a, b := tcpPair(t)
	defer a.Close()
	base := &hookCtx{Context: context.Background(), never: make(chan struct{})}
	var server *conn.Conn
	leakErr := make(chan error, 1)
	base.hook = func() {
		leakErr <- server.Go(context.Background(), "Leak", &box.Box{}, func(context.Context, *box.Box, error) {})
	}
	served := make(chan struct{})
	sm := amp.NewMux()
	sm.HandleBoxInline("Sw", func(ctx context.Context, req, resp *box.Box) error {
		base.armed.Store(true)
		return conn.FromContext(ctx).SwitchAfterAnswer(ctx, func(nc net.Conn) {
			defer close(served)
			if nc != nil {
				nc.Write([]byte("SERVED"))
				nc.Close()
			}
		})
	})
	server = conn.New(b, &conn.Config{Handler: sm, BaseContext: base, Logger: quietLogger()})
	t.Cleanup(func() { server.Close(); <-server.Done() })

	if _, err := a.Write(rawBox(t, map[string]string{"_command": "Sw", "_ask": "1"})); err != nil {
		t.Fatal(err)
	}
	a.SetReadDeadline(time.Now().Add(10 * time.Second))
	dec := box.NewDecoder(a)
	var ans box.Box
	if err := dec.Next(&ans); err != nil || ans.GetString("_answer") != "1" {
		t.Fatalf("switch answer: %v (%v)", ans.String(), err)
	}
	<-served
	rest, _ := io.ReadAll(io.MultiReader(bytes.NewReader(bytes.Clone(dec.Buffered())), a))
	if string(rest) != "SERVED" {
		t.Errorf("switched stream: %q, want only %q (the Go call returned %v)", rest, "SERVED", <-leakErr)
	}
}

// After Close, the reader goes on decoding and dispatching whatever the
// peer sends while the writer flushes (up to finalFlushTimeout): closing
// only refuses outgoing boxes (write.go waitSpace), readLoop (read.go)
// never looks at it. Responders, inline ones included, keep running for
// commands that arrive after Close has been called (and after a fatal
// error answer), their side effects happening although their answers can
// never be sent.
//
// Observed: the responder runs for a command received after Close.
func TestReviewNoDispatchAfterClose(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		a, b := net.Pipe()
		defer b.Close()
		var ran atomic.Int32
		m := amp.NewMux()
		m.HandleBoxInline("Count", func(context.Context, *box.Box, *box.Box) error {
			ran.Add(1)
			return nil
		})
		c := conn.New(a, &conn.Config{Handler: m, Logger: quietLogger()})
		// Something for the final flush: the peer reads nothing.
		if err := c.SendBox(context.Background(), "Note", &box.Box{}); err != nil {
			t.Fatal(err)
		}
		synctest.Wait()
		closed := make(chan struct{})
		go func() { c.Close(); close(closed) }()
		synctest.Wait() // Close waits for the final flush
		if _, err := b.Write(rawBox(t, map[string]string{"_command": "Count", "_ask": "1"})); err != nil {
			t.Fatal(err)
		}
		synctest.Wait()
		if n := ran.Load(); n != 0 {
			t.Errorf("a responder ran %d time(s) for a command received after Close", n)
		}
		<-closed
	})
}

// A call cancelled by its context leaves its tag pending with no call; its
// late answer is dropped, and the call object (pooled) serves the next
// call under a new tag, which must get its own answer only, even when the
// peer answers the new tag first and the old one after.
func TestReviewTagReuseAfterCancel(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		a, b := net.Pipe()
		defer b.Close()
		c := conn.New(a, &conn.Config{Logger: quietLogger()})
		defer c.Close()
		dec := box.NewDecoder(b)
		for round := range 3 {
			ctx, cancel := context.WithCancel(context.Background())
			first := make(chan error, 1)
			go func() { first <- c.CallBox(ctx, "One", &box.Box{}, new(box.Box)) }()
			m1, err := nextBox(b, dec, time.Second)
			if err != nil {
				t.Fatal(err)
			}
			cancel()
			if err := <-first; !errors.Is(err, context.Canceled) {
				t.Fatalf("round %d: cancelled call: %v", round, err)
			}
			var reply box.Box
			second := make(chan error, 1)
			go func() { second <- c.CallBox(context.Background(), "Two", &box.Box{}, &reply) }()
			m2, err := nextBox(b, dec, time.Second)
			if err != nil {
				t.Fatal(err)
			}
			if m1["_ask"] == m2["_ask"] {
				t.Fatalf("round %d: tag %s used twice", round, m1["_ask"])
			}
			// The old answer first on even rounds, last on odd ones.
			old := rawBox(t, map[string]string{"_answer": m1["_ask"], "who": "old"})
			cur := rawBox(t, map[string]string{"_answer": m2["_ask"], "who": "new"})
			if round%2 == 0 {
				b.Write(append(old, cur...))
			} else {
				b.Write(append(cur, old...))
			}
			if err := <-second; err != nil || reply.GetString("who") != "new" {
				t.Fatalf("round %d: second call got %v (%v), want who=new", round, reply.String(), err)
			}
			synctest.Wait()
			if err := c.Err(); err != nil {
				t.Fatalf("round %d: connection failed: %v", round, err)
			}
		}
	})
}

// Go calls racing with Close (over TCP, so the fast path is in play): every
// Go that returned nil gets its done exactly once, every Go that returned
// an error gets none, and CallBox callers all return.
func TestReviewGoDoneExactlyOnceUnderClose(t *testing.T) {
	for range 20 {
		a, b := tcpPair(t)
		client, _ := startPair(t, a, b, &conn.Config{Logger: quietLogger()}, &conn.Config{Handler: demoMux(), Logger: quietLogger()})
		const n = 200
		var calls [n]atomic.Int32
		var accepted [n]bool
		start := make(chan struct{})
		sent := make(chan struct{})
		callers := make(chan error, 4)
		go func() {
			defer close(sent)
			<-start
			for i := range n {
				err := client.Go(context.Background(), "Sum", sumArgs(i, 1), func(_ context.Context, reply *box.Box, err error) {
					calls[i].Add(1)
				})
				accepted[i] = err == nil
			}
		}()
		for range cap(callers) {
			go func() {
				<-start
				var err error
				for err == nil {
					err = client.CallBox(context.Background(), "Sum", sumArgs(1, 2), new(box.Box))
				}
				callers <- err
			}()
		}
		close(start)
		client.Close()
		<-sent
		for range cap(callers) {
			if err := <-callers; !errors.Is(err, conn.ErrConnectionLost) {
				t.Errorf("CallBox after Close: %v", err)
			}
		}
		<-client.Done()
		for i := range n {
			want := int32(0)
			if accepted[i] {
				want = 1
			}
			if got := calls[i].Load(); got != want {
				t.Fatalf("Go call %d (accepted %v): done called %d times", i, accepted[i], got)
			}
		}
	}
}

// Switch: while pending, sends are refused with ErrSwitchPending; a
// refusal lets AMP go on (the box right behind the refusal is served); an
// acceptance followed at once, in the same write, by the first bytes of
// the new protocol hands those bytes to the net.Conn Switch returns.
func TestReviewSwitchTrailingBytes(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		a, b := net.Pipe()
		defer b.Close()
		c := conn.New(a, &conn.Config{Handler: demoMux(), Logger: quietLogger()})
		defer c.Close()
		dec := box.NewDecoder(b)

		// Refused first: AMP goes on.
		res := make(chan error, 1)
		go func() { _, err := c.Switch(context.Background(), "Sw", &box.Box{}); res <- err }()
		m, err := nextBox(b, dec, time.Second)
		if err != nil || m["_command"] != "Sw" {
			t.Fatalf("switch request: %v %v", m, err)
		}
		if err := c.SendBox(context.Background(), "During", &box.Box{}); !errors.Is(err, conn.ErrSwitchPending) {
			t.Errorf("SendBox while the switch is pending: %v, want ErrSwitchPending", err)
		}
		refusal := rawBox(t, map[string]string{"_error": m["_ask"], "_error_code": "NO", "_error_description": "no"})
		sum := rawBox(t, map[string]string{"_command": "Sum", "_ask": "a1", "a": "1", "b": "2"})
		b.Write(append(refusal, sum...))
		if err := <-res; err == nil {
			t.Fatal("refused switch returned no error")
		}
		if m, err := nextBox(b, dec, time.Second); err != nil || m["_answer"] != "a1" || m["total"] != "3" {
			t.Fatalf("after the refusal: %v (%v), want the Sum answer", m, err)
		}

		// Accepted, with data right behind the answer.
		type result struct {
			nc  net.Conn
			err error
		}
		acc := make(chan result, 1)
		go func() { nc, err := c.Switch(context.Background(), "Sw", &box.Box{}); acc <- result{nc, err} }()
		m, err = nextBox(b, dec, time.Second)
		if err != nil || m["_command"] != "Sw" {
			t.Fatalf("switch request: %v %v", m, err)
		}
		b.Write(append(rawBox(t, map[string]string{"_answer": m["_ask"]}), "HELLO WORLD"...))
		r := <-acc
		if r.err != nil {
			t.Fatal(r.err)
		}
		defer r.nc.Close()
		got := make([]byte, len("HELLO WORLD"))
		if _, err := ioReadFull(r.nc, got); err != nil || string(got) != "HELLO WORLD" {
			t.Errorf("switched conn read %q (%v)", got, err)
		}
		// Our writes reach the peer raw.
		go r.nc.Write([]byte("BACK"))
		back := make([]byte, 4)
		if _, err := ioReadFull(io.MultiReader(bytes.NewReader(bytes.Clone(dec.Buffered())), b), back); err != nil || string(back) != "BACK" {
			t.Errorf("peer read %q (%v)", back, err)
		}
		<-c.Done()
	})
}

// Every blocking call returns when its context ends, whether the peer
// reads nothing (the writer blocked, the write queue full) or reads and
// never answers.
func TestReviewBlockingCallsHonourContext(t *testing.T) {
	ops := map[string]func(ctx context.Context, c *conn.Conn) error{
		"CallBox": func(ctx context.Context, c *conn.Conn) error { return c.CallBox(ctx, "X", &box.Box{}, nil) },
		"StartTLS": func(ctx context.Context, c *conn.Conn) error {
			return c.StartTLS(ctx, &tls.Config{InsecureSkipVerify: true})
		},
		"Switch": func(ctx context.Context, c *conn.Conn) error { _, err := c.Switch(ctx, "Sw", &box.Box{}); return err },
		"SwitchEarly": func(ctx context.Context, c *conn.Conn) error {
			nc, err := c.SwitchEarly(ctx, "Sw", &box.Box{})
			if err == nil {
				// It returns once the request is written; the first Read
				// waits for the answer, bounded by the read deadline.
				nc.SetReadDeadline(time.Now().Add(time.Second))
				_, err = nc.Read(make([]byte, 1))
				nc.Close()
			}
			return err
		},
		"Go with a full queue": func(ctx context.Context, c *conn.Conn) error {
			big := &box.Box{}
			big.SetString("v", string(make([]byte, 60000)))
			for {
				if err := c.Go(ctx, "X", big, func(context.Context, *box.Box, error) {}); err != nil {
					return err
				}
			}
		},
	}
	for name, op := range ops {
		for _, reads := range []bool{false, true} {
			if reads && name == "Go with a full queue" {
				continue // the queue never fills: Go never waits
			}
			t.Run(name+map[bool]string{false: "/peer reads nothing", true: "/peer never answers"}[reads], func(t *testing.T) {
				synctest.Test(t, func(t *testing.T) {
					a, b := net.Pipe()
					defer b.Close()
					if reads {
						go io.Copy(io.Discard, b)
					}
					c := conn.New(a, &conn.Config{Logger: quietLogger(), MaxWriteBuffer: 1 << 16})
					defer c.Close()
					// Keep the writer busy when the peer does not read.
					c.SendBox(context.Background(), "First", &box.Box{})
					ctx, cancel := context.WithTimeout(context.Background(), time.Second)
					defer cancel()
					start := time.Now()
					err := op(ctx, c)
					if err == nil || time.Since(start) > time.Second {
						t.Errorf("%v after %v, want an error by the 1s deadline", err, time.Since(start))
					}
				})
			})
		}
	}
}

// Both ends call StartTLS at once. Each end holds its writes after its own
// request until the answer (as Twisted does), so neither can answer the
// other: before, both waited until the StartTLS context ended (never,
// with context.Background). Now the end that reads the crossing request
// closes the connection with ErrCrossed, at once (no bubble time passes).
// When one request is read and answered before the other end marks its
// own, nothing crosses: that end's StartTLS is refused with ErrTLSPending
// (or ErrTLSActive, once that handshake is done) and the other's succeeds.
func TestReviewBothSidesStartTLS(t *testing.T) {
	p := newPKI(t)
	// The bubble's clock starts in 2000; certificates are valid now.
	now := time.Now()
	clock := func() time.Time { return now }
	srv := p.serverTLS.Clone()
	srv.Time = clock
	ccfg := p.clientTLS.Clone()
	ccfg.ServerName = "localhost"
	ccfg.Time = clock
	crossed := 0
	// The end that served the other's StartTLS refuses its own: while that
	// handshake is pending, or once it is done.
	refusedLocally := func(err error) bool {
		return errors.Is(err, conn.ErrTLSPending) || errors.Is(err, conn.ErrTLSActive)
	}
	synctest.Test(t, func(t *testing.T) {
		for range 20 {
			a, b := net.Pipe()
			cfg := func() *conn.Config {
				return &conn.Config{Handler: demoMux(), TLS: srv, Logger: quietLogger()}
			}
			x, y := conn.New(a, cfg()), conn.New(b, cfg())
			start := time.Now()
			errs := make(chan error, 2)
			for _, c := range []*conn.Conn{x, y} {
				go func() { errs <- c.StartTLS(context.Background(), ccfg) }()
			}
			e1, e2 := <-errs, <-errs
			if d := time.Since(start); d != 0 {
				t.Errorf("crossed StartTLS took %v of bubble time, want none", d)
			}
			switch {
			case errors.Is(e1, conn.ErrConnectionLost) && errors.Is(e2, conn.ErrConnectionLost):
				crossed++
				<-x.Done()
				<-y.Done()
				if !errors.Is(x.Err(), conn.ErrCrossed) && !errors.Is(y.Err(), conn.ErrCrossed) {
					t.Errorf("connection errors %v and %v, want ErrCrossed", x.Err(), y.Err())
				}
			case e1 == nil && refusedLocally(e2), e2 == nil && refusedLocally(e1):
				// Not crossed: the connection is secured and still works.
				for _, c := range []*conn.Conn{x, y} {
					if c.Err() != nil {
						t.Errorf("connection failed after one StartTLS succeeded: %v", c.Err())
					}
					req, resp := &box.Box{}, &box.Box{}
					req.SetString("a", "1")
					req.SetString("b", "2")
					if err := c.CallBox(context.Background(), "Sum", req, resp); err != nil || resp.GetString("total") != "3" {
						t.Errorf("Sum(1, 2) after StartTLS: %q, %v; want 3", resp.GetString("total"), err)
					}
				}
			default:
				t.Errorf("StartTLS from both ends: %v and %v, want both ErrConnectionLost, or one nil and one ErrTLSPending or ErrTLSActive", e1, e2)
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

// After a switch the socket belongs to the new protocol, but Close on the
// old *Conn (a deferred Close, or Server.Close/Shutdown reaching a switched
// connection whose handlers have not all returned yet) still runs the
// closeOnce body of closeAfterFlush (conn.go), which arms the 2 s
// final-flush write deadline on c.nc: takeOver (switch.go) set
// w.closing itself without going through closeOnce.
//
// Observed: the switched connection's writes fail with "i/o timeout" 2 s
// after the old Conn is closed.
func TestReviewCloseAfterSwitchLeavesSocketAlone(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		a, b := net.Pipe()
		defer b.Close()
		c := conn.New(a, &conn.Config{Logger: quietLogger()})
		dec := box.NewDecoder(b)
		type result struct {
			nc  net.Conn
			err error
		}
		acc := make(chan result, 1)
		go func() { nc, err := c.Switch(context.Background(), "Sw", &box.Box{}); acc <- result{nc, err} }()
		m, err := nextBox(b, dec, time.Second)
		if err != nil {
			t.Fatal(err)
		}
		b.Write(rawBox(t, map[string]string{"_answer": m["_ask"]}))
		r := <-acc
		if r.err != nil {
			t.Fatal(r.err)
		}
		defer r.nc.Close()
		<-c.Done()
		c.Close() // the old AMP connection is done with
		time.Sleep(3 * time.Second)
		go io.Copy(io.Discard, b)
		if _, err := r.nc.Write([]byte("still mine")); err != nil {
			t.Errorf("write on the switched connection after closing the old Conn: %v", err)
		}
	})
}

// Bytes queued by many callers, written partly by the fast path (a small
// socket send buffer makes its non-blocking write come up short often)
// and partly by the writer, arrive in order: every echo answer matches
// its call. (Shrinking the receiver's SO_RCVBUF as well only shows the
// kernel's 200 ms zero-window probes, not a defect of the package.)
func TestReviewFastPathPartialWritesKeepOrder(t *testing.T) {
	a, b := tcpPair(t)
	a.(*net.TCPConn).SetWriteBuffer(4096)
	m := amp.NewMux()
	m.HandleBoxInline("Echo", func(_ context.Context, req, resp *box.Box) error {
		resp.SetString("v", req.GetString("v"))
		return nil
	})
	client, _ := startPair(t, a, b, &conn.Config{Logger: quietLogger()}, &conn.Config{Handler: m, Logger: quietLogger()})
	ctx := ctxT(t)
	errs := make(chan error, 4)
	for g := range cap(errs) {
		go func() {
			var err error
			for i := 0; i < 300 && err == nil; i++ {
				var args, reply box.Box
				v := string(rune('a'+g)) + string(make([]byte, (i*37+g*1000)%20000))
				args.SetString("v", v)
				if i%3 == 0 {
					done := make(chan error, 1)
					err = client.Go(ctx, "Echo", &args, func(_ context.Context, r *box.Box, e error) {
						if e == nil && r.GetString("v") != v {
							e = errors.New("Go: wrong echo")
						}
						done <- e
					})
					if err == nil {
						err = <-done
					}
					continue
				}
				err = client.CallBox(ctx, "Echo", &args, &reply)
				if err == nil && reply.GetString("v") != v {
					err = errors.New("CallBox: wrong echo")
				}
			}
			errs <- err
		}()
	}
	for range cap(errs) {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
}

// Close from a responder on a handler goroutine, and from a Go done
// callback run by that Close (failPending runs callbacks on the goroutine
// that ends the connection), returns; the caller gets a *LostError.
func TestReviewCloseFromHandlerAndCallback(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		closed := make(chan struct{})
		sm := amp.NewMux()
		sm.HandleBox("CloseMe", func(ctx context.Context, req, resp *box.Box) error {
			c := conn.FromContext(ctx)
			// A Go call whose done (run inside Close) closes again.
			c.Go(context.Background(), "Hold", &box.Box{}, func(context.Context, *box.Box, error) { c.Close() })
			c.Close()
			close(closed)
			return nil
		})
		arrived := make(chan struct{})
		client, server := bubblePair(t, &conn.Config{Handler: holdMux(arrived, nil)}, &conn.Config{Handler: sm})
		_, err := client.Call(context.Background(), "CloseMe", &box.Box{})
		if !errors.Is(err, conn.ErrConnectionLost) {
			t.Errorf("CloseMe: %v, want ErrConnectionLost", err)
		}
		<-closed
		<-server.Done()
	})
}
