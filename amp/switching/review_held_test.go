package switching

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ampmux/ampmux/amp"
	"github.com/ampmux/ampmux/amp/box"
	"github.com/ampmux/ampmux/amp/conn"
	"github.com/ampmux/ampmux/internal/pki"
)

func wipQuiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func wipCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 9*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// wipGW is a gateway exposing "web" and "api", both publishable by "agent".
type wipGW struct {
	addr     string
	reg      *Registry
	web, api *Exposure
	agent    *tls.Config
}

func newWipGW(t *testing.T) *wipGW {
	ca, err := pki.NewCA("test CA")
	require.NoError(t, err)
	srvCert, err := ca.Server("localhost", "127.0.0.1")
	require.NoError(t, err)
	cc, err := ca.Client("agent")
	require.NoError(t, err)
	g := &wipGW{reg: NewRegistry(), agent: &tls.Config{RootCAs: ca.Pool(), Certificates: []tls.Certificate{cc.TLS()}, ServerName: "127.0.0.1"}}
	g.web = g.reg.Expose("web", []string{"agent"}, Policy{})
	g.api = g.reg.Expose("api", []string{"agent"}, Policy{})
	m := amp.NewMux()
	g.reg.Install(m)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	srv := &conn.Server{Config: conn.Config{Handler: m, Logger: wipQuiet(), TLS: &tls.Config{
		Certificates: []tls.Certificate{srvCert.TLS()}, ClientCAs: ca.Pool(), ClientAuth: tls.VerifyClientCertIfGiven}}}
	served := make(chan struct{})
	go func() { defer close(served); srv.Serve(l) }()
	t.Cleanup(func() { srv.Close(); <-served })
	g.addr = l.Addr().String()
	return g
}

func wipArgs(name, session string) *box.Box {
	var a box.Box
	a.SetString("name", name)
	a.SetString("session", session)
	return &a
}

// dial is a raw AMP connection of the agent, secured; h may be nil.
func (g *wipGW) dial(t *testing.T, ctx context.Context, h amp.Locator) *conn.Conn {
	t.Helper()
	c, err := conn.Dial(ctx, "tcp", g.addr, &conn.Config{Logger: wipQuiet(), Handler: h})
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	require.NoError(t, c.StartTLS(ctx, g.agent))
	return c
}

func wipBarrier(ctx context.Context, c *conn.Conn) { c.Call(ctx, "_review_nosuch", &box.Box{}) }

// echoSwitch answers ProtocolSwitch and echoes; if gate is not nil the
// responder first signals entered and waits for gate.
func echoSwitch(entered chan<- struct{}, gate <-chan struct{}) *amp.Mux {
	m := amp.NewMux()
	m.Add(&amp.Responder{Name: CommandProtocolSwitch, Inline: true, Serve: func(ctx context.Context, _, _ *box.Box) error {
		if gate != nil {
			entered <- struct{}{}
			<-gate
		}
		return conn.FromContext(ctx).SwitchAfterAnswer(ctx, func(nc net.Conn) {
			if nc == nil {
				return
			}
			defer nc.Close()
			io.Copy(nc, nc)
		})
	}})
	return m
}

func wipUse(ctx context.Context, c net.Conn) error {
	if d, ok := ctx.Deadline(); ok {
		c.SetDeadline(d)
	}
	msg := []byte("ping-through-tunnel")
	if _, err := c.Write(msg); err != nil {
		return err
	}
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(c, got); err != nil {
		return err
	}
	if string(got) != string(msg) {
		return errors.New("garbled")
	}
	return nil
}

func (x *Exposure) reviewCounts() (idle, held, waiters int) {
	x.mu.Lock()
	defer x.mu.Unlock()
	x.pruneLocked()
	// Held anywhere: by this publisher or by none still there.
	x.reg.standbys.Range(func(_, v any) bool {
		held++
		return true
	})
	return len(x.idle), held, len(x.waiters)
}

