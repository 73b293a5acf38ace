package switching

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"sync"
	"time"

	"github.com/ampmux/ampmux/amp"
	"github.com/ampmux/ampmux/amp/box"
	"github.com/ampmux/ampmux/amp/conn"
	"github.com/ampmux/ampmux/internal/tunnel"
)

// Wire names of the publishing commands (reverse tunnels; see the package
// documentation) and of the refusal they add.
const (
	CommandPublish = "_ampmux_publish"
	CommandStandby = "_ampmux_standby"
	CommandMore    = "_ampmux_more"

	CodeAlreadyPublished = "ALREADY_PUBLISHED"
)

// ErrAlreadyPublished refuses a publisher while another one's control
// connection serves the route.
var ErrAlreadyPublished = errors.New("switching: already published")

// PublishArgs are the arguments of _ampmux_publish and _ampmux_standby:
// the route, and the agent's session (random, kept across its
// reconnections).
type PublishArgs struct {
	Name    string `amp:"name"`
	Session string `amp:"session"`
}

// MoreArgs are _ampmux_more's: open N more standby connections for Name.
type MoreArgs struct {
	Name string `amp:"name"`
	N    int    `amp:"n"`
}

var (
	publishCmd = amp.NewCommand[PublishArgs, struct{}](CommandPublish, amp.Spec{
		Errors: map[string]error{
			CodeUnknownProtocol:  ErrUnknownProtocol,
			CodeTLSRequired:      ErrTLSRequired,
			CodeForbidden:        ErrForbidden,
			CodeAlreadyPublished: ErrAlreadyPublished,
		},
	})
	standbyCmd = amp.NewCommand[PublishArgs, struct{}](CommandStandby, amp.Spec{NoAnswer: true})
	moreCmd    = amp.NewCommand[MoreArgs, struct{}](CommandMore, amp.Spec{NoAnswer: true})
)

const (
	// maxIdleStandby bounds the standby connections a gateway keeps for
	// one route; more are closed.
	maxIdleStandby = 64
	// standbySwitchTimeout bounds the switch of one standby connection:
	// one that does not answer in time (gone without a FIN) is dropped
	// and the next one tried.
	standbySwitchTimeout = 5 * time.Second
)

// Exposure is the gateway's side of a published route: who may publish
// it, the publisher connected now, and its standby connections. Make one
// with Registry.Expose (the route and its tunnels too) or
// Registry.AcceptPublishers (the publishing side alone, for a route
// served by a handler of the caller's that Dials it).
type Exposure struct {
	name       string
	publishers []string
	reg        *Registry

	mu      sync.Mutex
	closed  bool
	changed chan struct{} // closed, and replaced, when pub changes
	pub     *publisher
	idle    []*conn.Conn // standby connections of pub, oldest first
	waiters []*waiter    // Dials waiting for a standby, oldest first
}

// publisher is one agent's control connection.
type publisher struct {
	name    string // PeerName of its certificate
	session string
	c       *conn.Conn
	gone    chan struct{} // closed when it no longer publishes
}

type waiter struct{ ch chan *conn.Conn } // buffered 1

// Expose offers route name to clients under policy p, exactly as Register
// would (TLS, AllowedNames, Authorize, Prepare), and serves its switched
// connections with a tunnel to a publisher: an agent whose verified
// certificate's PeerName is one of publishers, connected to this gateway
// with ListenRemote. While no publisher is connected, a switch to name is
// refused at once with UNAVAILABLE. p.Prepare, if set, runs first; what
// it returns is closed (if an io.Closer) when the tunnel ends. The tunnel
// is a tunnel.PipeWith with its default timeouts.
//
// Expose replaces any earlier registration and exposure of name. Its
// route and its exposure go together: Unregister(name), a later Register
// of name, or the Exposure's Close withdraw both (the publisher is
// disconnected; tunnels already open go on).
func (r *Registry) Expose(name string, publishers []string, p Policy) *Exposure {
	x := r.AcceptPublishers(name, publishers)
	user := p.Prepare
	p.Prepare = func(ctx context.Context, info Info) (any, error) {
		var st any
		if user != nil {
			var err error
			if st, err = user(ctx, info); err != nil {
				return nil, err
			}
		}
		back, err := x.DialFor(ctx, info)
		if err != nil {
			closeState(st)
			return nil, err
		}
		return &exposed{state: st, backend: back}, nil
	}
	r.register(&protocol{name: name, policy: p, serve: pipeExposed, exposure: x})
	return x
}

