package switching_test

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ampmux/ampmux/amp"
	"github.com/ampmux/ampmux/amp/box"
	"github.com/ampmux/ampmux/amp/conn"
	"github.com/ampmux/ampmux/amp/switching"
	"github.com/ampmux/ampmux/internal/pki"
	"github.com/ampmux/ampmux/internal/proctest"
)

// gateway serves a Registry exposing "web" (clients: alice; publishers:
// agent, agent2) on loopback, with StartTLS and client certificates.
type gateway struct {
	addr                      string
	reg                       *switching.Registry
	web                       *switching.Exposure
	srv                       *conn.Server
	tls                       *tls.Config // the server's
	alice, agent, agent2, bad *tls.Config
}

func newGateway(t *testing.T) *gateway { return newGatewayWith(t, 0) }

func newGatewayWith(t *testing.T, heartbeat time.Duration) *gateway {
	ca, err := pki.NewCA("test CA")
	require.NoError(t, err)
	srvCert, err := ca.Server("localhost", "127.0.0.1")
	require.NoError(t, err)
	cfg := func(name string) *tls.Config {
		c, err := ca.Client(name)
		require.NoError(t, err)
		return &tls.Config{RootCAs: ca.Pool(), Certificates: []tls.Certificate{c.TLS()}}
	}
	g := &gateway{reg: switching.NewRegistry(),
		alice: cfg("alice"), agent: cfg("agent"), agent2: cfg("agent2"), bad: cfg("mallory")}
	g.web = g.reg.Expose("web", []string{"agent", "agent2"}, switching.Policy{AllowedNames: []string{"alice"}})
	m := amp.NewMux()
	g.reg.Install(m)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	g.tls = &tls.Config{
		Certificates: []tls.Certificate{srvCert.TLS()},
		ClientCAs:    ca.Pool(),
		ClientAuth:   tls.VerifyClientCertIfGiven,
	}
	g.srv = &conn.Server{Config: conn.Config{Handler: m, Logger: quiet(), Heartbeat: heartbeat, HeartbeatTimeout: 5 * time.Second, TLS: g.tls}}
	served := make(chan struct{})
	go func() { defer close(served); g.srv.Serve(l) }()
	t.Cleanup(func() {
		g.srv.Close()
		<-served
	})
	g.addr = l.Addr().String()
	return g
}

func (g *gateway) waitUnpublished(t *testing.T) {
	for {
		ch := g.web.Changed()
		if _, ok := g.web.Publisher(); !ok {
			return
		}
		select {
		case <-ch:
		case <-ctxT(t).Done():
			t.Fatal("still published")
		}
	}
}

// events counts publishes and disconnections of a Publisher.
type events struct {
	published    chan struct{}
	disconnected chan error
	hold         atomic.Pointer[chan struct{}] // if set, OnDisconnect waits for it to close
}

func (g *gateway) publisher(tlsCfg *tls.Config) (*switching.Publisher, *events) {
	ev := &events{published: make(chan struct{}, 1024), disconnected: make(chan error, 1024)}
	return &switching.Publisher{
		TLSConfig:  tlsCfg,
		BackoffMin: time.Millisecond,
		BackoffMax: 5 * time.Millisecond,
		Logger:     quiet(),
		OnPublish:  func() { ev.published <- struct{}{} },
		OnDisconnect: func(err error) {
			ev.disconnected <- err
			if h := ev.hold.Load(); h != nil {
				<-*h
			}
		},
	}, ev
}

func (g *gateway) listen(t *testing.T, tlsCfg *tls.Config) (*switching.RemoteListener, *events) {
	p, ev := g.publisher(tlsCfg)
	ln, err := p.Listen(ctxT(t), g.addr, "web")
	require.NoError(t, err)
	t.Cleanup(func() { ln.Close() })
	<-ev.published
	return ln, ev
}

// echoOn serves ln with an echo that passes half-closes on.
func echoOn(ln net.Listener) <-chan struct{} {
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				io.Copy(c, c)
				c.(interface{ CloseWrite() error }).CloseWrite()
			}()
		}
	}()
	return done
}

