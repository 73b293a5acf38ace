package switching_test

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ampmux/ampmux/amp"
	"github.com/ampmux/ampmux/amp/box"
	"github.com/ampmux/ampmux/amp/conn"
	"github.com/ampmux/ampmux/amp/switching"
)

// rvDial is a raw AMP connection to the gateway, secured as cfg.
func rvDial(t *testing.T, ctx context.Context, addr string, cfg *tls.Config) *conn.Conn {
	t.Helper()
	c, err := conn.Dial(ctx, "tcp", addr, &conn.Config{Logger: quiet()})
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	cfg = cfg.Clone()
	cfg.ServerName = "127.0.0.1"
	require.NoError(t, c.StartTLS(ctx, cfg))
	return c
}

func rvArgs(name, session string) *box.Box {
	var a box.Box
	a.SetString("name", name)
	a.SetString("session", session)
	return &a
}

// rvBarrier waits until c's peer has read everything sent before it (the
// gateway's publishing handlers are inline: an unhandled call is answered
// after them).
func rvBarrier(ctx context.Context, c *conn.Conn) {
	c.Call(ctx, "_review_nosuch", &box.Box{})
}

// A client's tunnel must work or fail, never hang: every Dial returns
// within its context and every tunnel returned either round-trips or ends.
func rvUse(ctx context.Context, c net.Conn) error {
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

// Clients racing for the last standby (Standby 1, MaxStandby 1): every
// one gets its tunnel or UNAVAILABLE, none hangs.
func TestReviewRemoteRaceForLastStandby(t *testing.T) {
	g := newGateway(t)
	p, ev := g.publisher(g.agent)
	p.Standby, p.MaxStandby = 1, 1
	ln, err := p.Listen(ctxT(t), g.addr, "web")
	require.NoError(t, err)
	<-ev.published
	done := echoOn(ln)
	ctx := ctxT(t)
	var wg sync.WaitGroup
	var ok, unavailable atomic.Int32
	errs := make(chan error, 16)
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := switching.Dial(ctx, g.addr, "web", g.alice)
			if err != nil {
				if errors.Is(err, switching.ErrUnavailable) {
					unavailable.Add(1)
					return
				}
				errs <- err
				return
			}
			defer c.Close()
			if err := rvUse(ctx, c); err != nil {
				errs <- err
				return
			}
			ok.Add(1)
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("client: %v", err)
	}
	require.NoError(t, ctx.Err(), "a client hung")
	require.Positive(t, ok.Load())
	ln.Close()
	<-done
}

// Disconnect and Close racing Dial: every Dial ends with a tunnel or
// UNAVAILABLE.
func TestReviewRemoteDisconnectRacesDial(t *testing.T) {
	g := newGateway(t)
	ln, ev := g.listen(t, g.agent)
	done := echoOn(ln)
	ctx := ctxT(t)
	for round := range 5 {
		var wg sync.WaitGroup
		for range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
				defer cancel()
				c, err := g.web.Dial(dctx)
				if err != nil {
					if !errors.Is(err, switching.ErrUnavailable) {
						t.Errorf("round %d: %v", round, err)
					}
					return
				}
				defer c.Close()
				// may fail (the agent reconnecting), must not hang
				if err := rvUse(dctx, c); errors.Is(err, os.ErrDeadlineExceeded) {
					t.Errorf("round %d: a half-working tunnel: %v", round, err)
				}
			}()
		}
		g.web.Disconnect()
		wg.Wait()
		select {
		case <-ev.published:
		case <-ctx.Done():
			t.Fatal("not published again")
		}
	}
	require.NoError(t, ctx.Err())
	ln.Close()
	<-done
}

