package amp_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/ampmux/ampmux/amp"
	"github.com/ampmux/ampmux/amp/box"
	"github.com/ampmux/ampmux/amp/conn"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type addArgs struct {
	A int64 `amp:"a"`
	B int64 `amp:"b"`
}

type addReply struct {
	Total int64 `amp:"total"`
}

type textArgs struct {
	Text string `amp:"text"`
}

var (
	errAddOverflow = errors.New("sum overflows int64")

	add = amp.NewCommand[addArgs, addReply]("Sum", amp.Spec{
		Errors: map[string]error{"OVERFLOW": errAddOverflow},
	})
	// Every command below is answered by goMux, except missing.
	badReply = amp.NewCommand[addArgs, addReply]("BadReply", amp.Spec{})
	broken   = amp.NewCommand[addArgs, addReply]("Broken", amp.Spec{})
	missing  = amp.NewCommand[addArgs, addReply]("Missing", amp.Spec{})
	notify   = amp.NewCommand[textArgs, struct{}]("Notify", amp.Spec{NoAnswer: true})
)

type goEnv struct {
	addr     string
	srv      *conn.Server
	notified chan string
}

func quietLog() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// newGoEnv serves the commands above on a loopback TCP port.
func newGoEnv(t *testing.T) *goEnv {
	e := &goEnv{notified: make(chan string, 1)}
	m := amp.NewMux()
	amp.HandleInline(m, add, func(_ context.Context, a addArgs) (addReply, error) {
		s := a.A + a.B
		if (s > a.A) != (a.B > 0) {
			return addReply{}, errAddOverflow
		}
		return addReply{Total: s}, nil
	})
	m.HandleBoxInline("BadReply", func(_ context.Context, _, resp *box.Box) error {
		resp.SetString("total", "forty-two")
		return nil
	})
	amp.HandleInline(m, broken, func(context.Context, addArgs) (addReply, error) {
		return addReply{}, errors.New("not declared")
	})
	amp.HandleInline(m, notify, func(_ context.Context, a textArgs) (struct{}, error) {
		e.notified <- a.Text
		return struct{}{}, nil
	})
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	e.srv = &conn.Server{Config: conn.Config{Handler: m, Logger: quietLog()}}
	served := make(chan struct{})
	go func() {
		defer close(served)
		e.srv.Serve(l)
	}()
	t.Cleanup(func() {
		e.srv.Close()
		<-served
	})
	e.addr = l.Addr().String()
	return e
}

func (e *goEnv) dial(t *testing.T) *conn.Conn {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := conn.Dial(ctx, "tcp", e.addr, &conn.Config{Logger: quietLog()})
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	return c
}

type goResult struct {
	r   addReply
	err error
}

// goWait makes one Go call and waits for its done.
func goWait(t *testing.T, c amp.AsyncCaller, cmd *amp.Command[addArgs, addReply], args addArgs) goResult {
	t.Helper()
	res := make(chan goResult, 1)
	err := cmd.Go(context.Background(), c, args, func(_ context.Context, r addReply, err error) { res <- goResult{r, err} })
	require.NoError(t, err)
	select {
	case got := <-res:
		return got
	case <-time.After(10 * time.Second):
		t.Fatal("done was not called")
		return goResult{}
	}
}

// Each answer reaches done as Call would return it.
func TestCommandGoAnswers(t *testing.T) {
	e := newGoEnv(t)
	tests := []struct {
		name  string
		cmd   *amp.Command[addArgs, addReply]
		args  addArgs
		total int64
		is    error  // errors.Is the error given to done
		code  string // of the *amp.RemoteError, if one
	}{
		{"answer", add, addArgs{A: 13, B: 81}, 94, nil, ""},
		{"negative", add, addArgs{A: -13, B: 81}, 68, nil, ""},
		{"declared error", add, addArgs{A: 1 << 62, B: 1 << 62}, 0, errAddOverflow, "OVERFLOW"},
		{"unknown command", missing, addArgs{}, 0, amp.ErrUnhandledCommand, amp.CodeUnhandled},
		{"undeclared error", broken, addArgs{}, 0, amp.ErrUnknownRemote, amp.CodeUnknown},
		{"reply does not decode", badReply, addArgs{}, 0, amp.ErrInvalidValue, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := e.dial(t)
			got := goWait(t, c, tt.cmd, tt.args)
			if tt.is == nil {
				require.NoError(t, got.err)
				require.Equal(t, tt.total, got.r.Total)
				// The same through Call, which Go must match.
				r, err := tt.cmd.Call(context.Background(), c, tt.args)
				require.NoError(t, err)
				require.Equal(t, r, got.r)
				return
			}
			require.ErrorIs(t, got.err, tt.is)
			var re *amp.RemoteError
			if tt.code == "" {
				var ae *amp.ArgumentError
				require.ErrorAs(t, got.err, &ae)
				require.Equal(t, tt.cmd.Name(), ae.Command)
				require.False(t, errors.As(got.err, &re))
				return
			}
			require.ErrorAs(t, got.err, &re)
			require.Equal(t, tt.code, re.Code)
		})
	}
}