func TestRemoteServesHTTP(t *testing.T) {
	g := newGateway(t)
	ln, _ := g.listen(t, g.agent)
	require.Equal(t, "agent", ln.Identity())
	name, ok := g.web.Publisher()
	require.True(t, ok)
	require.Equal(t, "agent", name)

	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "hello from behind the NAT: "+r.URL.Path)
	})}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()

	tr := &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return switching.Dial(ctx, g.addr, "web", g.alice)
	}}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr}
	for i := range 5 {
		if i > 0 {
			tr.CloseIdleConnections() // a fresh tunnel each time
		}
		resp, err := client.Get("http://web/x")
		require.NoError(t, err)
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		require.NoError(t, err)
		require.Equal(t, "hello from behind the NAT: /x", string(body))
	}
	tr.CloseIdleConnections()
	require.NoError(t, srv.Close())
	require.ErrorIs(t, <-served, http.ErrServerClosed)
}

func TestRemoteUnavailableWithoutPublisher(t *testing.T) {
	g := newGateway(t)
	_, err := switching.Dial(ctxT(t), g.addr, "web", g.alice)
	var de *switching.DialError
	require.ErrorAs(t, err, &de)
	require.Equal(t, switching.StepSwitch, de.Step)
	require.ErrorIs(t, err, switching.ErrUnavailable)
	// The client policy still applies before that.
	_, err = switching.Dial(ctxT(t), g.addr, "web", g.bad)
	require.ErrorIs(t, err, switching.ErrForbidden)
}

func TestRemoteRefusals(t *testing.T) {
	g := newGateway(t)
	p, _ := g.publisher(g.bad)
	_, err := p.Listen(ctxT(t), g.addr, "web")
	var pe *switching.PublishError
	require.ErrorAs(t, err, &pe)
	require.ErrorIs(t, err, switching.ErrForbidden)
	require.Equal(t, "mallory", pe.Identity)
	require.Equal(t, "web", pe.Route)

	p, _ = g.publisher(g.agent)
	_, err = p.Listen(ctxT(t), g.addr, "nosuch")
	require.ErrorIs(t, err, switching.ErrUnknownProtocol)

	p, _ = g.publisher(&tls.Config{RootCAs: g.alice.RootCAs})
	_, err = p.Listen(ctxT(t), g.addr, "web")
	require.Error(t, err, "no client certificate")

	first, _ := g.listen(t, g.agent)
	for _, cfg := range []*tls.Config{g.agent, g.agent2} { // another process, another identity
		p, _ = g.publisher(cfg)
		_, err = p.Listen(ctxT(t), g.addr, "web")
		require.ErrorAs(t, err, &pe)
		require.ErrorIs(t, err, switching.ErrAlreadyPublished)
	}
	// The first one still serves.
	done := echoOn(first)
	c, err := switching.Dial(ctxT(t), g.addr, "web", g.alice)
	require.NoError(t, err)
	roundTrip(t, c, 10_000)
	c.Close()
	first.Close()
	<-done
}