// RemoteListener.Close racing switches in progress and Accept: Close
// returns, Accept returns net.ErrClosed, clients get their answer.
func TestReviewRemoteCloseRacesSwitch(t *testing.T) {
	g := newGateway(t)
	p, ev := g.publisher(g.agent)
	p.Standby, p.MaxStandby = 4, 8
	ln, err := p.Listen(ctxT(t), g.addr, "web")
	require.NoError(t, err)
	<-ev.published
	ctx := ctxT(t)
	accepted := make(chan error, 1)
	var held sync.WaitGroup
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				accepted <- err
				return
			}
			held.Add(1)
			go func() { defer held.Done(); defer c.Close(); io.Copy(c, c) }()
		}
	}()
	var wg sync.WaitGroup
	for range 6 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			defer cancel()
			c, err := switching.Dial(dctx, g.addr, "web", g.alice)
			if err != nil {
				return
			}
			defer c.Close()
			if err := rvUse(dctx, c); errors.Is(err, os.ErrDeadlineExceeded) {
				t.Errorf("a half-working tunnel: %v", err)
			}
		}()
	}
	closed := make(chan struct{})
	go func() { ln.Close(); close(closed) }()
	select {
	case <-closed:
	case <-ctx.Done():
		t.Fatal("Close hung")
	}
	select {
	case err := <-accepted:
		require.ErrorIs(t, err, net.ErrClosed)
	case <-ctx.Done():
		t.Fatal("Accept hung")
	}
	wg.Wait()
	held.Wait()
	require.NoError(t, ctx.Err())
}

// freezer is a TCP proxy whose existing connections can be frozen: bytes
// are swallowed, nothing is closed (a gateway gone silent). Connections
// made after a freeze pass.
type freezer struct {
	l      net.Listener
	target string
	mu     sync.Mutex
	frozen chan struct{}
	stop   chan struct{}
	wg     sync.WaitGroup
	conns  []net.Conn
}

func newFreezer(t *testing.T, target string) *freezer {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	f := &freezer{l: l, target: target, frozen: make(chan struct{}), stop: make(chan struct{})}
	f.wg.Add(1)
	go func() {
		defer f.wg.Done()
		for {
			a, err := l.Accept()
			if err != nil {
				return
			}
			b, err := net.Dial("tcp", target)
			if err != nil {
				a.Close()
				continue
			}
			f.mu.Lock()
			fr := f.frozen
			f.conns = append(f.conns, a, b)
			f.mu.Unlock()
			cp := func(dst, src net.Conn) {
				defer f.wg.Done()
				buf := make([]byte, 32<<10)
				for {
					n, err := src.Read(buf)
					if n > 0 {
						select {
						case <-fr:
						default:
							dst.Write(buf[:n])
						}
					}
					if err != nil {
						select {
						case <-fr:
						default:
							dst.Close()
						}
						return
					}
				}
			}
			f.wg.Add(2)
			go cp(a, b)
			go cp(b, a)
		}
	}()
	t.Cleanup(func() {
		l.Close()
		f.mu.Lock()
		for _, c := range f.conns {
			c.Close()
		}
		f.mu.Unlock()
		f.wg.Wait()
	})
	return f
}

func (f *freezer) freeze() {
	f.mu.Lock()
	close(f.frozen)
	f.frozen = make(chan struct{})
	f.mu.Unlock()
}

// A gateway that goes silent after the publish: the agent's heartbeat
// notices, it reconnects and publishes again (the same session replaces
// the stale control connection on the gateway), and clients are served
// by the new session.
func TestReviewRemoteSilentGatewayReplaced(t *testing.T) {
	g := newGateway(t)
	f := newFreezer(t, g.addr)
	p, ev := g.publisher(g.agent)
	p.Heartbeat, p.HeartbeatTimeout = 50*time.Millisecond, 200*time.Millisecond
	p.TLSConfig = g.agent.Clone()
	p.TLSConfig.ServerName = "127.0.0.1"
	ln, err := p.Listen(ctxT(t), f.l.Addr().String(), "web")
	require.NoError(t, err)
	<-ev.published
	done := echoOn(ln)
	ctx := ctxT(t)
	f.freeze()
	select {
	case <-ev.disconnected:
	case <-ctx.Done():
		t.Fatal("the agent did not notice a silent gateway")
	}
	select {
	case <-ev.published:
	case <-ctx.Done():
		t.Fatal("not published again")
	}
	// The old standbys (frozen, still parked at the gateway until
	// replaced) must not be handed to clients.
	for range 4 {
		dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		c, err := switching.Dial(dctx, g.addr, "web", g.alice)
		require.NoError(t, err)
		require.NoError(t, rvUse(dctx, c))
		c.Close()
		cancel()
	}
	ln.Close()
	<-done
}