// One standby connection announced for two routes the agent publishes is
// parked in both (held is per publisher, per exposure): two Dials, one per
// route, are both handed it.
func TestReviewHeldStandbyParkedForTwoRoutes(t *testing.T) {
	g := newWipGW(t)
	ctx := wipCtx(t)
	ctrl := g.dial(t, ctx, nil)
	for _, r := range []string{"web", "api"} {
		_, err := ctrl.Call(ctx, CommandPublish, wipArgs(r, "s1"))
		require.NoError(t, err)
	}
	sb := g.dial(t, ctx, echoSwitch(nil, nil))
	require.NoError(t, sb.SendBox(ctx, CommandStandby, wipArgs("web", "s1")))
	require.NoError(t, sb.SendBox(ctx, CommandStandby, wipArgs("api", "s1")))
	wipBarrier(ctx, sb)
	w, a := g.web.Standby(), g.api.Standby()
	t.Logf("web standby %d, api standby %d", w, a)
	if w+a > 1 {
		t.Errorf("one connection parked as a standby of two routes (web %d, api %d)", w, a)
	}
	// Both routes dialed at once: one tunnel at most, and it must work.
	type res struct {
		c   net.Conn
		err error
	}
	rc := make(chan res, 2)
	dctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	for _, x := range []*Exposure{g.web, g.api} {
		go func() { c, err := x.Dial(dctx); rc <- res{c, err} }()
	}
	var ok []net.Conn
	for range 2 {
		r := <-rc
		if r.err != nil {
			t.Logf("Dial: %v", r.err)
			continue
		}
		ok = append(ok, r.c)
	}
	if len(ok) != 1 {
		t.Errorf("%d of the two Dials got a tunnel over the one standby", len(ok))
	}
	for _, c := range ok {
		if err := wipUse(ctx, c); err != nil {
			t.Errorf("tunnel: %v", err)
		}
		c.Close()
	}
}

// A Dial is switching standby sb of publisher p1 when the same agent
// publishes again (p2, same session: p1 is dropped, sb is not idle so it
// stays open). sb announced again is not in p2.held, so it is parked for
// p2 while p1's Dial still switches it: a second Dial gets it, its Switch
// fails (a switch is pending) and it closes sb under the first Dial.
func TestReviewHeldStandbyAcrossPublisherReplacement(t *testing.T) {
	t.Run("control: announced once", func(t *testing.T) { wipReplaced(t, false) })
	t.Run("announced again", func(t *testing.T) { wipReplaced(t, true) })
}

func wipReplaced(t *testing.T, again bool) {
	g := newWipGW(t)
	ctx := wipCtx(t)
	ctrl1 := g.dial(t, ctx, nil)
	_, err := ctrl1.Call(ctx, CommandPublish, wipArgs("web", "s1"))
	require.NoError(t, err)
	entered, gate := make(chan struct{}, 1), make(chan struct{})
	sb := g.dial(t, ctx, echoSwitch(entered, gate))
	require.NoError(t, sb.SendBox(ctx, CommandStandby, wipArgs("web", "s1")))
	wipBarrier(ctx, sb)
	require.Equal(t, 1, g.web.Standby())

	type res struct {
		c   net.Conn
		err error
	}
	d1ctx, cancel1 := context.WithTimeout(ctx, 3*time.Second)
	defer cancel1()
	d1 := make(chan res, 1)
	go func() { c, err := g.web.Dial(d1ctx); d1 <- res{c, err} }()
	<-entered // D1's ProtocolSwitch is at the agent, unanswered

	ctrl2 := g.dial(t, ctx, nil)
	_, err = ctrl2.Call(ctx, CommandPublish, wipArgs("web", "s1")) // replaces p1
	require.NoError(t, err)

	// D2 waits for a standby of p2.
	d2ctx, cancel2 := context.WithTimeout(ctx, time.Second)
	defer cancel2()
	d2 := make(chan res, 1)
	go func() { c, err := g.web.Dial(d2ctx); d2 <- res{c, err} }()
	for {
		if _, _, w := g.web.reviewCounts(); w == 1 {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatal("D2 never waited")
		case <-time.After(time.Millisecond):
		}
	}
	// The agent announces sb again (buggy, or its own retry).
	if again {
		require.NoError(t, sb.SendBox(ctx, CommandStandby, wipArgs("web", "s1")))
	}
	r2 := <-d2
	t.Logf("D2: %v", r2.err)
	if r2.err == nil {
		r2.c.Close()
	}
	close(gate)
	r1 := <-d1
	require.NoError(t, r1.err, "D1, whose standby was handed to D2 meanwhile")
	defer r1.c.Close()
	require.NoError(t, wipUse(ctx, r1.c))
	select {
	case <-sb.Done():
	default:
	}
}

