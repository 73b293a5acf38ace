package conn_test

// Tests of issue 11's limits: the shared read buffer budget, the fields
// limit, the bound on what is queued for a peer that reads nothing, and
// overload answers.

import (
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"runtime"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ampmux/ampmux/amp"
	"github.com/ampmux/ampmux/amp/box"
	"github.com/ampmux/ampmux/amp/conn"
)

// echoMux answers Echo (inline) with the request's own fields.
func echoMux() *amp.Mux {
	m := amp.NewMux()
	m.HandleBoxInline("Echo", echoFields)
	return m
}

func echoFields(_ context.Context, req, resp *box.Box) error {
	for i := range req.Len() {
		if k := req.Key(i); len(k) == 0 || k[0] != '_' {
			resp.Set(string(k), req.Value(i))
		}
	}
	return nil
}

// fieldsOf returns n fields of size-byte values, keys v0000..., as wire
// bytes without the terminator: the body of a box that can be ended later.
func fieldsOf(n, size int) []byte {
	val := strings.Repeat("v", size)
	var out []byte
	for i := range n {
		key := fmt.Sprintf("v%04d", i)
		out = binary.BigEndian.AppendUint16(out, uint16(len(key)))
		out = append(out, key...)
		out = binary.BigEndian.AppendUint16(out, uint16(size))
		out = append(out, val...)
	}
	return out
}

// commandHead is the wire start of a call of command tagged tag.
func commandHead(command, tag string) []byte {
	var out []byte
	for _, kv := range [][2]string{{"_ask", tag}, {"_command", command}} {
		out = binary.BigEndian.AppendUint16(out, uint16(len(kv[0])))
		out = append(out, kv[0]...)
		out = binary.BigEndian.AppendUint16(out, uint16(len(kv[1])))
		out = append(out, kv[1]...)
	}
	return out
}

// endlessBox writes a box of 64 KiB values that never ends, until the
// other end stops reading or n bytes have gone.
func endlessBox(w io.Writer, n int) error {
	chunk := fieldsOf(1, box.MaxValueLength)
	if _, err := w.Write(commandHead("Echo", "1")); err != nil {
		return err
	}
	for i := 0; i*len(chunk) < n; i++ {
		binary.BigEndian.PutUint16(chunk[2:], uint16(i)) // distinct keys
		if _, err := w.Write(chunk); err != nil {
			return err
		}
	}
	return nil
}

// rawEnd is a Conn on one end of net.Pipe, driven from the other end.
type rawEnd struct {
	raw  net.Conn
	c    *conn.Conn
	errc chan error // the OnError error
	in   chan map[string]string
}

func newRawEnd(t *testing.T, cfg conn.Config) *rawEnd {
	a, b := net.Pipe()
	e := &rawEnd{raw: a, errc: make(chan error, 1), in: make(chan map[string]string, 64)}
	cfg.OnError = func(_ *conn.Conn, err error) { e.errc <- err }
	if cfg.Logger == nil {
		cfg.Logger = quietLogger()
	}
	e.c = conn.New(b, &cfg)
	go func() { // what the Conn sends
		defer close(e.in)
		dec := box.NewDecoder(a)
		var bx box.Box
		for dec.Next(&bx) == nil {
			e.in <- bx.Map()
		}
	}()
	t.Cleanup(func() {
		a.Close()
		e.c.Close()
	})
	return e
}

func (e *rawEnd) write(t *testing.T, p []byte) {
	t.Helper()
	if _, err := e.raw.Write(p); err != nil {
		t.Fatalf("write: %v", err)
	}
}

