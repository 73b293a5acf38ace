package mux

import (
	"bufio"
	"container/list"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// rootListener wraps the shared listener: it counts every connection in
// the source table (which may evict a connection the mux holds, or refuse
// the new one), backs off on temporary Accept errors instead of letting
// cmux spin, and lets Shutdown close the connections the mux still holds.
type rootListener struct {
	net.Listener
	t         *table
	proxyFrom []netip.Prefix // sources whose PROXY headers are read
	log       *slog.Logger
	warns     rateLog
	closed    chan struct{}
	once      sync.Once
}

func newRootListener(l net.Listener, lim limits, proxyFrom []netip.Prefix, log *slog.Logger) *rootListener {
	r := &rootListener{Listener: l, t: newTable(lim), proxyFrom: proxyFrom, log: log, closed: make(chan struct{})}
	r.t.warn = r.warn
	r.t.warnProxy = r.warnProxy
	return r
}

// warnProxy logs a refused PROXY header, at most once a second.
func (r *rootListener) warnProxy(e *ProxyError) {
	if n, ok := r.warns.allow(warnProxyRefused, time.Now()); ok {
		r.log.Warn("mux: PROXY protocol header refused; connection closed", "from", e.From, "reason", e.Reason, "err", e.Err, "suppressed", n)
	}
}

// source is the key of nc in the source table.
func (r *rootListener) source(nc net.Conn) netip.Prefix { return sourceOf(nc.RemoteAddr()) }

// Accept never waits for room: a connection over a cap evicts a sniffer or
// is closed at once, and Accept goes on to the next.
func (r *rootListener) Accept() (net.Conn, error) {
	var delay time.Duration
	for {
		nc, err := r.Listener.Accept()
		if err != nil {
			var ne interface{ Temporary() bool }
			if errors.As(err, &ne) && ne.Temporary() && !errors.Is(err, net.ErrClosed) {
				delay = min(max(2*delay, 5*time.Millisecond), time.Second)
				r.log.Warn("mux: accept failed; retrying", "err", err, "delay", delay)
				select {
				case <-time.After(delay):
					continue
				case <-r.closed:
				}
			}
			return nil, err
		}
		delay = 0
		key := r.source(nc)
		balancer := trusted(r.proxyFrom, nc.RemoteAddr())
		sc, victim, v := r.t.admit(nc, key, time.Now(), balancer)
		if victim != nil {
			victim.Conn.Close() // already uncounted: not victim.Close
		}
		if sc == nil {
			nc.Close()
			if v == refusedClosed {
				return nil, net.ErrClosed
			}
			r.warn(v, key, nil)
			continue
		}
		sc.needHeader = balancer
		r.warn(v, key, victim)
		if sc.shortened {
			r.warn(warnShortened, key, nil)
		}
		return sc, nil
	}
}

// warn logs what admit did, at most once a second for each kind.
func (r *rootListener) warn(v verdict, key netip.Prefix, victim *sniffConn) {
	if v == admitted || v == refusedClosed {
		return
	}
	n, ok := r.warns.allow(v, time.Now())
	if !ok {
		return
	}
	lim := r.t.limitsNow()
	switch v {
	case evictedSource:
		r.log.Warn("mux: a source reached its sniffing cap; closed its oldest sniffing connection",
			"source", key, "max_sniffing_per_source", lim.sniffingPerSource, "closed", victim.RemoteAddr(), "suppressed", n)
	case evictedSniffing:
		r.log.Warn("mux: sniffing cap reached; closed the oldest sniffing connection of the source sniffing most",
			"max_sniffing", lim.sniffing, "closed", victim.RemoteAddr(), "suppressed", n)
	case evictedConns:
		r.log.Warn("mux: connection cap reached; closed the oldest sniffing connection of the source the mux holds most of",
			"max_conns", lim.conns, "closed", victim.RemoteAddr(), "suppressed", n)
	case evictedWaiting:
		// victim.class was set under the table's lock before admit chose it.
		r.log.Warn("mux: connection cap reached; closed the connection that had waited longest for its class's Accept, of the source the mux holds most of",
			"max_conns", lim.conns, "class", victim.class.String(), "closed", victim.RemoteAddr(), "suppressed", n)
	case refusedSource:
		r.log.Warn("mux: a source reached its connection cap; refused a new connection",
			"source", key, "max_conns_per_source", lim.connsPerSource, "suppressed", n)
	case refusedConns:
		r.log.Warn("mux: connection cap reached and none sniffing or waiting; refused a new connection",
			"max_conns", lim.conns, "suppressed", n)
	case warnShortened:
		r.log.Warn("mux: many connections sniffing; new ones get the short sniffing deadline",
			"source", key, "timeout", lim.short, "suppressed", n)
	}
}

func (r *rootListener) Close() error {
	var err error
	r.once.Do(func() {
		close(r.closed)
		err = r.Listener.Close()
	})
	return err
}

// closeHeld closes the connections the mux still holds (being sniffed, or
// matched and waiting for an Accept), and any accepted from now on.
func (r *rootListener) closeHeld() {
	for _, c := range r.t.closeAll() {
		c.Conn.Close() // already uncounted
	}
}

type connState uint8

const (
	stateSniffing connState = iota
	stateWaiting            // matched: for its class's Accept
	stateHanded             // to a class's server: still open
	stateGone               // closed or evicted, uncounted
)

// sniffConn is a connection counted in the source table from Accept until
// it is closed (by a class's server, by cmux, by the mux, or evicted).
// Every connection the classes hand out wraps one, so that closing it,
// however often, uncounts it once.
type sniffConn struct {
	net.Conn
	t *table
	// deadline bounds sniffing (SniffTimeout, or MinSniffTimeout under
	// pressure); set before Accept returns c.
	deadline  time.Time
	accepted  time.Time
	shortened bool
	matched   atomic.Bool // cmux matched c: its deadlines are its server's
	spoke     atomic.Bool // c has read a byte

	// PROXY protocol, for a connection from Config.ProxyFrom: needHeader
	// is set before Accept returns c; the first Read (cmux's, sniffing)
	// clears it and reads the header; br then holds what was read past
	// it, until drained. Only the reading goroutine touches these three;
	// proxy, once stored, never changes.
	needHeader bool
	headerErr  error
	br         *bufio.Reader
	proxy      atomic.Pointer[proxied]

	src *source // set by admit, then read-only

	// Guarded by t.mu.
	elem    *list.Element // in src.silent or src.talking while sniffing, src.waiting while waiting
	talking bool
	state   connState
	class   Class         // once waiting
	gone    chan struct{} // if not nil, closed as c is uncounted (see watch)
}

func (c *sniffConn) Read(p []byte) (int, error) {
	if c.needHeader {
		c.needHeader = false
		err := c.readProxyHeader()
		if c.br != nil && c.br.Buffered() == 0 {
			c.br = nil
		}
		var pe *ProxyError
		if errors.As(err, &pe) {
			c.headerErr = err // refused: for good
		} else if err != nil {
			return 0, err // a timeout, an EOF: this read's
		}
	}
	if c.headerErr != nil {
		return 0, c.headerErr
	}
	var n int
	var err error
	if c.br != nil {
		n, err = c.br.Read(p) // only what is buffered: no read of its own
		if c.br.Buffered() == 0 {
			c.br = nil
		}
	} else {
		n, err = c.Conn.Read(p)
	}
	if n > 0 && !c.spoke.Load() && c.spoke.CompareAndSwap(false, true) {
		c.t.spoke(c)
	}
	return n, err
}

// SetReadDeadline holds cmux's sniffing deadline (now+SniffTimeout, set
// as it starts matching) to c's own, which may be shorter. Clearing it, as
// cmux does on a match, and any deadline once matched, pass through.
func (c *sniffConn) SetReadDeadline(t time.Time) error {
	if !c.matched.Load() && !t.IsZero() && t.After(c.deadline) {
		t = c.deadline
	}
	return c.Conn.SetReadDeadline(t)
}

func (c *sniffConn) Close() error {
	c.t.release(c)
	return c.Conn.Close()
}

// classListener is one class's net.Listener. Closing it stops that class
// only (cmux's own listeners close the shared port).
type classListener struct {
	s      *Server
	class  Class
	conns  chan *Conn
	closed chan struct{}
	once   sync.Once
	muxEnd chan struct{}
}

func newClassListener(s *Server, c Class) *classListener {
	return &classListener{s: s, class: c, conns: make(chan *Conn), closed: make(chan struct{}), muxEnd: s.done}
}

// tryDeliver hands c to an Accept already waiting, without blocking.
func (l *classListener) tryDeliver(c *Conn) bool {
	select {
	case l.conns <- c:
		return true
	default:
		return false
	}
}

// deliver hands c to Accept, or closes it if nobody accepts within wait.
// Meanwhile c stays evictable (the table counts it as waiting), and
// deliver gives up as soon as it is evicted.
func (l *classListener) deliver(c *Conn, wait time.Duration) {
	var gone <-chan struct{}
	if c.sc != nil {
		gone = c.sc.t.watch(c.sc)
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case l.conns <- c:
	case <-gone: // evicted, or closed by Shutdown
		c.Close()
	case <-t.C:
		if n, ok := l.s.root.warns.allow(warnUndelivered, time.Now()); ok {
			l.s.cfg.Logger.Warn("mux: nobody accepted a connection; closed",
				"class", l.class.String(), "remote", c.RemoteAddr(), "waited", wait, "suppressed", n)
		}
		c.Close()
	case <-l.closed:
		c.Close()
	case <-l.muxEnd:
		c.Close()
	}
}

// Accept returns the next connection of l's class. One evicted (or closed
// by Shutdown) on its way here is closed and skipped.
func (l *classListener) Accept() (net.Conn, error) {
	for {
		select {
		case c := <-l.conns:
			if c.sc == nil || c.sc.t.take(c.sc) {
				return c, nil
			}
			c.Close()
		case <-l.closed:
			return nil, ErrListenerClosed
		case <-l.muxEnd:
			return nil, ErrServerClosed
		}
	}
}

func (l *classListener) Close() error {
	l.once.Do(func() { close(l.closed) })
	return nil
}

func (l *classListener) isClosed() bool {
	select {
	case <-l.closed:
		return true
	default:
		return false
	}
}

func (l *classListener) Addr() net.Addr { return l.s.root.Addr() }
