package conn_test

import (
	"context"
	"errors"
	"io"
	"math/big"
	"net"
	"os"
	"slices"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/ampmux/ampmux/amp"
	"github.com/ampmux/ampmux/amp/box"
	"github.com/ampmux/ampmux/amp/conn"
	"github.com/ampmux/ampmux/internal/demo"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// transports lists the ways tests connect two ends.
var transports = map[string]func(t *testing.T) (net.Conn, net.Conn){
	"pipe": func(t *testing.T) (net.Conn, net.Conn) { return net.Pipe() },
	"tcp":  tcpPair,
}

func tcpPair(t *testing.T) (net.Conn, net.Conn) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer l.Close()
	ch := make(chan net.Conn, 1)
	go func() {
		c, _ := l.Accept()
		ch <- c
	}()
	a, err := net.Dial("tcp", l.Addr().String())
	require.NoError(t, err)
	b := <-ch
	require.NotNil(t, b)
	return a, b
}

func demoMux() *amp.Mux {
	m := amp.NewMux()
	demo.Register(m)
	return m
}

// pair returns a client Conn talking to a server Conn serving the demo
// commands; both are closed at cleanup.
func pair(t *testing.T, mk func(*testing.T) (net.Conn, net.Conn), serverCfg *conn.Config) (client, server *conn.Conn) {
	a, b := mk(t)
	if serverCfg == nil {
		serverCfg = &conn.Config{Logger: quietLogger()}
	}
	if serverCfg.Handler == nil {
		serverCfg.Handler = demoMux()
	}
	return startPair(t, a, b, nil, serverCfg)
}

// startPair starts a client Conn on a and a server Conn on b, closed (and
// their goroutines gone) at cleanup.
func startPair(t *testing.T, a, b net.Conn, clientCfg, serverCfg *conn.Config) (client, server *conn.Conn) {
	server = conn.New(b, serverCfg)
	client = conn.New(a, clientCfg)
	t.Cleanup(func() {
		client.Close()
		server.Close()
		<-client.Done()
		<-server.Done()
	})
	return client, server
}

