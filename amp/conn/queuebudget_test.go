package conn_test

// Tests of what the Budget covers besides the read buffer: the requests
// held by handlers, and the bytes queued for a peer (doc.go, Memory).

import (
	"context"
	"fmt"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ampmux/ampmux/amp"
	"github.com/ampmux/ampmux/amp/box"
	"github.com/ampmux/ampmux/amp/conn"
)

// qbValue is the size of the one value of the large calls below.
const qbValue = 60000

// qbGate holds Slow until the gate in force when it started is closed.
type qbGate struct{ ch atomic.Pointer[chan struct{}] }

func (g *qbGate) reset() chan struct{} {
	ch := make(chan struct{})
	g.ch.Store(&ch)
	return ch
}

// qbMux serves Echo and Big inline, Slow (held at the gate) and Quick on
// handler goroutines.
func qbMux(g *qbGate) *amp.Mux {
	m := echoMux()
	m.HandleBox("Slow", func(ctx context.Context, req, resp *box.Box) error {
		select {
		case <-*g.ch.Load():
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	})
	m.HandleBox("Quick", func(_ context.Context, req, resp *box.Box) error {
		resp.SetString("ok", "yes")
		return nil
	})
	m.HandleBoxInline("Big", func(_ context.Context, req, resp *box.Box) error {
		for i := range 10 { // 600 KB: past the allowance by more than one call
			resp.SetString(fmt.Sprintf("v%d", i), strings.Repeat("b", qbValue))
		}
		return nil
	})
	return m
}

// qbCall is a call of command tagged tag with one value of size bytes.
func qbCall(command string, tag, size int) []byte {
	return append(append(commandHead(command, fmt.Sprint(tag)), fieldsOf(1, size)...), 0, 0)
}

// qbFlood sends n large Slow calls and returns, once the Conn has decided
// on each, the tags it refused with OVERLOADED.
func qbFlood(t *testing.T, e *rawEnd, first, n int) (refused map[string]bool) {
	t.Helper()
	go func() {
		for i := range n {
			if _, err := e.raw.Write(qbCall("Slow", first+i, qbValue)); err != nil {
				return
			}
		}
	}()
	synctest.Wait() // every call read; the refusals answered, the rest held
	refused = map[string]bool{}
	for len(e.in) > 0 {
		m := <-e.in
		require.Equal(t, conn.CodeOverloaded, m["_error_code"], "%v", m["_error_description"])
		require.Contains(t, m["_error_description"], "memory")
		refused[m["_error"]] = true
	}
	return refused
}

// A peer flooding a slow (non-inline) responder with large calls: the
// requests held past the allowance draw on the budget, and once it is
// spent the rest are answered OVERLOADED at once, while the connection
// stays up and another connection sharing the budget is served. When the
// handlers finish, the budget is all given back (a second flood is
// admitted alike): a charge kept would leave InUse above zero and refuse
// more of the second flood.
func TestHandlerRequestsDrawOnBudget(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var gate qbGate
		release := gate.reset()
		budget := conn.NewBudget(512 << 10)
		cfg := conn.Config{Handler: qbMux(&gate), Budget: budget}
		hog, other := newRawEnd(t, cfg), newRawEnd(t, cfg)

		const n = 40
		refused := qbFlood(t, hog, 0, n)
		admitted := n - len(refused)
		// Each request's copy is a little over qbValue.
		own := int64(conn.Allowance)
		require.LessOrEqual(t, int64(admitted)*qbValue, own+budget.Limit())
		require.Greater(t, int64(admitted+1)*(qbValue+256), own+budget.Limit())
		require.LessOrEqual(t, budget.InUse(), budget.Limit())
		require.Greater(t, budget.InUse(), budget.Limit()-qbValue-256, "the budget is spent")
		for i := range admitted {
			require.False(t, refused[fmt.Sprint(i)], "the first calls are admitted")
		}

		// Another connection, with the budget spent: inline and handler
		// commands within its own allowance are answered.
		other.write(t, rawBox(t, map[string]string{"_ask": "1", "_command": "Echo", "a": "b"}))
		require.Equal(t, "b", (<-other.in)["a"])
		other.write(t, rawBox(t, map[string]string{"_ask": "2", "_command": "Quick"}))
		require.Equal(t, "yes", (<-other.in)["ok"])
		// The hog's connection is up, and its own calls go out.
		sent := make(chan error, 1)
		require.NoError(t, hog.c.Go(context.Background(), "Ping", &box.Box{}, func(_ context.Context, _ *box.Box, err error) { sent <- err }))
		require.Equal(t, "Ping", (<-hog.in)["_command"])

		close(release)
		for range admitted {
			m := <-hog.in
			require.Contains(t, m, "_answer", "%v", m)
		}
		synctest.Wait()
		require.Zero(t, budget.InUse(), "the handlers gave back what they drew")

		release = gate.reset()
		again := qbFlood(t, hog, n, n)
		require.Equal(t, len(refused), len(again), "the second flood is admitted as the first was")
		close(release)
		for range n - len(again) {
			<-hog.in
		}
		synctest.Wait()
		require.Zero(t, budget.InUse())
		require.NoError(t, hog.c.Err())
		hog.raw.Close()
		<-hog.c.Done()
		require.ErrorIs(t, <-sent, conn.ErrConnectionLost)
	})
}

