package mux

import (
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
// the source table (which may evict a sniffer or refuse the connection),
// backs off on temporary Accept errors instead of letting cmux spin, and
// lets Shutdown close the connections still being sniffed.
type rootListener struct {
	net.Listener
	t      *table
	log    *slog.Logger
	warns  rateLog
	closed chan struct{}
	once   sync.Once
}

func newRootListener(l net.Listener, lim limits, log *slog.Logger) *rootListener {
	return &rootListener{Listener: l, t: newTable(lim), log: log, closed: make(chan struct{})}
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
		sc, victim, v := r.t.admit(nc, key, time.Now())
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
	lim := &r.t.lim
	switch v {
	case evictedSource:
		r.log.Warn("mux: a source reached its sniffing cap; closed its oldest sniffing connection",
			"source", key, "max_sniffing_per_source", lim.sniffingPerSource, "closed", victim.RemoteAddr(), "suppressed", n)
	case evictedSniffing:
		r.log.Warn("mux: sniffing cap reached; closed the oldest sniffing connection of the source sniffing most",
			"max_sniffing", lim.sniffing, "closed", victim.RemoteAddr(), "suppressed", n)
	case evictedConns:
		r.log.Warn("mux: connection cap reached; closed the oldest sniffing connection of the source sniffing most",
			"max_conns", lim.conns, "closed", victim.RemoteAddr(), "suppressed", n)
	case refusedSource:
		r.log.Warn("mux: a source reached its connection cap; refused a new connection",
			"source", key, "max_conns_per_source", lim.connsPerSource, "suppressed", n)
	case refusedConns:
		r.log.Warn("mux: connection cap reached and none sniffing; refused a new connection",
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

// closeSniffing closes the connections being sniffed, and any accepted
// from now on.
func (r *rootListener) closeSniffing() {
	for _, c := range r.t.closeAll() {
		c.Close()
	}
}

type connState uint8

const (
	stateSniffing connState = iota
	stateHanded             // to a class: still open
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
	shortened bool
	handed    atomic.Bool // a class has c: its deadlines are its server's
	spoke     atomic.Bool // c has read a byte

	src *source // set by admit, then read-only

	// Guarded by t.mu.
	elem    *list.Element // in src.silent or src.talking, while sniffing
	talking bool
	state   connState
}

func (c *sniffConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if n > 0 && !c.spoke.Load() && c.spoke.CompareAndSwap(false, true) {
		c.t.spoke(c)
	}
	return n, err
}

// SetReadDeadline holds cmux's sniffing deadline (now+SniffTimeout, set
// as it starts matching) to c's own, which may be shorter. Clearing it, as
// cmux does on a match, and any deadline once handed out, pass through.
func (c *sniffConn) SetReadDeadline(t time.Time) error {
	if !c.handed.Load() && !t.IsZero() && t.After(c.deadline) {
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
	conns  chan net.Conn
	closed chan struct{}
	once   sync.Once
	muxEnd chan struct{}
}

func newClassListener(s *Server, c Class) *classListener {
	return &classListener{s: s, class: c, conns: make(chan net.Conn), closed: make(chan struct{}), muxEnd: s.done}
}

// tryDeliver hands nc to an Accept already waiting, without blocking.
func (l *classListener) tryDeliver(nc net.Conn) bool {
	select {
	case l.conns <- nc:
		return true
	default:
		return false
	}
}

// deliver hands nc to Accept, or closes it if nobody accepts within wait.
func (l *classListener) deliver(nc net.Conn, wait time.Duration) {
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case l.conns <- nc:
	case <-t.C:
		l.s.cfg.Logger.Warn("mux: nobody accepted a connection; closed", "class", l.class.String(), "remote", nc.RemoteAddr())
		nc.Close()
	case <-l.closed:
		nc.Close()
	case <-l.muxEnd:
		nc.Close()
	}
}

func (l *classListener) Accept() (net.Conn, error) {
	select {
	case nc := <-l.conns:
		return nc, nil
	case <-l.closed:
		return nil, ErrListenerClosed
	case <-l.muxEnd:
		return nil, ErrServerClosed
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