func TestBudget(t *testing.T) {
	t.Run("growth is drawn, then given back", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			budget := conn.NewBudget(1 << 20)
			e := newRawEnd(t, conn.Config{Handler: echoMux(), Budget: budget})
			e.write(t, commandHead("Echo", "1"))
			e.write(t, fieldsOf(8, 60000)) // 480 KB, unfinished
			synctest.Wait()
			if n := budget.InUse(); n < 400<<10 || n > 1<<20 {
				t.Fatalf("a box of 480 KB half read draws %d bytes", n)
			}
			e.write(t, []byte{0, 0})
			if got := <-e.in; len(got["v0007"]) != 60000 {
				t.Fatalf("answer %v", len(got))
			}
			e.write(t, rawBox(t, map[string]string{"_ask": "2", "_command": "Echo", "a": "b"}))
			if got := <-e.in; got["a"] != "b" {
				t.Fatalf("answer %v", got)
			}
			if n := budget.InUse(); n != 0 {
				t.Fatalf("after the large box: %d bytes still drawn", n)
			}
		})
	})
	t.Run("growth past the budget closes only that connection", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			budget := conn.NewBudget(512 << 10)
			cfg := conn.Config{Handler: echoMux(), Budget: budget}
			other, hog := newRawEnd(t, cfg), newRawEnd(t, cfg)
			other.write(t, commandHead("Echo", "1"))
			other.write(t, fieldsOf(4, 60000)) // holds part of the budget
			synctest.Wait()
			held := budget.InUse()
			go endlessBox(hog.raw, 16<<20)
			err := <-hog.errc
			require.ErrorIs(t, err, conn.ErrBufferBudget)
			require.True(t, strings.HasPrefix(err.Error(), "conn: "), err.Error())
			<-hog.c.Done()
			require.Equal(t, held, budget.InUse(), "the refused connection gave its share back")
			other.write(t, []byte{0, 0})
			got := <-other.in
			require.Len(t, got["v0003"], 60000, "the other connection is answered")
			require.NoError(t, other.c.Err())
		})
	})
	t.Run("trusted connections draw nothing", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			budget := conn.NewBudget(1)
			e := newRawEnd(t, conn.Config{Handler: echoMux(), Budget: budget,
				Trusted: func(*conn.Conn) bool { return true }})
			e.write(t, commandHead("Echo", "1"))
			e.write(t, fieldsOf(16, 60000))
			synctest.Wait()
			require.Zero(t, budget.InUse())
			e.write(t, []byte{0, 0})
			require.Len(t, (<-e.in)["v0015"], 60000)
		})
	})
	t.Run("no budget: MaxBoxSize alone", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			e := newRawEnd(t, conn.Config{Handler: echoMux(), MaxBoxSize: 1 << 20})
			go endlessBox(e.raw, 2<<20)
			require.ErrorIs(t, <-e.errc, box.ErrBoxTooLarge)
		})
	})
}

// The default Trusted: a client that proved itself with a certificate
// during StartTLS sends large boxes whatever the budget; one without is
// refused past its allowance.
func TestBudgetSparesVerifiedClients(t *testing.T) {
	p := newPKI(t)
	budget := conn.NewBudget(1)
	for _, withCert := range []bool{true, false} {
		t.Run(map[bool]string{true: "certificate", false: "no certificate"}[withCert], func(t *testing.T) {
			serverErrs := make(chan error, 1)
			a, b := tcpPair(t)
			clientTLS := p.clientTLS.Clone()
			clientTLS.ServerName = "localhost"
			if !withCert {
				clientTLS.Certificates = nil
			}
			client, _ := startPair(t, a, b, &conn.Config{Logger: quietLogger()}, &conn.Config{Handler: echoMux(), TLS: p.serverTLS,
				Budget: budget, Logger: quietLogger(), OnError: func(_ *conn.Conn, err error) { serverErrs <- err }})
			ctx := ctxT(t)
			require.NoError(t, client.StartTLS(ctx, clientTLS))
			args := new(box.Box)
			for i := range 20 {
				args.SetString(fmt.Sprintf("v%d", i), strings.Repeat("x", 60000))
			}
			reply, err := client.Call(ctx, "Echo", args)
			if withCert {
				require.NoError(t, err)
				require.Len(t, reply.GetString("v19"), 60000)
				return
			}
			require.ErrorIs(t, err, conn.ErrConnectionLost)
			require.ErrorIs(t, <-serverErrs, conn.ErrBufferBudget)
		})
	}
	require.Zero(t, budget.InUse())
}