// held must not keep connections that ended: after standbys refused with
// a RemoteError, closed while idle, closed while being switched, and handed
// to a Dial that gave up, held holds exactly the idle ones.
func TestReviewHeldNoLeak(t *testing.T) {
	g := newWipGW(t)
	ctx := wipCtx(t)
	ctrl := g.dial(t, ctx, nil)
	_, err := ctrl.Call(ctx, CommandPublish, wipArgs("web", "s1"))
	require.NoError(t, err)
	check := func(what string) {
		t.Helper()
		idle, held, _ := g.web.reviewCounts()
		require.Equal(t, idle, held, "%s: idle %d, held %d", what, idle, held)
	}

	// 1. Refusing standbys: each Dial fails with UNAVAILABLE, the standby
	// is requeued.
	refuse := amp.NewMux()
	refuse.Add(&amp.Responder{Name: CommandProtocolSwitch, Inline: true, Serve: func(ctx context.Context, _, _ *box.Box) error {
		return &amp.RemoteError{Code: CodeUnavailable, Description: "backlog full"}
	}})
	var sbs []*conn.Conn
	for range 3 {
		sb := g.dial(t, ctx, refuse)
		require.NoError(t, sb.SendBox(ctx, CommandStandby, wipArgs("web", "s1")))
		wipBarrier(ctx, sb)
		sbs = append(sbs, sb)
	}
	for range 5 {
		_, err := g.web.Dial(ctx)
		require.ErrorIs(t, err, ErrUnavailable)
	}
	check("after refusals")
	// 2. Closed while idle.
	for _, sb := range sbs {
		sb.Close()
	}
	for {
		if idle, _, _ := g.web.reviewCounts(); idle == 0 {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatal("idle never pruned")
		case <-time.After(time.Millisecond):
		}
	}
	check("after closes")

	// 3. Closed while being switched.
	entered, gate := make(chan struct{}, 1), make(chan struct{})
	sb := g.dial(t, ctx, echoSwitch(entered, gate))
	require.NoError(t, sb.SendBox(ctx, CommandStandby, wipArgs("web", "s1")))
	wipBarrier(ctx, sb)
	dctx, cancel := context.WithTimeout(ctx, time.Second)
	done := make(chan error, 1)
	go func() {
		c, err := g.web.Dial(dctx)
		if c != nil {
			c.Close()
		}
		done <- err
	}()
	<-entered
	go sb.Close()
	err = <-done
	cancel()
	close(gate)
	t.Logf("Dial with its standby closed under it: %v", err)
	check("after close while switching")

	// 4. A Dial that gives up with a standby in its channel: many waiters
	// with short contexts racing announcements.
	for i := range 20 {
		wctx, wcancel := context.WithCancel(ctx)
		res := make(chan error, 1)
		go func() {
			c, err := g.web.Dial(wctx)
			if c != nil {
				c.Close()
			}
			res <- err
		}()
		waiting := true
	poll:
		for {
			if _, _, w := g.web.reviewCounts(); w == 1 {
				break
			}
			select {
			case err := <-res: // took an idle one
				t.Logf("iteration %d: %v", i, err)
				waiting = false
				break poll
			case <-ctx.Done():
				t.Fatal("never waited")
			case <-time.After(100 * time.Microsecond):
			}
		}
		if !waiting {
			wcancel()
			continue
		}
		sb := g.dial(t, ctx, echoSwitch(nil, nil))
		go func() {
			if i%2 == 0 {
				wcancel()
			}
		}()
		require.NoError(t, sb.SendBox(ctx, CommandStandby, wipArgs("web", "s1")))
		if i%2 == 1 {
			wcancel()
		}
		<-res
		wipBarrier(ctx, sb)
	}
	check("after waiters giving up")
	idle, held, _ := g.web.reviewCounts()
	t.Logf("idle %d held %d", idle, held)

	// 5. Disconnect: the map goes with the publisher; a Dial in flight
	// whose standby is refused afterwards closes it.
	g.web.Disconnect()
	_, err = g.web.Dial(ctx)
	require.ErrorIs(t, err, ErrUnavailable)
}

// A standby whose switch is refused with a RemoteError that is not the
// agent's backlog (here: it has no ProtocolSwitch responder at all,
// UNHANDLED) goes: requeued, it would fail every Dial that drew it.
func TestReviewHeldPoisonStandbyNotRequeued(t *testing.T) {
	g := newWipGW(t)
	ctx := wipCtx(t)
	ctrl := g.dial(t, ctx, nil)
	_, err := ctrl.Call(ctx, CommandPublish, wipArgs("web", "s1"))
	require.NoError(t, err)
	bad := g.dial(t, ctx, amp.NewMux())
	require.NoError(t, bad.SendBox(ctx, CommandStandby, wipArgs("web", "s1")))
	wipBarrier(ctx, bad)
	for range 4 {
		good := g.dial(t, ctx, echoSwitch(nil, nil))
		require.NoError(t, good.SendBox(ctx, CommandStandby, wipArgs("web", "s1")))
		wipBarrier(ctx, good)
	}
	require.Equal(t, 5, g.web.Standby())
	_, err = g.web.Dial(ctx) // draws the oldest: bad
	require.ErrorIs(t, err, ErrUnavailable)
	require.Equal(t, 4, g.web.Standby(), "the standby that cannot switch was kept")
	for i := range 4 {
		c, err := g.web.Dial(ctx)
		require.NoError(t, err, "dial %d", i)
		require.NoError(t, wipUse(ctx, c))
		c.Close()
	}
}