// A Go that returns an error sent nothing, and its done never runs.
func TestCommandGoNotSent(t *testing.T) {
	e := newGoEnv(t)
	tests := []struct {
		name   string
		closed bool
		text   string
		is     error
	}{
		{"closed connection", true, "hi", conn.ErrConnectionLost},
		{"argument does not encode", false, "\xff", amp.ErrInvalidValue},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := e.dial(t)
			if tt.closed {
				c.Close()
			}
			echo := amp.NewCommand[textArgs, textArgs]("Echo", amp.Spec{})
			err := echo.Go(context.Background(), c, textArgs{Text: tt.text}, func(context.Context, textArgs, error) {
				t.Error("done called for a call that was not sent")
			})
			require.ErrorIs(t, err, tt.is)
			if !tt.closed {
				var ae *amp.ArgumentError
				require.ErrorAs(t, err, &ae)
				require.Equal(t, "Echo", ae.Command)
				require.NoError(t, goWait(t, c, add, addArgs{A: 1, B: 2}).err, "the connection still works")
			}
		})
	}
}

// A call still waiting when the connection goes gets the loss in done:
// the peer reads the call and hangs up without answering.
func TestCommandGoConnectionLost(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer l.Close()
	hungUp := make(chan error, 1)
	go func() {
		nc, err := l.Accept()
		if err == nil {
			_, err = nc.Read(make([]byte, 1)) // the call has arrived
			nc.Close()
		}
		hungUp <- err
	}()
	c, err := conn.Dial(context.Background(), "tcp", l.Addr().String(), &conn.Config{Logger: quietLog()})
	require.NoError(t, err)
	defer c.Close()
	res := make(chan goResult, 1)
	require.NoError(t, add.Go(context.Background(), c, addArgs{A: 1, B: 2}, func(_ context.Context, r addReply, err error) {
		res <- goResult{r, err}
	}))
	require.NoError(t, <-hungUp)
	got := <-res
	require.ErrorIs(t, got.err, conn.ErrConnectionLost)
	var lost *conn.LostError
	require.ErrorAs(t, got.err, &lost)
	require.Zero(t, got.r)
	// Later calls are refused at once, and their done never runs.
	<-c.Done()
	err = add.Go(context.Background(), c, addArgs{}, func(context.Context, addReply, error) { t.Error("done called") })
	require.ErrorIs(t, err, conn.ErrConnectionLost)
}

// A NoAnswer command is queued, and done runs before Go returns.
func TestCommandGoNoAnswer(t *testing.T) {
	e := newGoEnv(t)
	c := e.dial(t)
	called, doneErr := false, errors.New("not called")
	require.NoError(t, notify.Go(context.Background(), c, textArgs{Text: "hi"}, func(_ context.Context, _ struct{}, err error) {
		called, doneErr = true, err
	}))
	require.True(t, called)
	require.NoError(t, doneErr)
	require.Equal(t, "hi", <-e.notified)
}

// Many calls in flight from one goroutine, and chains of calls made from
// done callbacks: each done gets its own answer.
func TestCommandGoPipelined(t *testing.T) {
	e := newGoEnv(t)
	c := e.dial(t)
	const n, chains, depth = 2000, 8, 50
	got := make([]int64, n)
	var wg sync.WaitGroup
	wg.Add(n + chains)
	for i := range n {
		err := add.Go(context.Background(), c, addArgs{A: int64(i), B: 1000}, func(_ context.Context, r addReply, err error) {
			defer wg.Done()
			if err != nil {
				t.Errorf("call %d: %v", i, err)
			}
			got[i] = r.Total
		})
		require.NoError(t, err)
	}
	var next func(ctx context.Context, chain int, total int64)
	next = func(ctx context.Context, chain int, total int64) {
		err := add.Go(ctx, c, addArgs{A: total, B: 1}, func(ctx context.Context, r addReply, err error) {
			switch {
			case err != nil:
				t.Errorf("chain %d: %v", chain, err)
				wg.Done()
			case r.Total == depth:
				wg.Done()
			default:
				next(ctx, chain, r.Total) // the reader's context: no hand-off
			}
		})
		if err != nil {
			t.Errorf("chain %d at %d: %v", chain, total, err)
			wg.Done()
		}
	}
	for i := range chains {
		next(context.Background(), i, 0)
	}
	wg.Wait()
	for i, v := range got {
		require.Equal(t, int64(i+1000), v, "call %d", i)
	}
}

func BenchmarkCommandGo(b *testing.B) {
	m := amp.NewMux()
	amp.HandleInline(m, add, func(_ context.Context, a addArgs) (addReply, error) {
		return addReply{Total: a.A + a.B}, nil
	})
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(b, err)
	srv := &conn.Server{Config: conn.Config{Handler: m, Logger: quietLog()}}
	go srv.Serve(l)
	defer srv.Close()
	c, err := conn.Dial(context.Background(), "tcp", l.Addr().String(), nil)
	require.NoError(b, err)
	defer c.Close()
	var wg sync.WaitGroup
	done := func(_ context.Context, r addReply, err error) {
		if err != nil || r.Total != 94 {
			b.Errorf("%v %v", r, err)
		}
		wg.Done()
	}
	b.ReportAllocs()
	for b.Loop() {
		wg.Add(1)
		if err := add.Go(context.Background(), c, addArgs{A: 13, B: 81}, done); err != nil {
			b.Fatal(err)
		}
		wg.Wait()
	}
}