// A Server without a Budget shares one of DefaultBudget among its
// connections: several never-ending boxes of the largest size, together
// past it, get the ones that do not fit refused, while a new call is
// answered.
func TestServerSharesDefaultBudget(t *testing.T) {
	const hogs = 6 // 6 × 16 MiB > 64 MiB
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	refused := make(chan error, hogs)
	srv := &conn.Server{Config: conn.Config{Handler: echoMux(), Logger: quietLogger(),
		OnError: func(_ *conn.Conn, err error) {
			if errors.Is(err, conn.ErrBufferBudget) {
				refused <- err
			}
		}}}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	var wg sync.WaitGroup
	for range hogs {
		nc, err := net.Dial("tcp", l.Addr().String())
		require.NoError(t, err)
		t.Cleanup(func() { nc.Close() })
		wg.Go(func() { endlessBox(nc, 16<<20-64<<10) })
	}
	select {
	case <-refused:
	case <-ctxT(t).Done():
		t.Fatal("no connection was refused")
	}
	c, err := conn.Dial(ctxT(t), "tcp", l.Addr().String(), &conn.Config{Logger: quietLogger()})
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	args := new(box.Box)
	args.SetString("a", "b")
	reply, err := c.Call(ctxT(t), "Echo", args)
	require.NoError(t, err)
	require.Equal(t, "b", reply.GetString("a"))
	srv.Close()
	wg.Wait()
}

// A box of more fields than MaxFields is bad input: the connection is
// closed with a *ProtocolError, and only that one.
func TestTooManyFieldsClosesConnection(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		cfg := conn.Config{Handler: echoMux(), MaxFields: 10}
		bad, good := newRawEnd(t, cfg), newRawEnd(t, cfg)
		go func() {
			bad.raw.Write(commandHead("Echo", "1"))
			bad.raw.Write(fieldsOf(9, 1))
		}()
		err := <-bad.errc
		var pe *conn.ProtocolError
		var tf *box.TooManyFieldsError
		require.ErrorAs(t, err, &pe)
		require.ErrorIs(t, err, box.ErrTooManyFields)
		require.ErrorAs(t, err, &tf)
		require.Equal(t, 10, tf.Limit)
		good.write(t, append(append(commandHead("Echo", "2"), fieldsOf(8, 1)...), 0, 0))
		require.Len(t, <-good.in, 8+1) // and _answer
	})
}

// heapNow returns the live heap after a full collection.
func heapNow() int64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return int64(ms.HeapAlloc)
}

// A client that pipelines large calls and reads none of the answers: the
// server's reader stops reading once MaxWriteQueue is queued, so the
// memory it pins stays bounded, other clients are answered meanwhile, and
// the connection ends with ErrWriteTimeout.
func TestNonReadingClientBounded(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	errs := make(chan error, 8)
	srv := &conn.Server{Config: conn.Config{Handler: echoMux(), Logger: quietLogger(), WriteTimeout: 2 * time.Second,
		OnError: func(_ *conn.Conn, err error) { errs <- err }}}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	before := heapNow()
	nc, err := net.Dial("tcp", l.Addr().String())
	require.NoError(t, err)
	t.Cleanup(func() { nc.Close() })
	call := append(append(commandHead("Echo", "1"), fieldsOf(1, 60000)...), 0, 0)
	sent := 0
	for {
		// The server has stopped reading once a write waits this long.
		nc.SetWriteDeadline(time.Now().Add(200 * time.Millisecond))
		n, err := nc.Write(call)
		sent += n
		if err != nil {
			break
		}
	}
	pinned := heapNow() - before
	t.Logf("the server stopped reading after %d MB of calls; heap pinned: %.1f MiB", sent>>20, float64(pinned)/(1<<20))
	// MaxWriteQueue (4 MiB) and a read buffer, with room to spare; before
	// the bound counted the batch in flight, this was 20 MiB.
	require.Less(t, pinned, int64(12<<20))

	other, err := conn.Dial(ctxT(t), "tcp", l.Addr().String(), &conn.Config{Logger: quietLogger()})
	require.NoError(t, err)
	t.Cleanup(func() { other.Close() })
	args := new(box.Box)
	args.SetString("a", "b")
	reply, err := other.Call(ctxT(t), "Echo", args)
	require.NoError(t, err)
	require.Equal(t, "b", reply.GetString("a"))

	select {
	case err := <-errs:
		require.ErrorIs(t, err, conn.ErrWriteTimeout)
		require.ErrorIs(t, err, os.ErrDeadlineExceeded)
	case <-ctxT(t).Done():
		t.Fatal("the server never closed the connection of a client that reads nothing")
	}
	require.NoError(t, other.Err())
}