// Queued commands still held when the connection ends give their charge
// back with the queue.
func TestHandlerQueueChargeReturnedAtEnd(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var gate qbGate
		gate.reset() // never opened: only the connection's end stops Slow
		budget := conn.NewTestBudget(1<<20, 64<<10)
		hog := newRawEnd(t, conn.Config{Handler: qbMux(&gate), Budget: budget, MaxHandlers: 1, MaxQueuedCommands: 100})
		refused := qbFlood(t, hog, 0, 30)
		require.NotEmpty(t, refused)
		require.Greater(t, budget.InUse(), int64(1<<20)-qbValue-256)
		hog.raw.Close()
		<-hog.c.Done()
		require.Zero(t, budget.InUse())
	})
}

// A trusted connection's handlers draw nothing, whatever they hold.
func TestHandlerRequestsTrustedNotCharged(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var gate qbGate
		release := gate.reset()
		budget := conn.NewBudget(1)
		e := newRawEnd(t, conn.Config{Handler: qbMux(&gate), Budget: budget,
			Trusted: func(*conn.Conn) bool { return true }})
		const n = 40
		require.Empty(t, qbFlood(t, e, 0, n))
		require.Zero(t, budget.InUse())
		close(release)
		for range n {
			require.Contains(t, <-e.in, "_answer")
		}
	})
}

// deafEnd is a Conn on net.Pipe whose peer sends large Echo calls and
// never reads: sent counts the bytes the Conn took.
type deafEnd struct {
	raw  net.Conn
	c    *conn.Conn
	errc chan error
	sent atomic.Int64
}

func newDeafEnd(t *testing.T, cfg conn.Config) *deafEnd { return newDeafEndN(t, cfg, -1) }

// newDeafEndN is newDeafEnd whose peer sends only calls calls, if >= 0.
func newDeafEndN(t *testing.T, cfg conn.Config, calls int) *deafEnd {
	a, b := net.Pipe()
	e := &deafEnd{raw: a, errc: make(chan error, 1)}
	cfg.OnError = func(_ *conn.Conn, err error) { e.errc <- err }
	cfg.Logger = quietLogger()
	e.c = conn.New(b, &cfg)
	go func() {
		for i := 0; i != calls; i++ {
			n, err := a.Write(qbCall("Echo", i, qbValue))
			e.sent.Add(int64(n))
			if err != nil {
				return
			}
		}
	}()
	t.Cleanup(func() {
		a.Close()
		e.c.Close()
	})
	return e
}