func forEachTransport(t *testing.T, f func(t *testing.T, mk func(*testing.T) (net.Conn, net.Conn))) {
	for name, mk := range transports {
		t.Run(name, func(t *testing.T) { f(t, mk) })
	}
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestTypedCalls(t *testing.T) {
	forEachTransport(t, func(t *testing.T, mk func(*testing.T) (net.Conn, net.Conn)) {
		client, _ := pair(t, mk, nil)
		ctx := ctxT(t)
		r, err := demo.Sum.Call(ctx, client, demo.SumArgs{A: big.NewInt(13), B: big.NewInt(81)})
		require.NoError(t, err)
		require.Equal(t, "94", r.Total.String())

		huge, _ := new(big.Int).SetString("-1"+string(make([]byte, 0))+"000000000000000000000000000000000000000000", 10)
		r, err = demo.Sum.Call(ctx, client, demo.SumArgs{A: huge, B: big.NewInt(1)})
		require.NoError(t, err)
		require.Equal(t, new(big.Int).Add(huge, big.NewInt(1)), r.Total)

		d, err := demo.Divide.Call(ctx, client, demo.DivideArgs{Numerator: 1, Denominator: 4})
		require.NoError(t, err)
		require.Equal(t, 0.25, d.Result)

		_, err = demo.Divide.Call(ctx, client, demo.DivideArgs{Numerator: 1234, Denominator: 0})
		require.ErrorIs(t, err, demo.ErrZeroDivision)
		var re *amp.RemoteError
		require.ErrorAs(t, err, &re)
		require.Equal(t, "ZERO_DIVISION", re.Code)
		require.Equal(t, "division by zero", re.Description)
	})
}

func TestRawCallBox(t *testing.T) {
	forEachTransport(t, func(t *testing.T, mk func(*testing.T) (net.Conn, net.Conn)) {
		client, _ := pair(t, mk, nil)
		ctx := ctxT(t)
		reply, err := client.Call(ctx, "Sum", box.FromMap(map[string]string{"a": "2", "b": "40"}))
		require.NoError(t, err)
		require.Equal(t, "42", reply.GetString("total"))
		require.True(t, reply.Has(amp.KeyAnswer))

		_, err = client.Call(ctx, "NoSuchCommand", &box.Box{})
		require.ErrorIs(t, err, amp.ErrUnhandledCommand)
		var re *amp.RemoteError
		require.ErrorAs(t, err, &re)
		require.Equal(t, amp.CodeUnhandled, re.Code)
		require.Equal(t, "Unhandled Command: b'NoSuchCommand'", re.Description)

		// A value the schema rejects is an error answer, and the
		// connection goes on.
		_, err = client.Call(ctx, "Sum", box.FromMap(map[string]string{"a": "x", "b": "1"}))
		require.ErrorAs(t, err, &re)
		require.Equal(t, amp.CodeUnknown, re.Code)
		require.Contains(t, re.Description, "Sum.a")

		reply, err = client.Call(ctx, "Sum", box.FromMap(map[string]string{"a": "1", "b": "1"}))
		require.NoError(t, err)
		require.Equal(t, "2", reply.GetString("total"))
	})
}

func TestFatalAndUndeclaredErrorsCloseTheConnection(t *testing.T) {
	for _, tc := range []struct {
		kind string
		is   error
		code string
	}{
		{"fatal", demo.ErrFatal, "FATAL_FAILURE"},
		{"undeclared", amp.ErrUnknownRemote, amp.CodeUnknown},
	} {
		t.Run(tc.kind, func(t *testing.T) {
			forEachTransport(t, func(t *testing.T, mk func(*testing.T) (net.Conn, net.Conn)) {
				client, _ := pair(t, mk, &conn.Config{Logger: quietLogger()})
				ctx := ctxT(t)
				_, err := demo.Fail.Call(ctx, client, demo.FailArgs{Kind: tc.kind})
				require.ErrorIs(t, err, tc.is)
				var re *amp.RemoteError
				require.ErrorAs(t, err, &re)
				require.Equal(t, tc.code, re.Code)
				select {
				case <-client.Done():
				case <-time.After(5 * time.Second):
					t.Fatal("connection not closed after fatal error")
				}
				_, err = demo.Sum.Call(ctx, client, demo.SumArgs{A: big.NewInt(1), B: big.NewInt(1)})
				require.ErrorIs(t, err, conn.ErrConnectionLost)
			})
		})
	}
}

func TestDeclaredErrorKeepsConnection(t *testing.T) {
	client, _ := pair(t, transports["tcp"], nil)
	ctx := ctxT(t)
	_, err := demo.Fail.Call(ctx, client, demo.FailArgs{Kind: "declared"})
	require.ErrorIs(t, err, demo.ErrDeclared)
	_, err = demo.Sum.Call(ctx, client, demo.SumArgs{A: big.NewInt(1), B: big.NewInt(1)})
	require.NoError(t, err)
}

func TestNoAnswerCommands(t *testing.T) {
	client, _ := pair(t, transports["tcp"], nil)
	ctx := ctxT(t)
	var want []string
	for i := range 100 {
		msg := "n" + big.NewInt(int64(i)).String()
		want = append(want, msg)
		_, err := demo.Notify.Call(ctx, client, demo.NotifyArgs{Message: msg})
		require.NoError(t, err)
	}
	got, err := demo.GetNotes.Call(ctx, client, struct{}{})
	require.NoError(t, err)
	require.Equal(t, want, got.Notes)
}

func TestManyConcurrentCalls(t *testing.T) {
	forEachTransport(t, func(t *testing.T, mk func(*testing.T) (net.Conn, net.Conn)) {
		client, _ := pair(t, mk, nil)
		ctx := ctxT(t)
		var wg sync.WaitGroup
		errs := make(chan error, 2000)
		for i := range 2000 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				r, err := demo.Sum.Call(ctx, client, demo.SumArgs{A: big.NewInt(int64(i)), B: big.NewInt(int64(i))})
				if err == nil && r.Total.Int64() != int64(2*i) {
					err = errors.New("wrong total " + r.Total.String())
				}
				if err != nil {
					errs <- err
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
	})
}

func TestAnswersOutOfOrder(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		client, _ := bubblePair(t, &conn.Config{}, &conn.Config{Handler: demoMux()})
		order := make(chan float64, 2)
		var wg sync.WaitGroup
		for _, d := range []float64{0.3, 0} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				r, err := demo.Slow.Call(context.Background(), client, demo.SlowArgs{Delay: d})
				if err != nil {
					t.Error(err)
					return
				}
				order <- r.Slept
			}()
			synctest.Wait() // the slow one is asked first
		}
		wg.Wait()
		close(order)
		var got []float64
		for v := range order {
			got = append(got, v)
		}
		if want := []float64{0, 0.3}; !slices.Equal(got, want) {
			t.Errorf("answers came as %v, want %v", got, want)
		}
	})
}