// While our StartTLS request awaits its answer the writer cannot send, so
// the reader cannot wait for room: answers past MaxWriteQueue close the
// connection with ErrWriteQueueFull instead of stalling it.
func TestAnswersPastQueueWhileStartTLSPending(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newRawEnd(t, conn.Config{MaxWriteQueue: 1024})
		tlsErr := make(chan error, 1)
		go func() { tlsErr <- e.c.StartTLS(context.Background(), &tls.Config{InsecureSkipVerify: true}) }()
		req := <-e.in
		require.Equal(t, conn.StartTLSCommand, req["_command"])
		go func() {
			for i := range 1000 {
				if _, err := e.raw.Write(rawBox(t, map[string]string{"_ask": fmt.Sprint(i), "_command": "Nope"})); err != nil {
					return
				}
			}
		}()
		err := <-e.errc
		require.ErrorIs(t, err, conn.ErrWriteQueueFull)
		require.ErrorIs(t, <-tlsErr, conn.ErrConnectionLost)
	})
}

// Commands past MaxHandlers and the handler queue are refused with the
// declared OVERLOADED error as they arrive, and the reader goes on: an
// inline command is answered while every handler is stuck.
func TestOverloadAnsweredAtOnce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		release := make(chan struct{})
		m := echoMux()
		m.HandleBox("Wait", func(ctx context.Context, req, resp *box.Box) error {
			<-release
			return nil
		})
		client, _ := bubblePair(t, &conn.Config{}, &conn.Config{Handler: m, MaxHandlers: 2, MaxQueuedCommands: 3})
		const calls = 20
		results := make(chan error, calls)
		for range calls {
			require.NoError(t, client.Go(context.Background(), "Wait", &box.Box{}, func(_ context.Context, _ *box.Box, err error) {
				results <- err
			}))
		}
		start := time.Now()
		for range calls - 2 - 3 {
			err := <-results
			var re *amp.RemoteError
			require.ErrorAs(t, err, &re)
			require.Equal(t, conn.CodeOverloaded, re.Code)
			require.ErrorIs(t, err, conn.ErrOverloaded)
		}
		args := new(box.Box)
		args.SetString("a", "b")
		reply, err := client.Call(context.Background(), "Echo", args)
		require.NoError(t, err)
		require.Equal(t, "b", reply.GetString("a"))
		require.Zero(t, time.Since(start), "refused without waiting for a handler (bubble time)")
		close(release)
		for range 2 + 3 {
			require.NoError(t, <-results)
		}
	})
}

// Calls larger than MaxWriteBuffer, one at a time over TCP, go through
// the fast path: what it wrote stops counting against the bound once it
// is written (else the next call would wait for room forever).
func TestFastPathReleasesTheBound(t *testing.T) {
	a, b := tcpPair(t)
	client, _ := startPair(t, a, b, &conn.Config{MaxWriteBuffer: 256, Logger: quietLogger()},
		&conn.Config{Handler: echoMux(), Logger: quietLogger()})
	args := new(box.Box)
	args.SetString("a", strings.Repeat("x", 1000))
	for i := range 50 {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		reply, err := client.Call(ctx, "Echo", args)
		cancel()
		require.NoError(t, err, "call %d", i)
		require.Len(t, reply.GetString("a"), 1000)
	}
}
