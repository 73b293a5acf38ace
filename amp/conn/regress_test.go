package conn_test

// Regression tests for the defects of issue 10, each one failing on the
// connection as it was before (commit 8a1b8f1). They run in synctest
// bubbles over net.Pipe: a stall shows as a deadlock report at once, and
// timeouts run on the bubble's fake clock.

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/ampmux/ampmux/amp"
	"github.com/ampmux/ampmux/amp/box"
	"github.com/ampmux/ampmux/amp/conn"
)

// bubblePair connects two Conns over net.Pipe inside a synctest bubble;
// both are closed (and their goroutines gone) when f's test ends.
func bubblePair(t *testing.T, clientCfg, serverCfg *conn.Config) (client, server *conn.Conn) {
	a, b := net.Pipe()
	if serverCfg.Logger == nil {
		serverCfg.Logger = quietLogger()
	}
	if clientCfg.Logger == nil {
		clientCfg.Logger = quietLogger()
	}
	return startPair(t, a, b, clientCfg, serverCfg)
}

// Responders that call the peer back, more of them than MaxHandlers: the
// reader must go on reading the answers to their calls.
func TestCallbackRespondersPastMaxHandlers(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		sm := amp.NewMux()
		sm.HandleBox("Relay", func(ctx context.Context, req, resp *box.Box) error {
			var args, reply box.Box
			args.SetString("n", req.GetString("n"))
			if err := conn.FromContext(ctx).CallBox(ctx, "Pong", &args, &reply); err != nil {
				return err
			}
			resp.SetString("got", reply.GetString("n"))
			return nil
		})
		cm := amp.NewMux()
		cm.HandleBoxInline("Pong", func(_ context.Context, req, resp *box.Box) error {
			resp.SetString("n", req.GetString("n"))
			return nil
		})
		client, _ := bubblePair(t, &conn.Config{Handler: cm}, &conn.Config{Handler: sm, MaxHandlers: 2, MaxQueuedCommands: 4})
		const n = 6
		errs := make(chan error, n)
		for i := range n {
			go func() {
				var args, reply box.Box
				args.SetString("n", strings.Repeat("x", i+1))
				err := client.CallBox(context.Background(), "Relay", &args, &reply)
				if err == nil && reply.GetString("got") != args.GetString("n") {
					err = errors.New("wrong answer " + reply.String())
				}
				errs <- err
			}()
		}
		for range n {
			if err := <-errs; err != nil {
				t.Error(err)
			}
		}
	})
}

// Past MaxHandlers plus the queue, commands are refused with a declared
// code, and the reader never blocks.
func TestHandlerOverloadRefused(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		release := make(chan struct{})
		sm := amp.NewMux()
		sm.HandleBox("Wait", func(ctx context.Context, req, resp *box.Box) error {
			<-release
			return nil
		})
		client, _ := bubblePair(t, &conn.Config{}, &conn.Config{Handler: sm, MaxHandlers: 1, MaxQueuedCommands: 1})
		results := make(chan error, 3)
		for range 3 {
			go func() { _, err := client.Call(context.Background(), "Wait", &box.Box{}); results <- err }()
		}
		// One runs, one waits in the queue, the third is refused at once.
		err := <-results
		var re *amp.RemoteError
		if !errors.As(err, &re) || re.Code != conn.CodeOverloaded || !errors.Is(err, conn.ErrOverloaded) {
			t.Fatalf("third call: %v, want an %s answer", err, conn.CodeOverloaded)
		}
		close(release)
		for range 2 {
			if err := <-results; err != nil {
				t.Error(err)
			}
		}
	})
}