// A gateway restarted on the same address (a new Registry): the agent
// publishes again there.
func TestReviewRemoteGatewayRestarted(t *testing.T) {
	g := newGateway(t)
	ln, ev := g.listen(t, g.agent)
	done := echoOn(ln)
	ctx := ctxT(t)
	g.srv.Close()
	select {
	case <-ev.disconnected:
	case <-ctx.Done():
		t.Fatal("no disconnection")
	}
	reg := switching.NewRegistry()
	web := reg.Expose("web", []string{"agent"}, switching.Policy{AllowedNames: []string{"alice"}})
	m := amp.NewMux()
	reg.Install(m)
	l, err := net.Listen("tcp", g.addr)
	require.NoError(t, err)
	srv := &conn.Server{Config: conn.Config{Handler: m, Logger: quiet(), TLS: g.tls}}
	served := make(chan struct{})
	go func() { defer close(served); srv.Serve(l) }()
	defer func() { srv.Close(); <-served }()
	select {
	case <-ev.published:
	case <-ctx.Done():
		t.Fatal("not published on the restarted gateway")
	}
	name, ok := web.Publisher()
	require.True(t, ok)
	require.Equal(t, "agent", name)
	c, err := switching.Dial(ctx, g.addr, "web", g.alice)
	require.NoError(t, err)
	require.NoError(t, rvUse(ctx, c))
	c.Close()
	ln.Close()
	<-done
}

// A hostile agent's standbys for a route it does not publish are hung
// up on.
func TestReviewRemoteStandbyForOtherRoute(t *testing.T) {
	g := newGateway(t)
	g.reg.AcceptPublishers("other", []string{"agent2"})
	ctx := ctxT(t)
	ctrl := rvDial(t, ctx, g.addr, g.agent)
	_, err := ctrl.Call(ctx, switching.CommandPublish, rvArgs("web", "s1"))
	require.NoError(t, err)
	for _, a := range []*box.Box{rvArgs("other", "s1"), rvArgs("nosuch", "s1")} {
		sb := rvDial(t, ctx, g.addr, g.agent)
		require.NoError(t, sb.SendBox(ctx, switching.CommandStandby, a))
		select {
		case <-sb.Done():
		case <-ctx.Done():
			t.Fatal("a stray standby was kept")
		}
	}
	require.Equal(t, 0, g.web.Standby())
}

// Many standbys from one publisher: the gateway keeps a bounded number.
func TestReviewRemoteManyStandbysBounded(t *testing.T) {
	g := newGateway(t)
	ctx := ctxT(t)
	ctrl := rvDial(t, ctx, g.addr, g.agent)
	_, err := ctrl.Call(ctx, switching.CommandPublish, rvArgs("web", "s1"))
	require.NoError(t, err)
	var closedByGateway int
	for range 80 {
		sb := rvDial(t, ctx, g.addr, g.agent)
		require.NoError(t, sb.SendBox(ctx, switching.CommandStandby, rvArgs("web", "s1")))
		rvBarrier(ctx, sb)
		select {
		case <-sb.Done():
			closedByGateway++
		default:
		}
	}
	require.LessOrEqual(t, g.web.Standby(), 64)
	t.Logf("kept %d, refused %d", g.web.Standby(), closedByGateway)
}