// Peers that send calls and read none of the answers: each connection's
// queue past its allowance draws on the budget, and once the budget is
// spent their readers stop, so that together they cannot pin more than
// their allowances and the budget; a trusted connection is not held to
// it. Meanwhile an untrusted connection whose peer reads is answered,
// and a call made on this end to a peer is sent even larger than the
// allowance, the budget spent; an answer that alone needs more than the
// allowance closes its connection with ErrBufferBudget (there is nothing
// queued to wait for). WriteTimeout ends the deaf connections, and the
// budget is all given back.
func TestWriteQueueDrawsOnBudget(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		budget := conn.NewBudget(1 << 20)
		cfg := conn.Config{Handler: qbMux(new(qbGate)), Budget: budget}
		const hogs = 6
		deaf := make([]*deafEnd, hogs)
		for i := range deaf {
			deaf[i] = newDeafEnd(t, cfg)
		}
		synctest.Wait() // every reader waits for room, every writer for the peer
		var total int64
		for _, d := range deaf {
			total += d.sent.Load()
		}
		own := int64(conn.Allowance)
		// Each took the answers it queued, one more waiting and the one
		// its writer is stuck with: at most its allowance past what it drew.
		require.LessOrEqual(t, total, hogs*(own+3*(qbValue+64))+budget.Limit(), "%d bytes taken", total)
		require.LessOrEqual(t, budget.InUse(), budget.Limit())
		require.Greater(t, budget.InUse(), budget.Limit()-qbValue-64, "the budget is spent")
		held := budget.InUse()

		trustedCfg := cfg
		trustedCfg.Trusted = func(*conn.Conn) bool { return true }
		trusted := newDeafEnd(t, trustedCfg)
		synctest.Wait()
		require.Greater(t, trusted.sent.Load(), int64(3<<20), "a trusted connection queues up to MaxWriteQueue")
		require.Equal(t, held, budget.InUse())

		// A peer that reads is answered within its allowance.
		reads := newRawEnd(t, cfg)
		reads.write(t, qbCall("Echo", 1, qbValue))
		require.Len(t, (<-reads.in)["v0000"], qbValue)

		// A local call larger than the allowance is not refused.
		lm := amp.NewMux()
		lm.HandleBoxInline("Len", func(_ context.Context, req, resp *box.Box) error {
			resp.SetString("n", fmt.Sprint(req.EncodedLen()))
			return nil
		})
		peer, local := bubblePair(t, &conn.Config{Handler: lm}, &conn.Config{Budget: budget})
		_ = peer
		args := new(box.Box)
		for i := range 5 {
			args.SetString(fmt.Sprintf("v%d", i), strings.Repeat("x", qbValue))
		}
		reply, err := local.Call(context.Background(), "Len", args)
		require.NoError(t, err)
		require.NotEmpty(t, reply.GetString("n"))

		// An answer past the allowance on its own, the budget spent.
		big := newRawEnd(t, cfg)
		big.write(t, rawBox(t, map[string]string{"_ask": "1", "_command": "Big"}))
		require.ErrorIs(t, <-big.errc, conn.ErrBufferBudget)
		reads.write(t, rawBox(t, map[string]string{"_ask": "2", "_command": "Echo", "a": "b"}))
		require.Equal(t, "b", (<-reads.in)["a"], "the other connections go on")

		time.Sleep(31 * time.Second) // past the default WriteTimeout
		for _, d := range append(deaf, trusted) {
			require.ErrorIs(t, <-d.errc, conn.ErrWriteTimeout)
			<-d.c.Done()
		}
		require.Zero(t, budget.InUse())
		require.NoError(t, reads.c.Err())
	})
}

// What a queue drew goes back as the writer sends it, while the
// connection goes on: a charge kept would leave InUse above zero.
func TestWriteQueueChargeReturnedAsSent(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		budget := conn.NewBudget(1 << 20)
		const calls = 10 // 600 KB of answers, past the allowance
		e := newDeafEndN(t, conn.Config{Handler: echoMux(), Budget: budget}, calls)
		synctest.Wait()
		require.Equal(t, int64(calls*len(qbCall("Echo", 0, qbValue))), e.sent.Load(), "every call was taken")
		require.Greater(t, budget.InUse(), int64(calls*qbValue-conn.Allowance-2*qbValue), "the answers queued draw on the budget")
		dec := box.NewDecoder(e.raw)
		for range calls {
			m, err := nextBox(e.raw, dec, time.Second)
			require.NoError(t, err)
			require.Len(t, m["v0000"], qbValue)
		}
		synctest.Wait()
		require.Zero(t, budget.InUse(), "the queue gave back what it drew once sent")
		require.NoError(t, e.c.Err())
	})
}
