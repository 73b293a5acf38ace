package switching

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	mrand "math/rand/v2"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ampmux/ampmux/amp"
	"github.com/ampmux/ampmux/amp/box"
	"github.com/ampmux/ampmux/amp/conn"
)

// StepPublish is the step of a publish refused or failed.
const StepPublish Step = "publish"

// PublishError is a gateway's refusal to let this agent publish a route:
// Err matches ErrForbidden (the certificate's name is not a publisher's),
// ErrAlreadyPublished (another agent publishes it), ErrUnknownProtocol
// (the gateway does not expose it), ErrTLSRequired, or
// amp.ErrUnhandledCommand (the gateway cannot publish). It is final: the
// listener does not retry.
type PublishError struct {
	Route    string
	Identity string // PeerName of this agent's certificate, "" if unknown
	Gateway  string // the address dialled
	Err      error
}

func (e *PublishError) Error() string {
	return fmt.Sprintf("switching: gateway %s refused to let %q publish %q: %v", e.Gateway, e.Identity, e.Route, e.Err)
}

func (e *PublishError) Unwrap() error { return e.Err }

func final(err error) bool {
	for _, e := range []error{ErrForbidden, ErrAlreadyPublished, ErrUnknownProtocol, ErrTLSRequired, amp.ErrUnhandledCommand} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

// Publisher holds the options of an agent that publishes a route through
// a gateway (reverse tunnels: see the package documentation). The zero
// value needs only TLSConfig.
type Publisher struct {
	// TLSConfig configures StartTLS, as Dialer.TLSConfig does; it must
	// hold the client certificate the gateway knows the publisher by.
	// Without a ClientSessionCache, Listen gives its copy one, so that
	// standby connections resume the TLS session.
	TLSConfig *tls.Config

	// Standby is how many connections are kept ready for the gateway's
	// clients (default 2; each costs a TLS connection).
	Standby int
	// MaxStandby bounds the standby connections at once, counting those
	// the gateway asks for when its clients find none ready (default
	// 16, at least Standby).
	MaxStandby int
	// Backlog bounds the connections switched and not yet accepted;
	// beyond it the gateway's clients are refused (default 128).
	Backlog int

	// Heartbeat and HeartbeatTimeout are the control connection's
	// conn.Config.Heartbeat (default 30 s; negative: off) and
	// HeartbeatTimeout (default 15 s): a gateway gone without a FIN is
	// noticed within their sum, and the route published again.
	Heartbeat        time.Duration
	HeartbeatTimeout time.Duration

	// BackoffMin and BackoffMax bound the wait between reconnections
	// (defaults 500 ms and 30 s): it doubles after each failure from
	// BackoffMin up to BackoffMax, jittered to between half and all of
	// it, and starts again from BackoffMin once a publish succeeds. The
	// opening of standby connections backs off the same way.
	BackoffMin time.Duration
	BackoffMax time.Duration

	// NetDialer dials TCP; nil means a zero net.Dialer.
	NetDialer *net.Dialer
	// Logger receives reconnections and failures (default: discarded).
	Logger *slog.Logger

	// OnPublish, if set, is called each time the gateway has accepted
	// the publish (first in Listen, then after each reconnection), and
	// OnDisconnect each time the control connection ended, with why. They
	// run on the listener's goroutine: the reconnection waits for
	// OnDisconnect to return.
	OnPublish    func()
	OnDisconnect func(err error)
}

// ListenRemote publishes route name through the gateway at addr: it
// connects, secures the connection with StartTLS (cfg, with the client
// certificate the gateway's Expose names among its publishers) and
// publishes; the returned listener's Accept yields the gateway's clients
// of that route. It is Publisher.Listen with the default options.
func ListenRemote(ctx context.Context, addr, name string, cfg *tls.Config) (net.Listener, error) {
	p := &Publisher{TLSConfig: cfg}
	return p.Listen(ctx, addr, name)
}

// Listen publishes route name through the gateway at addr and returns
// the listener of its clients. ctx bounds the first publish only, like
// net.ListenConfig.Listen's: Listen returns its error, a *DialError (the
// gateway unreachable, the handshake failed) or a *PublishError (refused).
// Later the listener reconnects by itself, with backoff, whenever the
// control connection ends; a refusal then ends it, and Accept returns
// the *PublishError.
func (p *Publisher) Listen(ctx context.Context, addr, name string) (*RemoteListener, error) {
	cfg := secureConfig(p.TLSConfig)
	if len(cfg.Certificates) == 0 && cfg.GetClientCertificate == nil {
		return nil, &DialError{Step: StepStartTLS, Protocol: name, Err: errors.New("publishing needs a client certificate (tls.Config.Certificates)")}
	}
	if cfg.ServerName == "" && !cfg.InsecureSkipVerify {
		if host, _, err := net.SplitHostPort(addr); err == nil {
			cfg.ServerName = host
		}
	}
	if cfg.ClientSessionCache == nil {
		// Standby connections resume the control connection's TLS
		// session: a third cheaper each than a full handshake.
		cfg.ClientSessionCache = tls.NewLRUClientSessionCache(4)
	}
	l := &RemoteListener{
		p:        p.withDefaults(),
		cfg:      cfg,
		addr:     addr,
		name:     name,
		identity: identityOf(cfg),
		session:  newSession(),
		done:     make(chan struct{}),
		failed:   make(chan struct{}),
	}
	l.accept = make(chan net.Conn, l.p.Backlog)
	l.ctx, l.cancel = context.WithCancel(context.Background())
	l.ctrlMux, l.dataMux = amp.NewMux(), amp.NewMux()
	amp.HandleInline(l.ctrlMux, moreCmd, l.serveMore)
	l.dataMux.Add(&amp.Responder{
		Name:        CommandProtocolSwitch,
		Inline:      true,
		ErrorAnswer: ProtocolSwitch.ErrorAnswer,
		Serve:       l.serveSwitch,
	})
	s, err := l.connect(ctx)
	if err != nil {
		l.cancel()
		return nil, err
	}
	l.wg.Add(1)
	go l.run(s)
	return l, nil
}

func (p *Publisher) withDefaults() Publisher {
	q := *p
	if q.Standby <= 0 {
		q.Standby = 2
	}
	if q.MaxStandby <= 0 {
		q.MaxStandby = 16
	}
	q.MaxStandby = max(q.MaxStandby, q.Standby)
	if q.Backlog <= 0 {
		q.Backlog = 128
	}
	if q.Heartbeat == 0 {
		q.Heartbeat = 30 * time.Second
	}
	if q.HeartbeatTimeout <= 0 {
		q.HeartbeatTimeout = 15 * time.Second
	}
	if q.BackoffMin <= 0 {
		q.BackoffMin = 500 * time.Millisecond
	}
	if q.BackoffMax <= 0 {
		q.BackoffMax = 30 * time.Second
	}
	q.BackoffMax = max(q.BackoffMax, q.BackoffMin)
	if q.NetDialer == nil {
		q.NetDialer = &net.Dialer{}
	}
	if q.Logger == nil {
		q.Logger = quiet
	}
	return q
}

func identityOf(cfg *tls.Config) string {
	if len(cfg.Certificates) == 0 || len(cfg.Certificates[0].Certificate) == 0 {
		return ""
	}
	leaf := cfg.Certificates[0].Leaf
	if leaf == nil {
		var err error
		if leaf, err = x509.ParseCertificate(cfg.Certificates[0].Certificate[0]); err != nil {
			return ""
		}
	}
	name, _ := PeerName(leaf)
	return name
}

func newSession() string {
	var b [16]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// RemoteListener is the net.Listener of a published route: Accept yields
// the connections of the gateway's clients, switched (*Conn: CloseWrite
// half-closes them through to the gateway's client). Their RemoteAddr,
// and their Info's, is the gateway's; Info.Relayed says which client it
// relays, when the gateway says so (InfoOf).
type RemoteListener struct {
	p        Publisher
	cfg      *tls.Config
	addr     string
	name     string
	identity string
	session  string
	ctrlMux  *amp.Mux
	dataMux  *amp.Mux

	accept chan net.Conn
	queued atomic.Int32    // switches answered and not accepted yet
	ctx    context.Context // cancelled by Close
	cancel context.CancelFunc
	done   chan struct{} // closed by Close
	once   sync.Once
	wg     sync.WaitGroup // run and the switched connections' deliveries

	err    error         // the final refusal, set before failed is closed
	failed chan struct{} // closed when a refusal ended the listener
}

// session is one control connection and its standby connections.
type session struct {
	l      *RemoteListener
	ctrl   *conn.Conn
	ctx    context.Context // ends with the session: standby dials give up
	cancel context.CancelFunc
	wake   chan struct{} // buffered 1: a standby ended, more were asked for
	wg     sync.WaitGroup

	mu        sync.Mutex
	pending   int // standby connections open or opening
	extra     int // asked for by the gateway, not opened yet
	failures  int // standbys in a row that ended without a client
	notBefore time.Time
}

type sessionKey struct{}
type standbyKey struct{}

// standby is one standby connection, as its responders see it.
type standby struct{ switched atomic.Bool }

func (l *RemoteListener) connect(ctx context.Context) (*session, error) {
	s := &session{l: l, wake: make(chan struct{}, 1)}
	s.ctx, s.cancel = context.WithCancel(l.ctx)
	c, err := l.dial(ctx, &conn.Config{
		Handler:          l.ctrlMux,
		Heartbeat:        max(l.p.Heartbeat, 0),
		HeartbeatTimeout: l.p.HeartbeatTimeout,
		BaseContext:      context.WithValue(s.ctx, sessionKey{}, s),
		Logger:           l.p.Logger,
	})
	if err != nil {
		s.cancel()
		return nil, err
	}
	_, err = publishCmd.Call(ctx, c, PublishArgs{Name: l.name, Session: l.session})
	if err != nil {
		c.Close()
		s.cancel()
		if final(err) {
			return nil, &PublishError{Route: l.name, Identity: l.identity, Gateway: l.addr, Err: err}
		}
		return nil, &DialError{Step: StepPublish, Protocol: l.name, Err: err}
	}
	s.ctrl = c
	l.p.Logger.Info("published", "route", l.name, "gateway", l.addr, "identity", l.identity)
	if l.p.OnPublish != nil {
		l.p.OnPublish()
	}
	return s, nil
}

// dial connects to the gateway and starts TLS.
func (l *RemoteListener) dial(ctx context.Context, cfg *conn.Config) (*conn.Conn, error) {
	nc, err := l.p.NetDialer.DialContext(ctx, "tcp", l.addr)
	if err != nil {
		return nil, &DialError{Step: StepConnect, Protocol: l.name, Err: err}
	}
	c := conn.New(nc, cfg)
	if err := c.StartTLS(ctx, l.cfg); err != nil {
		c.Close()
		return nil, &DialError{Step: StepStartTLS, Protocol: l.name, Err: err}
	}
	return c, nil
}

// run serves sessions one after another until Close or a refusal.
func (l *RemoteListener) run(s *session) {
	defer l.wg.Done()
	for {
		err := s.serve()
		if l.ctx.Err() != nil {
			return
		}
		l.p.Logger.Warn("control connection lost; reconnecting", "route", l.name, "gateway", l.addr, "err", err)
		if l.p.OnDisconnect != nil {
			l.p.OnDisconnect(err)
		}
		for attempt := 0; ; attempt++ {
			if !l.sleep(l.backoff(attempt)) {
				return
			}
			ctx, cancel := context.WithTimeout(l.ctx, time.Minute)
			s, err = l.connect(ctx)
			cancel()
			if err == nil {
				break
			}
			if l.ctx.Err() != nil {
				return
			}
			var pe *PublishError
			if errors.As(err, &pe) {
				l.p.Logger.Error("publish refused", "route", l.name, "gateway", l.addr, "err", err)
				l.err = pe
				close(l.failed)
				return
			}
			l.p.Logger.Warn("reconnecting failed", "route", l.name, "gateway", l.addr, "err", err)
		}
	}
}

// backoff is the wait before attempt n (from 0): BackoffMin doubled n
// times, at most BackoffMax, jittered to between half and all of it.
func (l *RemoteListener) backoff(n int) time.Duration {
	d := l.p.BackoffMin
	for range min(n, 62) {
		if d >= l.p.BackoffMax/2 {
			d = l.p.BackoffMax
			break
		}
		d *= 2
	}
	d = min(d, l.p.BackoffMax)
	return d/2 + mrand.N(d/2+1)
}

func (l *RemoteListener) sleep(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-l.ctx.Done():
		return false
	}
}

// serve keeps the standby connections of a session until its control
// connection ends or the listener closes, then closes them all.
func (s *session) serve() error {
	l := s.l
	t := time.NewTimer(time.Hour)
	t.Stop()
	defer t.Stop()
	for {
		if wait := s.topUp(); wait > 0 {
			t.Reset(wait)
		}
		select {
		case <-s.ctrl.Done():
		case <-l.ctx.Done():
		case <-s.wake:
			continue
		case <-t.C:
			continue
		}
		break
	}
	s.cancel()
	s.ctrl.Close()
	s.wg.Wait()
	if err := s.ctrl.Err(); err != nil {
		return err
	}
	return conn.ErrConnectionLost
}

func (s *session) poke() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// topUp opens the standby connections missing, and returns how long to
// wait first if it is backing off.
func (s *session) topUp() time.Duration {
	l := s.l
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.failures > 0 {
		if wait := time.Until(s.notBefore); wait > 0 {
			return wait
		}
	}
	for s.pending < l.p.Standby || s.extra > 0 && s.pending < l.p.MaxStandby {
		if s.pending >= l.p.Standby {
			s.extra--
		}
		s.pending++
		s.wg.Add(1)
		go s.standby()
		if s.failures > 0 {
			break // one at a time while backing off
		}
	}
	if s.pending >= l.p.MaxStandby {
		s.extra = 0
	}
	return 0
}

// standby opens one standby connection and holds it until the gateway
// switches it to a client, it ends, or the session does.
func (s *session) standby() {
	defer s.wg.Done()
	l := s.l
	sb := &standby{}
	c, err := l.dial(s.ctx, &conn.Config{
		Handler:     l.dataMux,
		BaseContext: context.WithValue(s.ctx, standbyKey{}, sb),
		Logger:      l.p.Logger,
	})
	if err == nil {
		if _, err = standbyCmd.Call(s.ctx, c, PublishArgs{Name: l.name, Session: l.session}); err != nil {
			err = &DialError{Step: StepPublish, Protocol: l.name, Err: err}
		}
	}
	if err == nil {
		select {
		case <-c.Done():
		case <-s.ctx.Done():
		}
	}
	if c != nil {
		c.Close()
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.pending--
	switch {
	case sb.switched.Load():
		s.failures = 0
	case s.ctx.Err() == nil:
		s.failures++
		s.notBefore = time.Now().Add(l.backoff(s.failures - 1))
		l.p.Logger.Debug("standby connection ended unused", "route", l.name, "err", err)
	}
	s.poke()
}

// serveMore takes the gateway's _ampmux_more on the control connection.
func (l *RemoteListener) serveMore(ctx context.Context, a MoreArgs) (struct{}, error) {
	s, _ := ctx.Value(sessionKey{}).(*session)
	if s == nil || a.Name != l.name || a.N <= 0 {
		return struct{}{}, nil
	}
	s.mu.Lock()
	// Clamp before adding: a hostile N near MaxInt must not wrap.
	s.extra = min(s.extra+min(a.N, l.p.MaxStandby), l.p.MaxStandby)
	s.mu.Unlock()
	s.poke()
	return struct{}{}, nil
}

// serveSwitch takes the gateway's ProtocolSwitch on a standby connection:
// a client of the route is there.
func (l *RemoteListener) serveSwitch(ctx context.Context, req, _ *box.Box) error {
	var args SwitchArgs
	if err := ProtocolSwitch.DecodeArgs(req, &args, nil); err != nil {
		return &amp.RemoteError{Code: amp.CodeUnknown, Description: err.Error(), Err: err}
	}
	if string(args.Protocol) != l.name {
		return fmt.Errorf("%w: %q (this agent publishes %q)", ErrUnknownProtocol, args.Protocol, l.name)
	}
	sb, _ := ctx.Value(standbyKey{}).(*standby)
	c := conn.FromContext(ctx)
	if sb == nil || c == nil {
		return fmt.Errorf("%w: not a standby connection", ErrUnavailable)
	}
	select {
	case <-l.done:
		return fmt.Errorf("%w: %q: listener closed", ErrUnavailable, l.name)
	default:
	}
	if l.queued.Add(1) > int32(cap(l.accept)) {
		l.queued.Add(-1)
		return fmt.Errorf("%w: %q: too many connections not accepted", ErrUnavailable, l.name)
	}
	info := infoFor(c, l.name)
	if req.Has("peer") {
		info.Relayed = &Relayed{Addr: req.GetString("peer"), Name: req.GetString("peer_name")}
	}
	sb.switched.Store(true)
	l.wg.Add(1)
	err := c.SwitchAfterAnswer(ctx, func(nc net.Conn) {
		defer l.wg.Done()
		if nc == nil {
			l.queued.Add(-1)
			return
		}
		select {
		case l.accept <- &Conn{Conn: nc, info: info}:
		case <-l.done:
			l.queued.Add(-1)
			nc.Close()
		}
	})
	if err != nil {
		l.queued.Add(-1)
		l.wg.Done()
	}
	return err
}

// Accept waits for the next client of the route. After a refusal of the
// gateway it returns the *PublishError; after Close, net.ErrClosed.
func (l *RemoteListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.accept:
		l.queued.Add(-1)
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	case <-l.failed:
		select {
		case c := <-l.accept:
			l.queued.Add(-1)
			return c, nil
		default:
		}
		return nil, l.err
	}
}

// Close unpublishes the route and closes every connection the listener
// holds (control, standby, switched and not accepted), and returns once
// its goroutines have exited. Connections accepted are the caller's.
func (l *RemoteListener) Close() error {
	l.once.Do(func() {
		close(l.done)
		l.cancel()
		l.wg.Wait()
		for {
			select {
			case c := <-l.accept:
				c.Close()
			default:
				return
			}
		}
	})
	return nil
}

// Addr returns the route as an address: network "ampswitch", the route's
// name.
func (l *RemoteListener) Addr() net.Addr { return switchAddr(l.name) }

// Route and Identity return the route published and the PeerName of
// this agent's certificate ("" if it cannot be read from TLSConfig).
func (l *RemoteListener) Route() string    { return l.name }
func (l *RemoteListener) Identity() string { return l.identity }