// fakeGateway answers _ampmux_publish, then floods the control
// connection with _ampmux_more; it counts the standby connections open at
// once.
type fakeGateway struct {
	addr          string
	live, maxLive atomic.Int32
	standbys      atomic.Int32
	reachedMax    chan struct{}
	once          sync.Once
}

func newFakeGateway(t *testing.T, g *gateway, flood int, want int32) *fakeGateway {
	f := &fakeGateway{reachedMax: make(chan struct{})}
	m := amp.NewMux()
	pub := amp.NewCommand[switching.PublishArgs, struct{}](switching.CommandPublish, amp.Spec{})
	sbc := amp.NewCommand[switching.PublishArgs, struct{}](switching.CommandStandby, amp.Spec{NoAnswer: true})
	more := amp.NewCommand[switching.MoreArgs, struct{}](switching.CommandMore, amp.Spec{NoAnswer: true})
	var wg sync.WaitGroup
	amp.HandleInline(m, pub, func(ctx context.Context, a switching.PublishArgs) (struct{}, error) {
		c := conn.FromContext(ctx)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range flood {
				if _, err := more.Call(context.Background(), c, switching.MoreArgs{Name: a.Name, N: 1 << 30}); err != nil {
					return
				}
			}
		}()
		return struct{}{}, nil
	})
	amp.HandleInline(m, sbc, func(ctx context.Context, a switching.PublishArgs) (struct{}, error) {
		c := conn.FromContext(ctx)
		f.standbys.Add(1)
		n := f.live.Add(1)
		for {
			old := f.maxLive.Load()
			if n <= old || f.maxLive.CompareAndSwap(old, n) {
				break
			}
		}
		if n >= want {
			f.once.Do(func() { close(f.reachedMax) })
		}
		wg.Add(1)
		go func() { defer wg.Done(); <-c.Done(); f.live.Add(-1) }()
		return struct{}{}, nil
	})
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	srv := &conn.Server{Config: conn.Config{Handler: m, Logger: quiet(), TLS: g.tls}}
	served := make(chan struct{})
	go func() { defer close(served); srv.Serve(l) }()
	t.Cleanup(func() { srv.Close(); <-served; wg.Wait() })
	f.addr = l.Addr().String()
	return f
}

// A hostile gateway asking for huge numbers of standbys: the agent keeps
// at most MaxStandby open.
func TestReviewRemoteMoreFloodBounded(t *testing.T) {
	g := newGateway(t)
	f := newFakeGateway(t, g, 5000, 6)
	p, ev := g.publisher(g.agent)
	p.Standby, p.MaxStandby = 2, 6
	ln, err := p.Listen(ctxT(t), f.addr, "web")
	require.NoError(t, err)
	<-ev.published
	ctx := ctxT(t)
	select {
	case <-f.reachedMax:
	case <-ctx.Done():
		t.Fatal("the agent never opened MaxStandby standbys")
	}
	require.NoError(t, ln.Close())
	require.LessOrEqual(t, f.maxLive.Load(), int32(6))
	require.LessOrEqual(t, f.standbys.Load(), int32(6), "standbys reopened beyond MaxStandby")
}

