package conn

import (
	"context"
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// Server serves AMP on listeners, like http.Server. Set Config (its
// Handler finds the responders) before Serve; the zero Server answers every
// command UNHANDLED. Its connections share one Budget for the boxes they
// receive before they authenticate: Config.Budget, or one of DefaultBudget
// made for this Server.
type Server struct {
	// Config holds the per-connection settings, the responders among
	// them; once serving, change it only through SetConfig.
	Config Config
	// ConnState, if set, is called with each connection when it starts
	// (active=true) and when it has ended.
	ConnState func(c *Conn, active bool)

	mu        sync.Mutex
	budget    *Budget // made on first use when Config.Budget is nil
	listeners map[net.Listener]struct{}
	conns     map[*Conn]struct{}
	closing   atomic.Bool
	wg        sync.WaitGroup // Serve loops and connection watchers
}

// Serve accepts connections on l and serves each until it ends. It returns
// ErrServerClosed after Shutdown or Close, and otherwise the Accept error
// that stopped it. Temporary Accept errors are retried with backoff.
func (s *Server) Serve(l net.Listener) error {
	if !s.track(l) {
		l.Close()
		return ErrServerClosed
	}
	defer s.untrack(l)
	var delay time.Duration
	for {
		nc, err := l.Accept()
		if err != nil {
			if s.closing.Load() {
				return ErrServerClosed
			}
			var ne interface{ Temporary() bool }
			if errors.As(err, &ne) && ne.Temporary() {
				delay = min(max(2*delay, 5*time.Millisecond), time.Second)
				time.Sleep(delay)
				continue
			}
			return err
		}
		delay = 0
		s.ServeConn(nc)
	}
}

func (s *Server) track(l net.Listener) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing.Load() {
		return false
	}
	if s.listeners == nil {
		s.listeners = make(map[net.Listener]struct{})
	}
	s.listeners[l] = struct{}{}
	s.wg.Add(1)
	return true
}

func (s *Server) untrack(l net.Listener) {
	s.mu.Lock()
	delete(s.listeners, l)
	s.mu.Unlock()
	s.wg.Done()
}

// ServeConn serves AMP on one connection accepted elsewhere (a shared port,
// a Unix socket pair) and returns the Conn; it returns nil, closing nc, if
// the server is shutting down.
func (s *Server) ServeConn(nc net.Conn) *Conn {
	s.mu.Lock()
	cfg := s.Config
	if s.closing.Load() {
		s.mu.Unlock()
		nc.Close()
		return nil
	}
	if cfg.Budget == nil {
		if s.budget == nil {
			s.budget = NewBudget(DefaultBudget)
		}
		cfg.Budget = s.budget
	}
	s.wg.Add(1)
	c := newConn(nc, &cfg, func(c *Conn) {
		s.mu.Lock()
		delete(s.conns, c)
		s.mu.Unlock()
		if s.ConnState != nil {
			s.ConnState(c, false)
		}
		s.wg.Done()
	})
	if s.conns == nil {
		s.conns = make(map[*Conn]struct{})
	}
	s.conns[c] = struct{}{}
	s.mu.Unlock()
	if s.ConnState != nil {
		s.ConnState(c, true)
	}
	return c
}

// SetConfig replaces Config for the connections served from then on (a
// reload); those open keep the settings they started with.
func (s *Server) SetConfig(cfg Config) {
	s.mu.Lock()
	s.Config = cfg
	s.mu.Unlock()
}

// Shutdown stops accepting, then closes each connection once it is idle
// (no command being answered, nothing left to send), and returns when all
// are gone or ctx ends (then with ctx.Err(), connections left open; call
// Close to end them).
func (s *Server) Shutdown(ctx context.Context) error {
	s.closeListeners()
	delay := time.Millisecond
	timer := time.NewTimer(delay)
	defer timer.Stop()
	for {
		if s.closeIdle() {
			s.wg.Wait()
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-timer.C:
			delay = min(2*delay, 100*time.Millisecond)
			timer.Reset(delay)
		}
	}
}

// Close closes the listeners and every connection at once, and waits for
// the connections' goroutines.
func (s *Server) Close() error {
	s.closeListeners()
	s.mu.Lock()
	conns := make([]*Conn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	for _, c := range conns {
		c.Close()
	}
	s.wg.Wait()
	return nil
}

func (s *Server) closeListeners() {
	s.mu.Lock()
	s.closing.Store(true)
	for l := range s.listeners {
		l.Close()
	}
	s.mu.Unlock()
}

// closeIdle closes idle connections and reports whether none is left.
func (s *Server) closeIdle() bool {
	s.mu.Lock()
	var idle []*Conn
	for c := range s.conns {
		if c.idle() {
			idle = append(idle, c)
		}
	}
	left := len(s.conns) - len(idle)
	s.mu.Unlock()
	for _, c := range idle {
		c.closeAfterFlush(net.ErrClosed)
	}
	return left == 0
}

// idle: no command being answered and nothing queued to send.
func (c *Conn) idle() bool {
	if c.active.Load() != 0 {
		return false
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	return len(c.w.buf) == 0 && c.w.inflight == 0
}