// exposed is what an Expose route's Prepare hands its handler.
type exposed struct {
	state   any
	backend net.Conn
}

func (e *exposed) Close() error {
	closeState(e.state)
	return e.backend.Close()
}

func closeState(st any) {
	if cl, ok := st.(io.Closer); ok {
		cl.Close()
	}
}

func pipeExposed(c net.Conn, info Info) {
	e := info.State.(*exposed)
	defer closeState(e.state)
	tunnel.PipeWith(c, e.backend, nil, tunnel.Options{})
}

// AcceptPublishers lets publishers (PeerNames of verified client
// certificates) publish route name, without offering the route to
// clients: the caller registers name itself, with a handler that gets its
// connection to the publisher from the Exposure's Dial (in Prepare, as it
// would dial a backend). It replaces, and closes, an earlier exposure of
// name. It panics if publishers is empty.
func (r *Registry) AcceptPublishers(name string, publishers []string) *Exposure {
	if name == "" || len(publishers) == 0 {
		panic("switching: AcceptPublishers needs a name and publishers")
	}
	x := &Exposure{name: name, publishers: slices.Clone(publishers), reg: r, changed: make(chan struct{})}
	r.mu.Lock()
	old := r.exposures[name]
	r.exposures[name] = x
	r.mu.Unlock()
	if old != nil {
		old.Close()
	}
	return x
}

func (r *Registry) exposure(name string) *Exposure {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.exposures[name]
}

// Name returns the route's name.
func (x *Exposure) Name() string { return x.name }

// Publisher returns the PeerName of the publisher connected now.
func (x *Exposure) Publisher() (name string, ok bool) {
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.pub == nil {
		return "", false
	}
	return x.pub.name, true
}

// Changed returns a channel closed at the next change of publisher (a
// publish, a disconnection). To wait for a publisher, take the channel,
// then look at Publisher, then wait on it.
func (x *Exposure) Changed() <-chan struct{} {
	x.mu.Lock()
	defer x.mu.Unlock()
	return x.changed
}

func (x *Exposure) changedLocked() {
	close(x.changed)
	x.changed = make(chan struct{})
}

// Standby returns how many standby connections the publisher has ready.
func (x *Exposure) Standby() int {
	x.mu.Lock()
	defer x.mu.Unlock()
	x.pruneLocked()
	return len(x.idle)
}

// Disconnect closes the connected publisher's control and standby
// connections, and reports whether there was one. The route is
// unpublished when Disconnect returns (switches to it are refused with
// UNAVAILABLE); the agent reconnects and may publish it again.
func (x *Exposure) Disconnect() bool {
	x.mu.Lock()
	defer x.mu.Unlock()
	p := x.pub
	if p != nil {
		x.dropLocked(p)
	}
	return p != nil
}

// Close withdraws the exposure: the publisher is disconnected and further
// publishes of the route are refused with UNKNOWN_PROTOCOL; a route made
// by Expose is unregistered. Tunnels already open go on.
func (x *Exposure) Close() error {
	x.mu.Lock()
	if x.closed {
		x.mu.Unlock()
		return nil
	}
	x.closed = true
	if x.pub != nil {
		x.dropLocked(x.pub)
	}
	x.mu.Unlock()
	r := x.reg
	r.mu.Lock()
	if r.exposures[x.name] == x {
		delete(r.exposures, x.name)
	}
	if p := r.protocols[x.name]; p != nil && p.exposure == x {
		delete(r.protocols, x.name)
	}
	r.mu.Unlock()
	return nil
}

// dropLocked unpublishes p: its control and standby connections are
// closed (on goroutines of their own: Close waits for a final flush), and
// the Dials waiting for a standby fail.
func (x *Exposure) dropLocked(p *publisher) {
	if x.pub != p {
		return
	}
	x.pub = nil
	x.changedLocked()
	close(p.gone)
	idle := x.idle
	x.idle, x.waiters = nil, nil
	go p.c.Close()
	for _, c := range idle {
		x.forget(p, c)
		go c.Close()
	}
}

func (x *Exposure) pruneLocked() {
	x.idle = slices.DeleteFunc(x.idle, func(c *conn.Conn) bool {
		if !ended(c) {
			return false
		}
		if x.pub != nil {
			x.forget(x.pub, c)
		}
		return true
	})
}

// forget drops c, a standby p held, from Registry.standbys.
func (x *Exposure) forget(p *publisher, c *conn.Conn) { x.reg.standbys.CompareAndDelete(c, p) }

