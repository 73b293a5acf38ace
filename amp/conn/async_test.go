package conn_test

import (
	"context"
	"errors"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
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
			err := client.Go(ctxT(t), "Sum", sumArgs(i, 1000), func(reply *box.Box, err error) {
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
		client, _ := pair(t, mk, nil)
		const n = 2000
		finished := make(chan int, 1)
		var next func(i int)
		next = func(i int) {
			err := client.Go(context.Background(), "Sum", sumArgs(i, 1), func(reply *box.Box, err error) {
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
				next(total)
			})
			if err != nil {
				t.Errorf("Go %d: %v", i, err)
				finished <- i
			}
		}
		next(0)
		select {
		case v := <-finished:
			require.Equal(t, n, v)
		case <-time.After(20 * time.Second):
			t.Fatal("the chain of calls stalled")
		}
	})
}

func TestGoErrorAnswers(t *testing.T) {
	client, _ := pair(t, tcpPair, &conn.Config{Logger: quietLogger()})
	errc := make(chan error, 2)
	var args box.Box
	args.SetString("numerator", "1")
	args.SetString("denominator", "0")
	require.NoError(t, client.Go(ctxT(t), "Divide", &args, func(_ *box.Box, err error) { errc <- err }))
	err := <-errc
	var re *amp.RemoteError
	require.ErrorAs(t, err, &re)
	require.Equal(t, "ZERO_DIVISION", re.Code)
	require.NoError(t, client.Go(ctxT(t), "NoSuchCommand", &box.Box{}, func(_ *box.Box, err error) { errc <- err }))
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
		require.NoError(t, client.Go(ctxT(t), demo.Slow.Name(), &b, func(_ *box.Box, err error) {
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
	err := client.Go(ctxT(t), "Sum", sumArgs(1, 2), func(*box.Box, error) { t.Error("done called after a refused Go") })
	require.ErrorIs(t, err, conn.ErrConnectionLost)
}
