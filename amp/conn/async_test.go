package conn_test

import (
	"context"
	"errors"
	"net"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ampmux/ampmux/amp"
	"github.com/ampmux/ampmux/amp/box"
	"github.com/ampmux/ampmux/amp/conn"
	"github.com/ampmux/ampmux/internal/demo"
)

func sumArgs(a, b int) *box.Box {
	var args box.Box
	args.SetString("a", strconv.Itoa(a))
	args.SetString("b", strconv.Itoa(b))
	return &args
}

// Thousands of calls in flight from one goroutine: each done runs once,
// with its own answer.
func TestGoPipelined(t *testing.T) {
	forEachTransport(t, func(t *testing.T, mk func(*testing.T) (net.Conn, net.Conn)) {
		client, _ := pair(t, mk, nil)
		const n = 5000
		got := make([]int, n)
		var calls atomic.Int32
		var wg sync.WaitGroup
		wg.Add(n)
		for i := range n {
			err := client.Go(ctxT(t), "Sum", sumArgs(i, 1000), func(_ context.Context, reply *box.Box, err error) {
				defer wg.Done()
				calls.Add(1)
				if err != nil {
					t.Errorf("call %d: %v", i, err)
					return
				}
				got[i], _ = strconv.Atoi(reply.GetString("total"))
			})
			require.NoError(t, err)
		}
		wg.Wait()
		require.EqualValues(t, n, calls.Load())
		for i, v := range got {
			require.Equal(t, i+1000, v, "call %d", i)
		}
	})
}

// Calls issued from done callbacks, on the reader goroutine, go out
// without waiting for anything else: a chain of sequential calls runs at
// round-trip speed.
func TestGoChainedFromCallback(t *testing.T) {
	forEachTransport(t, func(t *testing.T, mk func(*testing.T) (net.Conn, net.Conn)) {
		for _, readerCtx := range []bool{true, false} {
			chainFromCallback(t, mk, readerCtx)
		}
	})
}

// chainFromCallback runs a chain of calls, each made by the previous
// one's done, with done's context (left to the reader) or another.
func chainFromCallback(t *testing.T, mk func(*testing.T) (net.Conn, net.Conn), readerCtx bool) {
	{
		client, _ := pair(t, mk, nil)
		const n = 2000
		finished := make(chan int, 1)
		var next func(ctx context.Context, i int)
		next = func(ctx context.Context, i int) {
			if !readerCtx {
				ctx = context.Background()
			}
			err := client.Go(ctx, "Sum", sumArgs(i, 1), func(ctx context.Context, reply *box.Box, err error) {
				if err != nil {
					t.Errorf("call %d: %v", i, err)
					finished <- i
					return
				}
				total, _ := strconv.Atoi(reply.GetString("total"))
				if total != i+1 {
					t.Errorf("call %d: total %d", i, total)
				}
				if total == n {
					finished <- total
					return
				}
				next(ctx, total)
			})
			if err != nil {
				t.Errorf("Go %d: %v", i, err)
				finished <- i
			}
		}
		next(context.Background(), 0)
		select {
		case v := <-finished:
			require.Equal(t, n, v, "reader context %v", readerCtx)
		case <-time.After(20 * time.Second):
			t.Fatalf("the chain of calls stalled (reader context %v)", readerCtx)
		}
	}
}

func TestGoErrorAnswers(t *testing.T) {
	client, _ := pair(t, tcpPair, &conn.Config{Logger: quietLogger()})
	errc := make(chan error, 2)
	var args box.Box
	args.SetString("numerator", "1")
	args.SetString("denominator", "0")
	require.NoError(t, client.Go(ctxT(t), "Divide", &args, func(_ context.Context, _ *box.Box, err error) { errc <- err }))
	err := <-errc
	var re *amp.RemoteError
	require.ErrorAs(t, err, &re)
	require.Equal(t, "ZERO_DIVISION", re.Code)
	require.NoError(t, client.Go(ctxT(t), "NoSuchCommand", &box.Box{}, func(_ context.Context, _ *box.Box, err error) { errc <- err }))
	require.ErrorIs(t, <-errc, amp.ErrUnhandledCommand)
}