// release forgets c, a standby of p taken for good (switched, or closed).
func (x *Exposure) release(p *publisher, c *conn.Conn) { x.forget(p, c) }

// requeue puts back c, a standby of p whose switch the agent refused
// (its backlog full): the connection is sound, and closing it would make
// the agent back off as if standbys were dying. It reports whether c was
// kept.
func (x *Exposure) requeue(p *publisher, c *conn.Conn) bool {
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.pub == p && !ended(c) && x.offerLocked(c) {
		return true
	}
	x.forget(p, c)
	return false
}

func ended(c *conn.Conn) bool {
	select {
	case <-c.Done():
		return true
	default:
		return false
	}
}

// peerOf checks that c may publish: TLS 1.2 or later with a verified
// certificate whose PeerName is a publisher. It returns that name.
func (x *Exposure) peerOf(c *conn.Conn) (string, error) {
	info := infoFor(c, x.name)
	if err := (&protocol{name: x.name}).check(info); err != nil {
		return "", err
	}
	cert := info.PeerCertificate()
	if cert == nil {
		return "", fmt.Errorf("%w: publishing %q needs a verified client certificate", ErrForbidden, x.name)
	}
	name, err := PeerName(cert)
	if err != nil {
		return "", &forbiddenName{protocol: x.name, reason: err}
	}
	if !slices.Contains(x.publishers, name) {
		return "", fmt.Errorf("%w: %q may not publish %q", ErrForbidden, name, x.name)
	}
	return name, nil
}

// servePublish answers _ampmux_publish on a control connection.
func (r *Registry) servePublish(ctx context.Context, a PublishArgs) (struct{}, error) {
	x := r.exposure(a.Name)
	if x == nil {
		return struct{}{}, fmt.Errorf("%w: %q is not exposed here", ErrUnknownProtocol, a.Name)
	}
	c := conn.FromContext(ctx)
	if c == nil {
		return struct{}{}, fmt.Errorf("%w: no connection", ErrForbidden)
	}
	name, err := x.peerOf(c)
	if err != nil {
		return struct{}{}, err
	}
	return struct{}{}, x.publish(c, name, a.Session)
}

func (x *Exposure) publish(c *conn.Conn, name, session string) error {
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.closed {
		return fmt.Errorf("%w: %q is not exposed here", ErrUnknownProtocol, x.name)
	}
	if old := x.pub; old != nil {
		if old.c == c {
			return nil // published already, on this connection
		}
		if session == "" || old.session != session || old.name != name {
			return fmt.Errorf("%w: %q is published by %q (from %v)", ErrAlreadyPublished, x.name, old.name, old.c.RemoteAddr())
		}
		// The same agent again: its old control connection is stale
		// (gone without a FIN, not yet noticed here).
		x.dropLocked(old)
	}
	p := &publisher{name: name, session: session, c: c, gone: make(chan struct{})}
	x.pub = p
	x.changedLocked()
	go x.watch(p)
	return nil
}

// watch unpublishes p when its control connection ends.
func (x *Exposure) watch(p *publisher) {
	select {
	case <-p.c.Done():
		x.mu.Lock()
		x.dropLocked(p)
		x.mu.Unlock()
	case <-p.gone:
	}
}

// serveStandby takes _ampmux_standby: the connection it came on waits as
// a standby of the publisher, or is closed if it does not belong to it.
func (r *Registry) serveStandby(ctx context.Context, a PublishArgs) (struct{}, error) {
	c := conn.FromContext(ctx)
	if c == nil {
		return struct{}{}, nil
	}
	x := r.exposure(a.Name)
	if x == nil || !x.addStandby(c, a.Session) {
		go c.Close() // not from the reader, which Close waits for
	}
	return struct{}{}, nil
}