// A gateway that knows nothing of publishing (Twisted, an older ampmux)
// answers UNHANDLED: a refusal too, not something to retry.
func TestRemoteGatewayWithoutPublishing(t *testing.T) {
	g := newGateway(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	srv := &conn.Server{Config: conn.Config{Handler: amp.NewMux(), Logger: quiet(), TLS: g.tls}}
	go srv.Serve(l)
	defer srv.Close()
	p, _ := g.publisher(g.agent)
	_, err = p.Listen(ctxT(t), l.Addr().String(), "web")
	var pe *switching.PublishError
	require.ErrorAs(t, err, &pe)
	require.ErrorIs(t, err, amp.ErrUnhandledCommand)
}

// AcceptPublishers and Dial: a route with a handler of its own, which
// gets its connection to the publisher in Prepare, as from a backend.
func TestRemoteAcceptPublishers(t *testing.T) {
	g := newGateway(t)
	x := g.reg.AcceptPublishers("svc", []string{"agent"})
	handled := make(chan string, 1)
	g.reg.Register("svc", func(c net.Conn, info switching.Info) {
		back := info.State.(net.Conn)
		defer back.Close()
		defer c.Close()
		io.WriteString(back, "framed by the gateway: ")
		buf := make([]byte, 5)
		io.ReadFull(c, buf)
		back.Write(buf)
		back.(interface{ CloseWrite() error }).CloseWrite()
		b, _ := io.ReadAll(back)
		handled <- string(b)
	}, switching.Policy{Prepare: func(ctx context.Context, _ switching.Info) (any, error) { return x.Dial(ctx) }})
	p, ev := g.publisher(g.agent)
	ln, err := p.Listen(ctxT(t), g.addr, "svc")
	require.NoError(t, err)
	defer ln.Close()
	<-ev.published
	done := echoOn(ln)
	c, err := switching.Dial(ctxT(t), g.addr, "svc", g.alice)
	require.NoError(t, err)
	io.WriteString(c, "hello")
	require.Equal(t, "framed by the gateway: hello", <-handled)
	c.Close()
	ln.Close()
	<-done
	require.NoError(t, x.Close())
	_, err = x.Dial(ctxT(t))
	require.ErrorIs(t, err, switching.ErrUnavailable)
}

// A refusal after a reconnection ends the listener: Accept says why.
func TestRemoteRefusedOnReconnect(t *testing.T) {
	g := newGateway(t)
	ln, ev := g.listen(t, g.agent)
	hold := make(chan struct{})
	ev.hold.Store(&hold)
	g.web.Disconnect()
	<-ev.disconnected
	// While the agent is held, another takes the route.
	ln2, _ := g.listen(t, g.agent2)
	defer ln2.Close()
	close(hold)
	_, err := ln.Accept()
	var pe *switching.PublishError
	require.ErrorAs(t, err, &pe)
	require.ErrorIs(t, err, switching.ErrAlreadyPublished)
	require.Equal(t, "agent", pe.Identity)
	_, err = ln.Accept()
	require.ErrorIs(t, err, switching.ErrAlreadyPublished, "and again")
}

// The wire, by hand: a publish again with the same session replaces a
// stale control connection; another session is refused; a standby of
// someone else's session is hung up on.
func TestPublishWire(t *testing.T) {
	g := newGateway(t)
	ctx := ctxT(t)
	dial := func(cfg *tls.Config) *conn.Conn {
		c, err := conn.Dial(ctx, "tcp", g.addr, &conn.Config{Logger: quiet()})
		require.NoError(t, err)
		t.Cleanup(func() { c.Close() })
		cfg = cfg.Clone()
		cfg.ServerName = "127.0.0.1"
		require.NoError(t, c.StartTLS(ctx, cfg))
		return c
	}
	publish := func(c *conn.Conn, session string) error {
		var args box.Box
		args.SetString("name", "web")
		args.SetString("session", session)
		_, err := c.Call(ctx, switching.CommandPublish, &args)
		return err
	}
	first := dial(g.agent)
	require.NoError(t, publish(first, "s1"))
	require.NoError(t, publish(first, "s1"), "again on the same connection")
	other := dial(g.agent)
	err := publish(other, "s2")
	var re *amp.RemoteError
	require.ErrorAs(t, err, &re)
	require.Equal(t, switching.CodeAlreadyPublished, re.Code)
	second := dial(g.agent)
	require.NoError(t, publish(second, "s1"))
	<-first.Done() // replaced, and closed by the gateway

	stray := dial(g.agent)
	var args box.Box
	args.SetString("name", "web")
	args.SetString("session", "s2")
	require.NoError(t, stray.SendBox(ctx, switching.CommandStandby, &args))
	<-stray.Done()
	require.Equal(t, 0, g.web.Standby())

	plain, err := conn.Dial(ctx, "tcp", g.addr, &conn.Config{Logger: quiet()})
	require.NoError(t, err)
	defer plain.Close()
	err = publish(plain, "s3")
	require.ErrorAs(t, err, &re)
	require.Equal(t, switching.CodeTLSRequired, re.Code)
}

func TestRemoteReconnects(t *testing.T) {
	g := newGateway(t)
	ln, ev := g.listen(t, g.agent)
	done := echoOn(ln)
	for range 3 {
		c, err := switching.Dial(ctxT(t), g.addr, "web", g.alice)
		require.NoError(t, err)
		roundTrip(t, c, 100_000)
		c.Close()

		hold := make(chan struct{})
		ev.hold.Store(&hold)
		require.True(t, g.web.Disconnect())
		// Unpublished at once: refused, while the agent (held in
		// OnDisconnect) cannot be back.
		_, err = switching.Dial(ctxT(t), g.addr, "web", g.alice)
		require.ErrorIs(t, err, switching.ErrUnavailable)
		<-ev.disconnected
		close(hold)
		<-ev.published
	}
	c, err := switching.Dial(ctxT(t), g.addr, "web", g.alice)
	require.NoError(t, err)
	roundTrip(t, c, 1000)
	c.Close()
	ln.Close()
	<-done
}

// Half-closes cross the gateway both ways: the agent sees the client's
// EOF and still answers; the client then sees the agent's.
func TestRemoteHalfClose(t *testing.T) {
	g := newGateway(t)
	ln, _ := g.listen(t, g.agent)
	got, relayed := make(chan string, 1), make(chan string, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			got <- err.Error()
			return
		}
		defer c.Close()
		info, _ := switching.InfoOf(c)
		if info.Relayed == nil || info.Relayed.Name != "alice" {
			got <- fmt.Sprintf("relayed: %+v", info.Relayed)
			return
		}
		relayed <- info.Relayed.Addr
		b, err := io.ReadAll(c) // to the client's half-close
		if err != nil {
			got <- err.Error()
			return
		}
		got <- string(b)
		io.WriteString(c, "pong")
		c.(interface{ CloseWrite() error }).CloseWrite()
		io.ReadAll(c)
	}()
	c, err := switching.Dial(ctxT(t), g.addr, "web", g.alice)
	require.NoError(t, err)
	defer c.Close()
	io.WriteString(c, "ping")
	require.NoError(t, c.(interface{ CloseWrite() error }).CloseWrite())
	select {
	case addr := <-relayed: // the agent knows who it serves
		require.Equal(t, c.LocalAddr().String(), addr)
	case s := <-got:
		t.Fatal(s)
	}
	require.Equal(t, "ping", <-got)
	b, err := io.ReadAll(c)
	require.NoError(t, err)
	require.Equal(t, "pong", string(b))
}