func TestCancelledCallDropsLateAnswer(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		client, _ := bubblePair(t, &conn.Config{}, &conn.Config{Handler: demoMux()})
		short, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		defer cancel()
		start := time.Now()
		_, err := demo.Slow.Call(short, client, demo.SlowArgs{Delay: 0.3})
		if !errors.Is(err, context.DeadlineExceeded) || time.Since(start) != 50*time.Millisecond {
			t.Fatalf("Slow: %v after %v, want the deadline at 50ms", err, time.Since(start))
		}
		time.Sleep(time.Second) // on the bubble's clock: the late answer arrives
		synctest.Wait()         // and is dropped
		r, err := demo.Sum.Call(context.Background(), client, demo.SumArgs{A: big.NewInt(2), B: big.NewInt(3)})
		if err != nil || r.Total.Int64() != 5 {
			t.Fatalf("Sum after the late answer: %v %v", r.Total, err)
		}
		if err := client.Err(); err != nil {
			t.Error(err)
		}
	})
}

// holdMux serves Hold, which closes arrived and returns when its context
// ends (the connection closing) or release is closed.
func holdMux(arrived, release chan struct{}) *amp.Mux {
	m := demoMux()
	m.HandleBox("Hold", func(ctx context.Context, req, resp *box.Box) error {
		close(arrived)
		select {
		case <-release:
		case <-ctx.Done():
		}
		return nil
	})
	return m
}

func TestCloseFailsPendingCalls(t *testing.T) {
	forEachTransport(t, func(t *testing.T, mk func(*testing.T) (net.Conn, net.Conn)) {
		arrived := make(chan struct{})
		client, _ := pair(t, mk, &conn.Config{Logger: quietLogger(), Handler: holdMux(arrived, nil)})
		ctx := ctxT(t)
		errc := make(chan error, 1)
		go func() {
			_, err := client.Call(ctx, "Hold", &box.Box{})
			errc <- err
		}()
		<-arrived // the call is pending
		require.NoError(t, client.Close())
		err := <-errc
		require.ErrorIs(t, err, conn.ErrConnectionLost)
		require.ErrorIs(t, err, net.ErrClosed)
		_, err = client.Call(ctx, "Sum", &box.Box{})
		require.ErrorIs(t, err, conn.ErrConnectionLost)
	})
}

func TestPeerDropsMidCall(t *testing.T) {
	forEachTransport(t, func(t *testing.T, mk func(*testing.T) (net.Conn, net.Conn)) {
		a, b := mk(t)
		client := conn.New(a, nil)
		t.Cleanup(func() { client.Close() })
		go func() {
			buf := make([]byte, 100)
			b.Read(buf) // the request arrives; then the peer hangs up
			b.Close()
		}()
		_, err := client.Call(ctxT(t), "Sum", box.FromMap(map[string]string{"a": "1"}))
		require.ErrorIs(t, err, conn.ErrConnectionLost)
		<-client.Done()
	})
}

// rawPeer writes stream to a server conn and returns the error that ended
// it, as reported to OnError.
func rawPeer(t *testing.T, stream string, hangUp bool) error {
	a, b := net.Pipe()
	errc := make(chan error, 1)
	c := conn.New(b, &conn.Config{Handler: demoMux(), Logger: quietLogger(),
		OnError: func(_ *conn.Conn, err error) { errc <- err }})
	go func() {
		a.Write([]byte(stream))
		if hangUp {
			a.Close()
		}
		io.Copy(io.Discard, a)
	}()
	var err error
	select {
	case err = <-errc:
	case <-time.After(5 * time.Second):
		t.Fatal("bad input did not end the connection")
	}
	c.Close()
	a.Close()
	return err
}