func (x *Exposure) addStandby(c *conn.Conn, session string) bool {
	name, err := x.peerOf(c)
	if err != nil {
		return false
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	p := x.pub
	if x.closed || p == nil || p.name != name || p.session != session || p.c == c {
		return false
	}
	if _, dup := x.reg.standbys.LoadOrStore(c, p); dup {
		return true // announced again: it is held already (here or elsewhere)
	}
	if !x.offerLocked(c) {
		x.forget(p, c)
		return false
	}
	return true
}

// offerLocked gives c to the oldest waiting Dial, or keeps it idle.
func (x *Exposure) offerLocked(c *conn.Conn) bool {
	if len(x.waiters) > 0 {
		w := x.waiters[0]
		x.waiters = x.waiters[1:]
		w.ch <- c
		return true
	}
	x.pruneLocked()
	if len(x.idle) >= maxIdleStandby {
		return false
	}
	x.idle = append(x.idle, c)
	return true
}

// Dial returns a connection to the publisher's end of the route: a
// standby connection, switched. With none ready it asks the agent for
// more (_ampmux_more) and waits, until ctx ends. It fails at once, with
// an error matching ErrUnavailable, while the route has no publisher.
func (x *Exposure) Dial(ctx context.Context) (net.Conn, error) { return x.dial(ctx, nil) }

// DialFor is Dial for the client of info: the agent learns its address
// and PeerName (Info.Relayed on the agent's connection).
func (x *Exposure) DialFor(ctx context.Context, client Info) (net.Conn, error) {
	r := &Relayed{}
	if client.RemoteAddr != nil {
		r.Addr = client.RemoteAddr.String()
	}
	if cert := client.PeerCertificate(); cert != nil {
		r.Name, _ = PeerName(cert)
	}
	return x.dial(ctx, r)
}

func (x *Exposure) dial(ctx context.Context, client *Relayed) (net.Conn, error) {
	for {
		x.mu.Lock()
		p := x.pub
		if x.closed || p == nil {
			x.mu.Unlock()
			return nil, fmt.Errorf("%w: %q has no publisher connected", ErrUnavailable, x.name)
		}
		x.pruneLocked()
		var c *conn.Conn
		var w *waiter
		if len(x.idle) > 0 {
			c = x.idle[0]
			x.idle = x.idle[1:]
		} else {
			w = &waiter{ch: make(chan *conn.Conn, 1)}
			x.waiters = append(x.waiters, w)
		}
		x.mu.Unlock()
		if w != nil {
			moreCmd.Call(ctx, p.c, MoreArgs{Name: x.name, N: 1})
			select {
			case c = <-w.ch:
			case <-p.gone:
				select {
				case c := <-w.ch: // handed over as the publisher went
					x.forget(p, c)
					go c.Close()
				default:
				}
				return nil, fmt.Errorf("%w: %q: its publisher went away", ErrUnavailable, x.name)
			case <-ctx.Done():
				x.giveUp(w, p)
				return nil, fmt.Errorf("%w: %q: no standby connection from its publisher: %v", ErrUnavailable, x.name, ctx.Err())
			}
		}
		nc, err := x.switchStandby(ctx, c, client)
		if err == nil {
			x.release(p, c)
			return nc, nil
		}
		var re *amp.RemoteError
		if errors.As(err, &re) {
			// The agent refused (closing, or its backlog full): so would
			// its other standbys. Only UNAVAILABLE leaves the standby
			// sound; one refused otherwise never switches, and goes.
			if !errors.Is(err, ErrUnavailable) || !x.requeue(p, c) {
				x.forget(p, c)
				go c.Close()
			}
			return nil, fmt.Errorf("%w: %q: the publisher refused: %v", ErrUnavailable, x.name, err)
		}
		x.release(p, c)
		go c.Close()
		if ctx.Err() != nil {
			return nil, fmt.Errorf("%w: %q: %v", ErrUnavailable, x.name, err)
		}
		// That standby was dead: try the next.
	}
}

// giveUp withdraws w; a standby handed to it meanwhile goes to the next.
func (x *Exposure) giveUp(w *waiter, p *publisher) {
	x.mu.Lock()
	defer x.mu.Unlock()
	if i := slices.Index(x.waiters, w); i >= 0 {
		x.waiters = slices.Delete(x.waiters, i, i+1)
		return
	}
	select {
	case c := <-w.ch:
		if x.pub != p || !x.offerLocked(c) {
			x.forget(p, c)
			go c.Close()
		}
	default:
	}
}

// switchStandby asks the agent to switch standby c to the route.
func (x *Exposure) switchStandby(ctx context.Context, c *conn.Conn, client *Relayed) (net.Conn, error) {
	sctx, cancel := context.WithTimeout(ctx, standbySwitchTimeout)
	defer cancel()
	var args box.Box
	args.SetString("protocol", x.name)
	if client != nil {
		args.SetString("peer", client.Addr)
		args.SetString("peer_name", client.Name)
	}
	inner, err := c.Switch(sctx, CommandProtocolSwitch, &args)
	if err != nil {
		return nil, ProtocolSwitch.MapError(err)
	}
	info := infoFor(c, x.name)
	return &Conn{Conn: inner, info: info}, nil
}
