package mux

import (
	"errors"
	"log/slog"
	"net"
	"sync"
	"time"
)

// rootListener wraps the shared listener: it bounds concurrent sniffing,
// backs off on temporary Accept errors instead of letting cmux spin, and
// remembers the connections being sniffed so that Shutdown can close them.
type rootListener struct {
	net.Listener
	slots  chan struct{}
	log    *slog.Logger
	mu     sync.Mutex
	live   map[*sniffConn]struct{}
	closed chan struct{}
	once   sync.Once
}

func newRootListener(l net.Listener, max int, log *slog.Logger) *rootListener {
	return &rootListener{Listener: l, slots: make(chan struct{}, max), log: log,
		live: make(map[*sniffConn]struct{}), closed: make(chan struct{})}
}

func (r *rootListener) Accept() (net.Conn, error) {
	select {
	case r.slots <- struct{}{}:
	case <-r.closed:
		return nil, net.ErrClosed
	}
	var delay time.Duration
	for {
		nc, err := r.Listener.Accept()
		if err == nil {
			sc := &sniffConn{Conn: nc, root: r}
			r.mu.Lock()
			r.live[sc] = struct{}{}
			r.mu.Unlock()
			return sc, nil
		}
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
		<-r.slots
		return nil, err
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

func (r *rootListener) closeSniffing() {
	r.mu.Lock()
	conns := make([]*sniffConn, 0, len(r.live))
	for c := range r.live {
		conns = append(conns, c)
	}
	r.mu.Unlock()
	for _, c := range conns {
		c.Close()
	}
}

// sniffConn holds a sniffing slot until its class takes it or it closes.
type sniffConn struct {
	net.Conn
	root *rootListener
	once sync.Once
}

func (c *sniffConn) release() {
	c.once.Do(func() {
		c.root.mu.Lock()
		delete(c.root.live, c)
		c.root.mu.Unlock()
		<-c.root.slots
	})
}

func (c *sniffConn) Close() error {
	c.release()
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