func TestBadInputClosesOnlyThatConnection(t *testing.T) {
	// A healthy connection on the side must not notice.
	healthy, _ := pair(t, transports["tcp"], nil)
	tests := []struct {
		name   string
		stream string
		is     error
	}{
		{"empty box", "\x00\x00", conn.ErrEmptyBox},
		{"box without kind", "\x00\x01a\x00\x01b\x00\x00", conn.ErrEmptyBox},
		{"unknown tag", "\x00\x07_answer\x00\x0299\x00\x00", conn.ErrUnknownTag},
		{"non-hex tag", "\x00\x07_answer\x00\x02zz\x00\x00", conn.ErrUnknownTag},
		{"error without code", "\x00\x06_error\x00\x011\x00\x00", conn.ErrUnknownTag},
		{"key too long", "\x01\x00", nil},
		{"duplicate key", "\x00\x01a\x00\x00\x00\x01a\x00\x00\x00\x00", box.ErrDuplicateKey},
		{"truncated", "\x00\x08_command\x00", io.ErrUnexpectedEOF},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := rawPeer(t, tt.stream, tt.is == io.ErrUnexpectedEOF)
			var pe *conn.ProtocolError
			require.ErrorAs(t, err, &pe, "got %v", err)
			if tt.is != nil {
				require.ErrorIs(t, err, tt.is)
			}
			var tl *box.TooLongError
			if tt.name == "key too long" {
				require.ErrorAs(t, err, &tl)
			}
		})
	}
	_, err := demo.Sum.Call(ctxT(t), healthy, demo.SumArgs{A: big.NewInt(1), B: big.NewInt(2)})
	require.NoError(t, err)
}

func TestServerShutdownDrains(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	arrived, release := make(chan struct{}), make(chan struct{})
	srv := &conn.Server{Config: conn.Config{Handler: holdMux(arrived, release)}}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(l) }()
	client, err := conn.Dial(ctxT(t), "tcp", l.Addr().String(), nil)
	require.NoError(t, err)
	defer client.Close()
	res := make(chan error, 1)
	go func() {
		_, err := client.Call(context.Background(), "Hold", &box.Box{})
		res <- err
	}()
	<-arrived
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	shut := make(chan error, 1)
	go func() { shut <- srv.Shutdown(sctx) }()
	require.ErrorIs(t, <-served, conn.ErrServerClosed) // Shutdown has begun
	close(release)
	require.NoError(t, <-shut)
	require.NoError(t, <-res, "the call in flight finished")
	select {
	case <-client.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("server did not close the drained connection")
	}
	_, err = net.Dial("tcp", l.Addr().String())
	require.Error(t, err, "no longer accepting")
}

func TestServerClose(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	srv := &conn.Server{Config: conn.Config{Handler: demoMux()}}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(l) }()
	client, err := conn.Dial(ctxT(t), "tcp", l.Addr().String(), nil)
	require.NoError(t, err)
	defer client.Close()
	_, err = demo.Sum.Call(ctxT(t), client, demo.SumArgs{A: big.NewInt(1), B: big.NewInt(2)})
	require.NoError(t, err)
	require.NoError(t, srv.Close())
	require.ErrorIs(t, <-served, conn.ErrServerClosed)
	<-client.Done()
}

func TestStalledBoxTimesOut(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		a, b := net.Pipe()
		errc := make(chan error, 1)
		c := conn.New(b, &conn.Config{Handler: demoMux(), Logger: quietLogger(), BoxTimeout: 200 * time.Millisecond,
			OnError: func(_ *conn.Conn, err error) { errc <- err }})
		defer c.Close()
		defer a.Close()
		go io.Copy(io.Discard, a) // the answers
		// A whole box, an idle pause longer than the box timeout, then half a box.
		if _, err := a.Write([]byte("\x00\x08_command\x00\x03Sum\x00\x04_ask\x00\x011\x00\x01a\x00\x011\x00\x01b\x00\x011\x00\x00")); err != nil {
			t.Fatal(err)
		}
		time.Sleep(400 * time.Millisecond) // on the bubble's clock
		if err := c.Err(); err != nil {
			t.Fatalf("idle between boxes ended the connection: %v", err)
		}
		start := time.Now()
		a.Write([]byte("\x00\x08_comm"))
		err := <-errc
		if !errors.Is(err, os.ErrDeadlineExceeded) || time.Since(start) != 200*time.Millisecond {
			t.Errorf("stalled box: %v after %v, want a deadline error after 200ms", err, time.Since(start))
		}
	})
}