// Calls still in flight when the connection ends get a *LostError, once;
// Go after that fails at once and never calls done.
func TestGoLostOnClose(t *testing.T) {
	client, _ := pair(t, tcpPair, nil)
	const n = 20
	var wg sync.WaitGroup
	wg.Add(n)
	var lost atomic.Int32
	for range n {
		args := demo.SlowArgs{Delay: 30}
		var b box.Box
		require.NoError(t, demo.Slow.EncodeArgs(&b, &args, nil))
		require.NoError(t, client.Go(ctxT(t), demo.Slow.Name(), &b, func(_ context.Context, _ *box.Box, err error) {
			defer wg.Done()
			var le *conn.LostError
			if errors.As(err, &le) && errors.Is(err, conn.ErrConnectionLost) {
				lost.Add(1)
			} else {
				t.Errorf("got %v, want a LostError", err)
			}
		}))
	}
	client.Close()
	wg.Wait()
	require.EqualValues(t, n, lost.Load())
	err := client.Go(ctxT(t), "Sum", sumArgs(1, 2), func(context.Context, *box.Box, error) { t.Error("done called after a refused Go") })
	require.ErrorIs(t, err, conn.ErrConnectionLost)
}

// A callback that sends more calls than the write buffer holds must not
// wait forever for room that only the writer can make. With the reader's
// token (its ctx) its calls never wait: they go past MaxWriteBuffer up to
// MaxWriteQueue (64 KiB here, which the burst fits), and past it fail at
// once with ErrWriteQueueFull (TestGoFromCallbackPastWriteQueue); with
// another context they wait for the writer, which makes room.
func TestGoBurstFromCallbackBeyondWriteBuffer(t *testing.T) {
	for _, readerCtx := range []bool{true, false} {
		t.Run(map[bool]string{true: "reader context", false: "other context"}[readerCtx], func(t *testing.T) {
			burstFromCallback(t, readerCtx)
		})
	}
}

func burstFromCallback(t *testing.T, readerCtx bool) {
	a, b := tcpPair(t)
	server := conn.New(b, &conn.Config{Handler: demoMux(), Logger: quietLogger()})
	client := conn.New(a, &conn.Config{MaxWriteBuffer: 1024, MaxWriteQueue: 64 << 10, Logger: quietLogger()})
	t.Cleanup(func() {
		client.Close()
		server.Close()
	})
	const n = 500
	var wg sync.WaitGroup
	wg.Add(n)
	count := func(_ context.Context, _ *box.Box, err error) {
		if err != nil {
			t.Errorf("burst call: %v", err)
		}
		wg.Done()
	}
	first := make(chan error, 1)
	err := client.Go(ctxT(t), "Sum", sumArgs(1, 2), func(ctx context.Context, _ *box.Box, err error) {
		if !readerCtx {
			ctx = context.Background()
		}
		for i := range n {
			if err := client.Go(ctx, "Sum", sumArgs(i, i), count); err != nil {
				t.Errorf("Go %d: %v", i, err)
				wg.Done()
			}
		}
		first <- err
	})
	require.NoError(t, err)
	done := make(chan struct{})
	go func() {
		wg.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		t.Fatal("calls sent from a callback stalled behind a full write buffer")
	}
	require.NoError(t, <-first)
}