// A hostile agent whose standby answers the switch, then sends garbage
// and hangs up: the client gets those bytes and an end, never a hang.
func TestReviewRemoteGarbageAfterSwitch(t *testing.T) {
	g := newGateway(t)
	ctx := ctxT(t)
	ctrl := rvDial(t, ctx, g.addr, g.agent)
	_, err := ctrl.Call(ctx, switching.CommandPublish, rvArgs("web", "s1"))
	require.NoError(t, err)
	garbage := []byte("\x00\xff\x00\x07garbage-not-amp\x00\x00")
	m := amp.NewMux()
	served := make(chan struct{})
	m.Add(&amp.Responder{Name: switching.CommandProtocolSwitch, Inline: true, Serve: func(ctx context.Context, _, _ *box.Box) error {
		return conn.FromContext(ctx).SwitchAfterAnswer(ctx, func(nc net.Conn) {
			defer close(served)
			if nc == nil {
				return
			}
			nc.Write(garbage)
			nc.Close()
		})
	}})
	sb, err := conn.Dial(ctx, "tcp", g.addr, &conn.Config{Logger: quiet(), Handler: m})
	require.NoError(t, err)
	defer sb.Close()
	cfg := g.agent.Clone()
	cfg.ServerName = "127.0.0.1"
	require.NoError(t, sb.StartTLS(ctx, cfg))
	require.NoError(t, sb.SendBox(ctx, switching.CommandStandby, rvArgs("web", "s1")))
	rvBarrier(ctx, sb)
	require.Equal(t, 1, g.web.Standby())
	c, err := switching.Dial(ctx, g.addr, "web", g.alice)
	require.NoError(t, err)
	defer c.Close()
	d, _ := ctx.Deadline()
	c.SetDeadline(d)
	got, err := io.ReadAll(c)
	require.NoError(t, err)
	require.Equal(t, garbage, got)
	<-served
}

// A Dial waiting for a standby (the publisher has none) ends at once,
// UNAVAILABLE, when the publisher is disconnected or the exposure closed.
func TestReviewRemoteWaitingDialEnds(t *testing.T) {
	g := newGateway(t)
	ctx := ctxT(t)
	for _, end := range []func(){func() { g.web.Disconnect() }, func() { g.web.Close() }} {
		asked := make(chan struct{}, 16)
		m := amp.NewMux()
		m.HandleBoxInline(switching.CommandMore, func(context.Context, *box.Box, *box.Box) error {
			asked <- struct{}{}
			return nil
		})
		ctrl, err := conn.Dial(ctx, "tcp", g.addr, &conn.Config{Logger: quiet(), Handler: m})
		require.NoError(t, err)
		defer ctrl.Close()
		cfg := g.agent.Clone()
		cfg.ServerName = "127.0.0.1"
		require.NoError(t, ctrl.StartTLS(ctx, cfg))
		_, err = ctrl.Call(ctx, switching.CommandPublish, rvArgs("web", "s1"))
		require.NoError(t, err)
		errc := make(chan error, 1)
		go func() { _, err := g.web.Dial(ctx); errc <- err }()
		select {
		case <-asked: // the Dial waits for a standby now
		case <-ctx.Done():
			t.Fatal("no _ampmux_more")
		}
		end()
		select {
		case err := <-errc:
			require.ErrorIs(t, err, switching.ErrUnavailable)
		case <-ctx.Done():
			t.Fatal("Dial hung")
		}
		<-ctrl.Done()
	}
}

// A standby refused because the backlog is full: once the caller
// accepts, the next client is served (with a backoff shorter than the
// wait; see rvBacklogRecovers).
func TestReviewRemoteBacklogFullThenRecoversShortBackoff(t *testing.T) {
	rvBacklogRecovers(t, time.Millisecond)
}

// The same with a backoff longer than the test: the refused standby must
// stay a standby, not be closed and counted as a failure.
func TestReviewRemoteBacklogFullThenRecovers(t *testing.T) {
	rvBacklogRecovers(t, time.Hour)
}

func rvBacklogRecovers(t *testing.T, backoff time.Duration) {
	g := newGateway(t)
	p, ev := g.publisher(g.agent)
	p.Backlog, p.Standby, p.MaxStandby = 1, 1, 1
	p.BackoffMin, p.BackoffMax = backoff, backoff
	ln, err := p.Listen(ctxT(t), g.addr, "web")
	require.NoError(t, err)
	defer ln.Close()
	<-ev.published
	ctx := ctxT(t)
	c1, err := g.web.Dial(ctx) // queued, not accepted
	require.NoError(t, err)
	defer c1.Close()
	_, err = g.web.Dial(ctx)
	require.ErrorIs(t, err, switching.ErrUnavailable)
	a, err := ln.Accept()
	require.NoError(t, err)
	a.Close()
	dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	c3, err := g.web.Dial(dctx)
	t.Logf("third dial: %v", err)
	require.NoError(t, err, "no standby after a backlog-full refusal (the agent backs off as if the standby had died)")
	c3.Close()
}