// More clients at once than standby connections: the gateway asks for
// more, and every client gets through.
func TestRemoteBurst(t *testing.T) {
	g := newGateway(t)
	ln, _ := g.listen(t, g.agent)
	done := echoOn(ln)
	const n = 20
	errs := make(chan error, n)
	for range n {
		go func() {
			c, err := switching.Dial(ctxT(t), g.addr, "web", g.alice)
			if err != nil {
				errs <- err
				return
			}
			defer c.Close()
			io.WriteString(c, "x")
			b := make([]byte, 1)
			_, err = io.ReadFull(c, b)
			errs <- err
		}()
	}
	for range n {
		require.NoError(t, <-errs)
	}
	ln.Close()
	<-done
}

// Heartbeats on every connection, both ends, probing all the time: the
// gateway's probes on standby connections never get in the way of its
// switches.
func TestRemoteHeartbeats(t *testing.T) {
	g := newGatewayWith(t, time.Millisecond)
	p, ev := g.publisher(g.agent)
	p.Heartbeat, p.HeartbeatTimeout = time.Millisecond, 5*time.Second
	ln, err := p.Listen(ctxT(t), g.addr, "web")
	require.NoError(t, err)
	defer ln.Close()
	<-ev.published
	done := echoOn(ln)
	for range 50 {
		c, err := switching.Dial(ctxT(t), g.addr, "web", g.alice)
		require.NoError(t, err)
		roundTrip(t, c, 1000)
		c.Close()
	}
	ln.Close()
	<-done
}

// A full backlog: the agent refuses, and the client is told UNAVAILABLE
// rather than kept waiting.
func TestRemoteBacklogFull(t *testing.T) {
	g := newGateway(t)
	p, ev := g.publisher(g.agent)
	p.Backlog = 1
	ln, err := p.Listen(ctxT(t), g.addr, "web")
	require.NoError(t, err)
	defer ln.Close()
	<-ev.published
	c, err := switching.Dial(ctxT(t), g.addr, "web", g.alice) // queued, not accepted
	require.NoError(t, err)
	defer c.Close()
	_, err = switching.Dial(ctxT(t), g.addr, "web", g.alice)
	require.ErrorIs(t, err, switching.ErrUnavailable)
	a, err := ln.Accept()
	require.NoError(t, err)
	a.Close()
}