// A callback's calls past MaxWriteQueue fail at once with
// ErrWriteQueueFull, without a wait (the reader reads nothing while it
// waits) and without closing the connection; those before it are sent
// and answered, and calls go on afterwards.
func TestGoFromCallbackPastWriteQueue(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		a, b := net.Pipe()
		server := conn.New(b, &conn.Config{Handler: demoMux(), Logger: quietLogger()})
		client := conn.New(a, &conn.Config{MaxWriteBuffer: 1024, MaxWriteQueue: 4096, Logger: quietLogger()})
		defer server.Close()
		defer client.Close()
		const n = 500
		var answered, refused atomic.Int32
		var wg sync.WaitGroup
		wg.Add(1)
		err := client.Go(context.Background(), "Sum", sumArgs(1, 2), func(ctx context.Context, _ *box.Box, err error) {
			defer wg.Done()
			start := time.Now()
			for i := range n {
				wg.Add(1)
				err := client.Go(ctx, "Sum", sumArgs(i, i), func(_ context.Context, _ *box.Box, err error) {
					if err != nil {
						t.Errorf("a call sent from the callback: %v", err)
					}
					answered.Add(1)
					wg.Done()
				})
				if err != nil {
					if !errors.Is(err, conn.ErrWriteQueueFull) {
						t.Errorf("Go %d: %v", i, err)
					}
					refused.Add(1)
					wg.Done()
				}
			}
			if d := time.Since(start); d != 0 {
				t.Errorf("the callback's calls waited %v", d)
			}
		})
		if err != nil {
			t.Fatal(err)
		}
		wg.Wait()
		if refused.Load() == 0 || answered.Load() == 0 || answered.Load()+refused.Load() != n {
			t.Errorf("%d answered, %d refused of %d", answered.Load(), refused.Load(), n)
		}
		if _, err := client.Call(context.Background(), "Sum", sumArgs(1, 2)); err != nil {
			t.Errorf("a call afterwards: %v", err)
		}
	})
}

// Connections closing while other goroutines make Go calls on them (and
// on another connection) neither race nor mix their calls up: every done
// runs once, with the right answer or a LostError.
func TestGoWhileClosing(t *testing.T) {
	for round := range 20 {
		c1, _ := pair(t, tcpPair, nil)
		c2, _ := pair(t, tcpPair, nil)
		var wg sync.WaitGroup
		var calls sync.WaitGroup
		for g := range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range 200 {
					c := c1
					if (g+i)%2 == 0 {
						c = c2
					}
					x := g*1000 + i
					calls.Add(1)
					err := c.Go(context.Background(), "Sum", sumArgs(x, 1), func(_ context.Context, reply *box.Box, err error) {
						defer calls.Done()
						if err != nil {
							if !errors.Is(err, conn.ErrConnectionLost) {
								t.Errorf("round %d: %v", round, err)
							}
							return
						}
						if got := reply.GetString("total"); got != strconv.Itoa(x+1) {
							t.Errorf("round %d: Sum(%d, 1) answered %s", round, x, got)
						}
					})
					if err != nil {
						calls.Done()
					}
				}
			}()
		}
		for range round % 5 * 50 { // vary where the close lands
			runtime.Gosched()
		}
		c1.Close()
		wg.Wait()
		finished := make(chan struct{})
		go func() {
			calls.Wait()
			close(finished)
		}()
		select {
		case <-finished:
		case <-time.After(20 * time.Second):
			t.Fatalf("round %d: some done callbacks never ran", round)
		}
	}
}

// Arguments that carry the keys the connection adds are refused before
// anything is sent, by every way of sending; the connection goes on.
func TestReservedKeysInArguments(t *testing.T) {
	client, _ := pair(t, tcpPair, nil)
	ctx := ctxT(t)
	for _, key := range []string{"_ask", "_command"} {
		args := sumArgs(1, 2)
		args.SetString(key, "x")
		var reply box.Box
		require.ErrorIs(t, client.CallBox(ctx, "Sum", args, &reply), box.ErrDuplicateKey, key)
		require.ErrorIs(t, client.Go(ctx, "Sum", args, func(context.Context, *box.Box, error) { t.Error("done called") }), box.ErrDuplicateKey)
	}
	args := sumArgs(1, 2)
	args.SetString("_command", "Other")
	require.ErrorIs(t, client.SendBox(ctx, "Sum", args), box.ErrDuplicateKey)
	var reply box.Box
	require.NoError(t, client.CallBox(ctx, "Sum", sumArgs(1, 2), &reply))
	require.Equal(t, "3", reply.GetString("total"))
}