// The second publisher while the first is half-dead (gone without FIN):
// refused ALREADY_PUBLISHED; once the gateway's heartbeat notices, a new
// one publishes.
func TestReviewRemoteSecondPublisherWhileFirstHalfDead(t *testing.T) {
	g := newGatewayWith(t, 50*time.Millisecond)
	f := newFreezer(t, g.addr)
	p, ev := g.publisher(g.agent)
	p.Heartbeat = -1
	p.TLSConfig = g.agent.Clone()
	p.TLSConfig.ServerName = "127.0.0.1"
	ln, err := p.Listen(ctxT(t), f.l.Addr().String(), "web")
	require.NoError(t, err)
	defer ln.Close()
	<-ev.published
	ctx := ctxT(t)
	ch := g.web.Changed()
	f.freeze()
	p2, _ := g.publisher(g.agent2)
	ln2, err := p2.Listen(ctx, g.addr, "web")
	if err == nil {
		// the gateway noticed already
		ln2.Close()
	} else {
		require.ErrorIs(t, err, switching.ErrAlreadyPublished)
	}
	select {
	case <-ch:
	case <-ctx.Done():
		t.Fatal("the gateway never noticed the half-dead publisher")
	}
	g.waitUnpublished(t)
	p3, ev3 := g.publisher(g.agent2)
	ln3, err := p3.Listen(ctx, g.addr, "web")
	require.NoError(t, err)
	<-ev3.published
	name, _ := g.web.Publisher()
	require.Equal(t, "agent2", name)
	ln3.Close()
}

// Close while the gateway is silent returns (the agent does not wait on
// a peer that never answers).
func TestReviewRemoteCloseWithSilentGateway(t *testing.T) {
	g := newGateway(t)
	f := newFreezer(t, g.addr)
	p, ev := g.publisher(g.agent)
	p.TLSConfig = g.agent.Clone()
	p.TLSConfig.ServerName = "127.0.0.1"
	ln, err := p.Listen(ctxT(t), f.l.Addr().String(), "web")
	require.NoError(t, err)
	<-ev.published
	f.freeze()
	ctx := ctxT(t)
	closed := make(chan struct{})
	go func() { ln.Close(); close(closed) }()
	select {
	case <-closed:
	case <-ctx.Done():
		t.Fatal("Close hung")
	}
}

// One standby and two clients at once: one gets a working tunnel, the
// other UNAVAILABLE (rvTwoClients announces the standby announce times).
func TestReviewRemoteOneStandbyTwoClients(t *testing.T) { rvTwoClients(t, 1) }

// The same standby announced twice is parked once: two clients must not
// both be handed it.
func TestReviewRemoteStandbyAnnouncedTwice(t *testing.T) { rvTwoClients(t, 2) }