// A Go call from a goroutine of its own goes out while the reader is busy
// in an inline responder: being on the reader is not a connection-wide
// state.
func TestGoWhileReaderRunsInlineResponder(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		entered, release := make(chan struct{}), make(chan struct{})
		sm := amp.NewMux()
		sm.HandleBoxInline("Block", func(ctx context.Context, req, resp *box.Box) error {
			close(entered)
			<-release
			return nil
		})
		got := make(chan struct{})
		cm := amp.NewMux()
		cm.HandleBoxInline("Note", func(ctx context.Context, req, resp *box.Box) error {
			close(got)
			return nil
		})
		client, server := bubblePair(t, &conn.Config{Handler: cm}, &conn.Config{Handler: sm})
		blockDone := make(chan error, 1)
		go func() { _, err := client.Call(context.Background(), "Block", &box.Box{}); blockDone <- err }()
		<-entered
		answered := make(chan error, 1)
		if err := server.Go(context.Background(), "Note", &box.Box{}, func(_ context.Context, _ *box.Box, err error) { answered <- err }); err != nil {
			t.Fatal(err)
		}
		<-got // the peer has it while Block still runs
		close(release)
		if err := <-blockDone; err != nil {
			t.Error(err)
		}
		if err := <-answered; err != nil {
			t.Error(err)
		}
	})
}

// SwitchAfterAnswer from a responder on its own goroutine is refused, even
// while an inline responder runs on the reader (and -race sees no race).
func TestSwitchAfterAnswerOutsideInline(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		entered, release, tryNow := make(chan struct{}), make(chan struct{}), make(chan struct{})
		switchErr := make(chan error, 1)
		sm := amp.NewMux()
		sm.HandleBox("Try", func(ctx context.Context, req, resp *box.Box) error {
			<-tryNow
			err := conn.FromContext(ctx).SwitchAfterAnswer(ctx, func(nc net.Conn) {
				if nc != nil {
					nc.Close()
				}
			})
			switchErr <- err
			return nil
		})
		sm.HandleBoxInline("Block", func(ctx context.Context, req, resp *box.Box) error {
			close(entered)
			<-release
			return nil
		})
		client, _ := bubblePair(t, &conn.Config{}, &conn.Config{Handler: sm})
		done := make(chan error, 2)
		go func() { _, err := client.Call(context.Background(), "Try", &box.Box{}); done <- err }()
		synctest.Wait() // Try's goroutine waits for tryNow
		go func() { _, err := client.Call(context.Background(), "Block", &box.Box{}); done <- err }()
		<-entered
		close(tryNow)
		if err := <-switchErr; !errors.Is(err, conn.ErrNotInline) {
			t.Errorf("SwitchAfterAnswer from a handler goroutine: %v, want ErrNotInline", err)
		}
		close(release)
		for range 2 {
			if err := <-done; err != nil {
				t.Error(err)
			}
		}
	})
}

// bigArgs is a box of about 19 MB.
func bigArgs() *box.Box {
	var b box.Box
	v := strings.Repeat("v", box.MaxValueLength)
	for i := range 300 {
		b.SetString("k"+strings.Repeat("x", i%50)+string(rune('a'+i%26))+string(rune('a'+i/26)), v)
	}
	return &b
}

// A large call to a peer that reads nothing ends with its context; the
// write itself is bounded by the default write timeout.
func TestCallBoxHonoursContextOnLargeWrite(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		a, b := net.Pipe()
		c := conn.New(a, &conn.Config{Logger: quietLogger()})
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		defer cancel()
		start := time.Now()
		err := c.CallBox(ctx, "Sum", bigArgs(), nil)
		if !errors.Is(err, context.DeadlineExceeded) || time.Since(start) != 300*time.Millisecond {
			t.Errorf("CallBox: %v after %v, want the context's deadline at 300ms", err, time.Since(start))
		}
		// Nobody reads: the writer gives up after the default write timeout.
		<-c.Done()
		if time.Since(start) > 31*time.Second {
			t.Errorf("connection ended after %v, want about the default write timeout", time.Since(start))
		}
		if !errors.Is(c.Err(), os.ErrDeadlineExceeded) {
			t.Errorf("connection error %v, want a write timeout", c.Err())
		}
		c.Close()
		b.Close()
	})
}