// Close leaves nothing behind: the route is unpublished, and Accept says
// net.ErrClosed.
func TestRemoteClose(t *testing.T) {
	g := newGateway(t)
	ln, ev := g.listen(t, g.agent)
	require.NoError(t, ln.Close())
	_, err := ln.Accept()
	require.ErrorIs(t, err, net.ErrClosed)
	select {
	case err := <-ev.disconnected:
		t.Fatalf("OnDisconnect after Close: %v", err)
	default:
	}
	// The gateway notices the control connection's end; a new publisher
	// is then welcome.
	g.waitUnpublished(t)
	ln2, _ := g.listen(t, g.agent2)
	ln2.Close()
}

// Unregistering the route disconnects the publisher, who is then refused.
func TestRemoteUnregister(t *testing.T) {
	g := newGateway(t)
	ln, _ := g.listen(t, g.agent)
	g.reg.Unregister("web")
	_, err := ln.Accept()
	require.ErrorIs(t, err, switching.ErrUnknownProtocol)
	_, err = switching.Dial(ctxT(t), g.addr, "web", g.alice)
	require.ErrorIs(t, err, switching.ErrUnknownProtocol)
}

// Registering another handler over an exposed route withdraws the
// exposure too; Expose again takes publishers again.
func TestRemoteRegisterOverExpose(t *testing.T) {
	g := newGateway(t)
	ln, _ := g.listen(t, g.agent)
	g.reg.Register("web", echo, switching.Policy{})
	_, err := ln.Accept()
	require.ErrorIs(t, err, switching.ErrUnknownProtocol)
	c, err := switching.Dial(ctxT(t), g.addr, "web", g.alice) // the new handler
	require.NoError(t, err)
	roundTrip(t, c, 100)
	c.Close()

	g.web = g.reg.Expose("web", []string{"agent"}, switching.Policy{})
	ln2, _ := g.listen(t, g.agent)
	done := echoOn(ln2)
	c, err = switching.Dial(ctxT(t), g.addr, "web", g.alice)
	require.NoError(t, err)
	roundTrip(t, c, 100)
	c.Close()
	ln2.Close()
	<-done
}

func openFDs(t *testing.T) int {
	if runtime.GOOS != "linux" {
		return 0
	}
	return proctest.OpenFDs(t, proctest.Self)
}

// Hundreds of control connections dropped by the gateway: the agent
// publishes again each time, and once it is closed the goroutines and
// descriptors are back to what they were.
func TestRemoteChurnLeaksNothing(t *testing.T) {
	g := newGateway(t)
	settle := func() (int, int) { runtime.GC(); return runtime.NumGoroutine(), openFDs(t) }
	g0, fd0 := settle()
	ln, ev := g.listen(t, g.agent)
	done := echoOn(ln)
	rounds := 300
	if testing.Short() {
		rounds = 50
	}
	for i := range rounds {
		if i%50 == 0 {
			c, err := switching.Dial(ctxT(t), g.addr, "web", g.alice)
			require.NoError(t, err)
			roundTrip(t, c, 1000)
			c.Close()
		}
		require.True(t, g.web.Disconnect())
		<-ev.disconnected
		<-ev.published
	}
	require.NoError(t, ln.Close())
	<-done
	// The gateway closes what it dropped on goroutines of its own, and
	// its conns end as their peers' FINs arrive: wait for the counts to
	// settle (bounded), then compare.
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

// Standby connections resume the control connection's TLS session, and
// the gateway still knows the publisher by its certificate (it parks
// only standbys whose verified certificate names a publisher).
func TestRemoteStandbysResumeTLS(t *testing.T) {
	g := newGateway(t)
	ln, _ := g.listen(t, g.agent)
	ctx := ctxT(t)
	for i := range 4 {
		c, err := g.web.Dial(ctx)
		require.NoError(t, err, "dial %d", i)
		a, err := ln.Accept()
		require.NoError(t, err)
		info, ok := switching.InfoOf(a)
		require.True(t, ok)
		require.NotNil(t, info.TLS)
		require.True(t, info.TLS.DidResume, "standby %d did a full handshake", i)
		a.Close()
		c.Close()
	}
}