func rvTwoClients(t *testing.T, announce int) {
	g := newGateway(t)
	ctx := ctxT(t)
	for round := range 5 {
		ctrl := rvDial(t, ctx, g.addr, g.agent)
		_, err := ctrl.Call(ctx, switching.CommandPublish, rvArgs("web", "s1"))
		require.NoError(t, err)
		m := amp.NewMux()
		m.Add(&amp.Responder{Name: switching.CommandProtocolSwitch, Inline: true, Serve: func(ctx context.Context, _, _ *box.Box) error {
			return conn.FromContext(ctx).SwitchAfterAnswer(ctx, func(nc net.Conn) {
				if nc == nil {
					return
				}
				defer nc.Close()
				io.Copy(nc, nc)
			})
		}})
		sb, err := conn.Dial(ctx, "tcp", g.addr, &conn.Config{Logger: quiet(), Handler: m})
		require.NoError(t, err)
		cfg := g.agent.Clone()
		cfg.ServerName = "127.0.0.1"
		require.NoError(t, sb.StartTLS(ctx, cfg))
		for range announce {
			require.NoError(t, sb.SendBox(ctx, switching.CommandStandby, rvArgs("web", "s1")))
		}
		rvBarrier(ctx, sb)
		type res struct {
			c   net.Conn
			err error
		}
		rc := make(chan res, 2)
		dctx, cancel := context.WithTimeout(ctx, time.Second)
		for range 2 {
			go func() { c, err := g.web.Dial(dctx); rc <- res{c, err} }()
		}
		var got []net.Conn
		for range 2 {
			r := <-rc
			if r.err == nil {
				got = append(got, r.c)
			} else {
				t.Logf("round %d: %v", round, r.err)
			}
		}
		require.Len(t, got, 1, "round %d", round)
		err = rvUse(ctx, got[0])
		got[0].Close()
		cancel()
		require.NoError(t, err, "round %d: the tunnel was broken by the other client's attempt on the same standby: %v", round, err)
		g.web.Disconnect()
		sb.Close()
		ctrl.Close()
	}
}

// Close racing switches leaves no goroutine or descriptor of the agent.
func TestReviewRemoteCloseRacesSwitchLeaksNothing(t *testing.T) {
	g := newGateway(t)
	settle := func() (int, int) { runtime.GC(); return runtime.NumGoroutine(), openFDs(t) }
	g0, fd0 := settle()
	ctx := ctxT(t)
	for range 10 {
		p, ev := g.publisher(g.agent)
		p.Standby, p.MaxStandby = 3, 6
		ln, err := p.Listen(ctx, g.addr, "web")
		require.NoError(t, err)
		<-ev.published
		var wg sync.WaitGroup
		for range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
				defer cancel()
				c, err := g.web.Dial(dctx)
				if err == nil {
					c.Close()
				}
			}()
		}
		ln.Close()
		wg.Wait()
		g.waitUnpublished(t)
	}
	require.NoError(t, ctx.Err())
	deadline := time.Now().Add(10 * time.Second)
	for {
		n, fds := settle()
		if n <= g0 && fds <= fd0 {
			break
		}
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("goroutines %d (were %d), fds %d (were %d)\n%s", n, g0, fds, fd0, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Exposure.Close racing Dials: each Dial gets a tunnel or UNAVAILABLE;
// the agent, refused UNKNOWN_PROTOCOL on reconnecting, ends: Accept
// returns the *PublishError.
func TestReviewRemoteExposureCloseRacesDial(t *testing.T) {
	g := newGateway(t)
	ln, _ := g.listen(t, g.agent)
	ctx := ctxT(t)
	acc := make(chan error, 1)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				acc <- err
				return
			}
			go func() { defer c.Close(); io.Copy(c, c) }()
		}
	}()
	var wg sync.WaitGroup
	for range 6 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			defer cancel()
			c, err := g.web.Dial(dctx)
			if err != nil {
				if !errors.Is(err, switching.ErrUnavailable) {
					t.Errorf("Dial: %v", err)
				}
				return
			}
			defer c.Close()
			if err := rvUse(dctx, c); err != nil {
				t.Errorf("tunnel opened before Close broke: %v", err)
			}
		}()
	}
	g.web.Close()
	wg.Wait()
	select {
	case err := <-acc:
		var pe *switching.PublishError
		require.ErrorAs(t, err, &pe)
		require.ErrorIs(t, err, switching.ErrUnknownProtocol)
	case <-ctx.Done():
		t.Fatal("Accept hung after the exposure was withdrawn")
	}
}