// A switch request without _ask is a protocol error, and what the
// responder prepared is released: serve is called with nil.
func TestSwitchWithoutAskReleases(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var mu sync.Mutex
		var served []net.Conn
		sm := amp.NewMux()
		sm.HandleBoxInline("Switch", func(ctx context.Context, req, resp *box.Box) error {
			return conn.FromContext(ctx).SwitchAfterAnswer(ctx, func(nc net.Conn) {
				mu.Lock()
				served = append(served, nc)
				mu.Unlock()
			})
		})
		client, server := bubblePair(t, &conn.Config{}, &conn.Config{Handler: sm})
		if err := client.SendBox(context.Background(), "Switch", &box.Box{}); err != nil {
			t.Fatal(err)
		}
		<-server.Done()
		synctest.Wait()
		var pe *conn.ProtocolError
		if !errors.As(server.Err(), &pe) {
			t.Errorf("server ended with %v, want a protocol error", server.Err())
		}
		mu.Lock()
		defer mu.Unlock()
		if len(served) != 1 || served[0] != nil {
			t.Errorf("serve called with %v, want once with nil", served)
		}
	})
}

// A responder that asks for a switch and then fails releases it too.
func TestSwitchAbandonedByErrorReleases(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		calls := make(chan net.Conn, 2)
		sm := amp.NewMux()
		sm.HandleBoxInline("Switch", func(ctx context.Context, req, resp *box.Box) error {
			if err := conn.FromContext(ctx).SwitchAfterAnswer(ctx, func(nc net.Conn) { calls <- nc }); err != nil {
				return err
			}
			return errors.New("changed my mind")
		})
		client, _ := bubblePair(t, &conn.Config{}, &conn.Config{Handler: sm})
		_, err := client.Call(context.Background(), "Switch", &box.Box{})
		var re *amp.RemoteError
		if !errors.As(err, &re) {
			t.Fatalf("call: %v, want an error answer", err)
		}
		if nc := <-calls; nc != nil {
			t.Errorf("serve got %v, want nil", nc)
		}
		synctest.Wait()
		if len(calls) != 0 {
			t.Error("serve called twice")
		}
	})
}

// The context a done callback gets leaves writes to the reader only while
// that callback runs: kept and used later from another goroutine, it must
// not leave the call waiting for a reader that has nothing to read.
func TestReaderContextKeptAfterCallback(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		client, _ := bubblePair(t, &conn.Config{}, &conn.Config{Handler: demoMux()})
		kept := make(chan context.Context, 1)
		if err := client.Go(context.Background(), "Sum", sumArgs(1, 2), func(ctx context.Context, _ *box.Box, err error) {
			kept <- ctx
		}); err != nil {
			t.Fatal(err)
		}
		ctx := <-kept
		answered := make(chan error, 1)
		if err := client.Go(ctx, "Sum", sumArgs(3, 4), func(_ context.Context, reply *box.Box, err error) {
			if err == nil && reply.GetString("total") != "7" {
				err = errors.New("wrong total " + reply.String())
			}
			answered <- err
		}); err != nil {
			t.Fatal(err)
		}
		if err := <-answered; err != nil {
			t.Error(err)
		}
	})
}

// A StartTLS refusal that arrives while the request is still being written
// (here: a peer that answers before it reads) must give the socket back:
// the writer may not lend it afterwards and stop writing for good.
func TestStartTLSRefusedBeforeRequestWritten(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		a, b := net.Pipe()
		client := conn.New(a, &conn.Config{Logger: quietLogger()})
		defer client.Close()
		defer b.Close()
		res := make(chan error, 1)
		go func() { res <- client.StartTLS(context.Background(), &tls.Config{InsecureSkipVerify: true}) }()
		synctest.Wait() // the writer is blocked writing the request
		refusal, _ := box.Append(nil, box.FromMap(map[string]string{"_error": "1", "_error_code": "TLS_ERROR", "_error_description": "no"}))
		if _, err := b.Write(refusal); err != nil {
			t.Fatal(err)
		}
		var re *amp.RemoteError
		if err := <-res; !errors.As(err, &re) {
			t.Fatalf("StartTLS: %v, want the refusal", err)
		}
		dec := box.NewDecoder(b)
		var got box.Box
		if err := dec.Next(&got); err != nil || got.GetString("_command") != conn.StartTLSCommand {
			t.Fatalf("first box %v (%v), want the StartTLS request", got.String(), err)
		}
		if err := client.SendBox(context.Background(), "Note", &box.Box{}); err != nil {
			t.Fatal(err)
		}
		if err := dec.Next(&got); err != nil || got.GetString("_command") != "Note" {
			t.Fatalf("next box %v (%v), want Note: the writer stopped", got.String(), err)
		}
	})
}
