package mux

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"time"

	"github.com/soheilhy/cmux"
)

const (
	// DefaultSniffTimeout bounds how long a new connection may take to
	// show what it is. Clients that speak first send their first bytes
	// as soon as the handshake ends, so this is slack for a lossy path.
	DefaultSniffTimeout = 5 * time.Second
	// DefaultMinSniffTimeout is the least default MinSniffTimeout (which
	// is SniffTimeout/10): a retransmitted first segment still makes it.
	DefaultMinSniffTimeout = 250 * time.Millisecond
	// DefaultMaxSniffing bounds the connections being sniffed at once. It
	// holds issue 11's goal, 10,000 idle connections, with room; at about
	// 4 KiB of memory each (see the package doc) it costs under 64 MiB
	// when full.
	DefaultMaxSniffing = 16384
	// DefaultMaxSniffingPerSource bounds one source's connections being
	// sniffed at once. A client shows its protocol within a round trip,
	// so even a busy NAT has few sniffing at a time; at 1/64 of
	// DefaultMaxSniffing, one address cannot hold the others' room.
	DefaultMaxSniffingPerSource = 256
	// sniffCap bounds the bytes any matcher reads.
	sniffCap = 16 << 10
)

var (
	// ErrServerClosed is returned by Serve after Shutdown or Close, and by
	// the class listeners' Accept once the mux is closed.
	ErrServerClosed = errors.New("mux: server closed")
	// ErrListenerClosed is returned by Accept on a class listener that was
	// closed (closing it leaves the shared port and the other classes up).
	ErrListenerClosed = errors.New("mux: listener closed")
)

// Service is a server the mux can run on a class's listener and stop:
// *conn.Server and *http.Server are ones.
type Service interface {
	Serve(net.Listener) error
	Shutdown(context.Context) error
	Close() error
}

// Config configures a Server; New reads it, later changes are not seen.
// The zero value sniffs AMP, TLS, h2c and HTTP/1 with the default limits
// and closes everything else.
type Config struct {
	// SniffTimeout bounds sniffing (default DefaultSniffTimeout).
	SniffTimeout time.Duration
	// MinSniffTimeout replaces SniffTimeout for connections accepted under
	// pressure: while more than half of MaxSniffing are sniffing, or more
	// than half of the source's MaxSniffingPerSource (default
	// SniffTimeout/10, at least DefaultMinSniffTimeout; never more than
	// SniffTimeout, which turns shortening off).
	MinSniffTimeout time.Duration

	// A source is a client IP address; for IPv6, a /64. Past a cap the mux
	// closes the oldest idle connection, as HAProxy and nginx do, rather
	// than make new clients wait; the caps' counters are in Stats.

	// MaxSniffing bounds the connections being sniffed at once (default
	// DefaultMaxSniffing; negative: no cap). Past it, the oldest sniffing
	// connection of the source with the most sniffing is closed, so that
	// one source's flood evicts its own.
	MaxSniffing int
	// MaxSniffingPerSource bounds one source's connections being sniffed
	// at once (default DefaultMaxSniffingPerSource; negative: no cap).
	// Past it, that source's oldest sniffing connection is closed,
	// preferring one that has sent nothing.
	MaxSniffingPerSource int
	// MaxConns bounds all connections: those sniffing, those matched and
	// waiting for their class's Accept, and those handed out to a class
	// and not yet closed. Past it, the source with the most sniffing or
	// waiting loses its oldest silent connection, else the one that has
	// waited longest for an Accept, else its oldest talker; if none sniffs
	// or waits, the new connection is closed. The default, on unix, is
	// half the process's descriptor limit (RLIMIT_NOFILE at New): the cap
	// must be reached before accept(2) fails with EMFILE, which evicts
	// nobody and stops every new client, and a connection may need a
	// descriptor of its own behind it (a tunnel's backend, a proxied
	// request). Elsewhere, and if negative, there is no cap.
	MaxConns int
	// MaxConnsPerSource bounds one source's connections, sniffing,
	// waiting and handed out; past it, its new connections are closed at
	// once. The default (0) is no cap: the mux cannot know how many
	// clients share an address behind a NAT or a proxy (cmd/ampmux sets
	// one for a gateway).
	MaxConnsPerSource int
	// Other makes unmatched connections available on Other() instead of
	// closing them.
	Other bool
	// OnTimeout, if set, routes connections that are still unmatched when
	// SniffTimeout passes to that class (say ClassHTTP1, for clients that
	// wait for the server to speak first); otherwise they are closed.
	OnTimeout *Class
	// AMP, if set (a *conn.Server usually), is run by Serve on the AMP
	// listener and stopped by Shutdown and Close.
	AMP Service
	// HTTP, if set, is run by Serve on the HTTP/1 and h2c listeners and
	// stopped by Shutdown and Close. The mux never writes to it. A non-nil
	// Protocols is obeyed: HTTP answers h2c as on a port of its own
	// (without UnencryptedHTTP2, net/http hands the preface to the handler
	// as a "PRI *" request). If Protocols is nil and TLSNextProto does not
	// turn HTTP/2 off, the mux adds h2c through an http.Server of its own
	// with HTTP's handler, timeouts, limits, hooks and logger (not its
	// RegisterOnShutdown functions): stop HTTP through the mux, not
	// directly, or that one keeps serving.
	HTTP *http.Server
	// Logger receives sniffing failures at debug level, Accept errors, and
	// at warn level the caps' evictions and refusals and the connections
	// no Accept took within SniffTimeout, at most one line a second of
	// each kind with the count of those not logged (default
	// slog.Default()).
	Logger *slog.Logger
	// OnMatch, if set, is called with each connection's class (for
	// metrics) as it is matched, on the goroutine sniffing it: a slow
	// OnMatch delays that connection only. Unmatched connections report
	// -1; one evicted or closed by Shutdown while matching may report
	// nothing.
	OnMatch func(Class)
	// OnSniffed, if set, is called as OnMatch is (for matched
	// connections only), with how long the connection took to show its
	// class since it was accepted.
	OnSniffed func(c Class, took time.Duration)
	// ProxyFrom lists the sources allowed to send a PROXY protocol header
	// (v1 or v2: HAProxy's send-proxy, send-proxy-v2) before the
	// connection's first byte: load balancers. Their connections are
	// known by the client address the header carries (RemoteAddr, the
	// per-source caps) and, until it is read, are held to no per-source
	// cap. A connection from them without a header (or with a LOCAL one,
	// a health check) keeps its own address and is held to no per-source
	// cap at all, only to the global ones: list balancers here, not
	// networks of clients. One with a malformed header is closed. From any other source, a
	// connection that starts with a PROXY header is closed (ErrProxyHeader
	// is logged): nobody else may choose the address they are known by.
	ProxyFrom []netip.Prefix
}

// Server shares one listener between classes of connections.
type Server struct {
	cfg     Config
	root    *rootListener
	cm      cmux.CMux
	classes [numClasses]*classListener
	runs    []run     // what Serve starts
	owned   []Service // what Shutdown and Close stop
	pumps   sync.WaitGroup
	serving sync.WaitGroup // owned servers
	once    sync.Once
	mu      sync.Mutex // orders starting owned servers before stopping
	done    chan struct{}
}

// run is an owned server on one class's listener.
type run struct {
	srv Service
	l   *classListener
}

// New prepares a Server on l; call Serve to start it. The Server owns l.
func New(l net.Listener, cfg Config) *Server {
	if cfg.SniffTimeout <= 0 {
		cfg.SniffTimeout = DefaultSniffTimeout
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	s := &Server{cfg: cfg, done: make(chan struct{})}
	s.root = newRootListener(l, cfg.limits(), cfg.ProxyFrom, cfg.Logger)
	s.cm = cmux.New(s.root)
	// cmux sets this deadline as it starts matching; the rootListener's
	// connections hold it to their own (SniffTimeout, shorter under
	// pressure), which is the one that counts: SetLimits may lengthen it.
	s.cm.SetReadTimeout(sniffCeiling)
	s.cm.HandleError(func(err error) bool {
		var nm cmux.ErrNotMatched
		if errors.As(err, &nm) {
			if cfg.OnMatch != nil {
				cfg.OnMatch(-1)
			}
			cfg.Logger.Debug("mux: connection closed unmatched", "err", err)
		}
		return true
	})
	for c := range numClasses {
		s.classes[c] = newClassListener(s, c)
	}
	// Order matters: AMP first (cheapest, two bytes), TLS, the h2c preface
	// before HTTP/1 (whose matcher would take "PRI *" as a method).
	s.route(ClassAMP, matchAMP)
	s.route(ClassTLS, matchTLS)
	s.refuseProxyHeaders()
	s.route(ClassHTTP2, matchHTTP2)
	s.route(ClassHTTP1, matchHTTP1)
	if cfg.Other {
		s.route(ClassOther, matchAny)
	}
	if cfg.OnTimeout != nil {
		s.route(*cfg.OnTimeout, matchTimedOut)
	}
	if cfg.AMP != nil {
		s.runs = append(s.runs, run{cfg.AMP, s.classes[ClassAMP]})
		s.owned = append(s.owned, cfg.AMP)
	}
	if hs := cfg.HTTP; hs != nil {
		s.runs = append(s.runs, run{hs, s.classes[ClassHTTP1]})
		s.owned = append(s.owned, hs)
		if h2 := h2cFor(hs); h2 != nil {
			s.runs = append(s.runs, run{h2, s.classes[ClassHTTP2]})
			s.owned = append(s.owned, h2)
		} else {
			s.runs = append(s.runs, run{hs, s.classes[ClassHTTP2]})
		}
	}
	return s
}

// sniffCeiling is cmux's own sniffing deadline, above any connection's.
const sniffCeiling = 24 * time.Hour

// SetLimits changes the connection caps and sniffing deadlines to cfg's
// (MaxConns, MaxConnsPerSource, MaxSniffing, MaxSniffingPerSource,
// SniffTimeout, MinSniffTimeout, defaults as in New; the rest of cfg is
// ignored), for connections accepted from then on. Open connections stay
// open, even over a lowered cap, though they count against it.
func (s *Server) SetLimits(cfg Config) {
	if cfg.SniffTimeout <= 0 {
		cfg.SniffTimeout = DefaultSniffTimeout
	}
	s.root.t.setLimits(cfg.limits())
}

// h2cFor returns the server that answers h2c for hs when hs leaves the
// protocols to net/http's defaults (which have no h2c), or nil. It copies
// fields, not the struct, which holds locks; TLSNextProto stays out since
// net/http writes to it.
func h2cFor(hs *http.Server) *http.Server {
	if hs.Protocols != nil {
		return nil
	}
	if _, h2 := hs.TLSNextProto["h2"]; hs.TLSNextProto != nil && !h2 {
		return nil // HTTP/2 turned off the old way
	}
	p := new(http.Protocols)
	p.SetUnencryptedHTTP2(true)
	return &http.Server{
		Addr:                         hs.Addr,
		Handler:                      hs.Handler,
		DisableGeneralOptionsHandler: hs.DisableGeneralOptionsHandler,
		ReadTimeout:                  hs.ReadTimeout,
		ReadHeaderTimeout:            hs.ReadHeaderTimeout,
		WriteTimeout:                 hs.WriteTimeout,
		IdleTimeout:                  hs.IdleTimeout,
		MaxHeaderBytes:               hs.MaxHeaderBytes,
		ConnState:                    hs.ConnState,
		ErrorLog:                     hs.ErrorLog,
		BaseContext:                  hs.BaseContext,
		ConnContext:                  hs.ConnContext,
		HTTP2:                        hs.HTTP2,
		Protocols:                    p,
	}
}

// refuseProxyHeaders closes connections whose sniffed bytes start with a
// PROXY header: a trusted source's was read before sniffing, so this one
// is an untrusted source's, or a second.
func (s *Server) refuseProxyHeaders() {
	l := s.cm.Match(matchProxyHeader)
	s.pumps.Add(1)
	go func() {
		defer s.pumps.Done()
		for {
			nc, err := l.Accept()
			if err != nil {
				return
			}
			reason := "not from a trusted source (Config.ProxyFrom)"
			if sc := sniffed(nc); sc != nil && sc.proxy.Load() != nil {
				reason = "a second header"
			}
			s.root.t.proxy.refused.Add(1)
			s.root.warnProxy(&ProxyError{From: nc.RemoteAddr(), Reason: reason})
			nc.Close()
		}
	}()
}

// route makes cmux deliver connections that match m to class c.
//
// A connection leaves the sniffing state the moment m matches it, in
// cmux's goroutine for that connection: cmux gives a MatchWriter the
// connection its root listener accepted (our *sniffConn) as the writer.
// OnMatch runs there too, so a slow OnMatch delays only that connection,
// never the pump, and never while the connection counts as sniffing.
func (s *Server) route(c Class, m cmux.Matcher) {
	l := s.cm.MatchWithWriters(func(w io.Writer, r io.Reader) bool {
		sc, _ := w.(*sniffConn)
		if sc != nil && sc.headerErr != nil {
			// Its PROXY header was refused: no class takes it (not even
			// Other or OnTimeout's, which read nothing), so cmux closes it.
			// headerErr is set by reads in this goroutine, cmux's.
			return false
		}
		if !m(r) {
			return false
		}
		if sc != nil && !sc.t.matched(sc, c) {
			return true // evicted meanwhile: the pump closes it
		}
		if s.cfg.OnMatch != nil {
			s.cfg.OnMatch(c)
		}
		if s.cfg.OnSniffed != nil && sc != nil {
			s.cfg.OnSniffed(c, time.Since(sc.accepted))
		}
		return true
	})
	target := s.classes[c]
	s.pumps.Add(1)
	go func() {
		defer s.pumps.Done()
		for {
			nc, err := l.Accept()
			if err != nil {
				return
			}
			hc := &Conn{Conn: nc, raw: nc}
			if sc := sniffed(nc); sc != nil {
				// Matched already (a no-op) unless cmux stopped handing
				// matchers the connection: then it leaves sniffing here.
				if !sc.t.matched(sc, c) { // evicted (or the mux is closing)
					nc.Close()
					continue
				}
				hc.raw, hc.sc = sc.Conn, sc
			}
			// Never block the pump: a class nobody accepts must not hold
			// up the others. Usually Accept is waiting already.
			if !target.tryDeliver(hc) {
				go target.deliver(hc, s.root.t.limitsNow().timeout)
			}
		}
	}()
}

// Conn is a connection handed out by a class listener: reads replay the
// sniffed bytes first. It hides the socket (no SyscallConn): reading from
// it directly would skip those bytes. Closing it, once or more, gives its
// place under MaxConns and MaxConnsPerSource back once.
type Conn struct {
	net.Conn
	raw net.Conn
	sc  *sniffConn // counted in the source table; nil if not
}

// WriteConn returns the connection that Write writes to. Conn adds
// nothing to writes, so a server may write to it directly (amp/conn's fast
// path does, with one non-blocking write); reads must go through Conn.
func (c *Conn) WriteConn() net.Conn { return c.raw }

// CloseWrite half-closes the underlying connection when it can.
func (c *Conn) CloseWrite() error {
	if cw, ok := c.raw.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return errors.ErrUnsupported
}

// sniffed finds our wrapper under cmux's.
func sniffed(nc net.Conn) *sniffConn {
	if mc, ok := nc.(*cmux.MuxConn); ok {
		sc, _ := mc.Conn.(*sniffConn)
		return sc
	}
	return nil
}

// AMP returns the listener of AMP connections.
func (s *Server) AMP() net.Listener { return s.classes[ClassAMP] }

// HTTP returns the listener of HTTP/1.x connections.
func (s *Server) HTTP() net.Listener { return s.classes[ClassHTTP1] }

// HTTP2 returns the listener of h2c (prior knowledge) connections.
func (s *Server) HTTP2() net.Listener { return s.classes[ClassHTTP2] }

// TLS returns the listener of TLS connections, for servers that terminate
// TLS themselves.
func (s *Server) TLS() net.Listener { return s.classes[ClassTLS] }

// Other returns the listener of unmatched connections (empty unless
// Config.Other is set).
func (s *Server) Other() net.Listener { return s.classes[ClassOther] }

// Listener returns the listener of class c.
func (s *Server) Listener(c Class) net.Listener { return s.classes[c] }

// Addr is the shared listener's address.
func (s *Server) Addr() net.Addr { return s.root.Addr() }

// Serve accepts connections and routes them until Shutdown or Close, then
// returns ErrServerClosed; it also runs Config.AMP and Config.HTTP.
//
// An owned server whose Serve returns is logged as an error unless it was
// stopped: the mux is closing, or its listener was closed (as
// conn.Server's and http.Server's Shutdown and Close do, whatever error
// their Serve returns then).
func (s *Server) Serve() error {
	s.mu.Lock()
	select {
	case <-s.done: // stopped before Serve: nothing to run
	default:
		for _, r := range s.runs {
			s.serveOwned(r)
		}
	}
	s.mu.Unlock()
	err := s.cm.Serve()
	select {
	case <-s.done:
		return ErrServerClosed
	default:
		return err
	}
}

func (s *Server) serveOwned(r run) {
	s.serving.Add(1)
	go func() {
		defer s.serving.Done()
		err := r.srv.Serve(r.l)
		if err == nil || r.l.isClosed() {
			return
		}
		select {
		case <-s.done:
		default:
			s.cfg.Logger.Error("mux: server stopped", "class", r.l.class.String(), "err", err)
		}
	}()
}

// Shutdown stops accepting, closes the connections the mux still holds
// (being sniffed, or matched and not yet taken by an Accept), then
// shuts the owned servers down gracefully (letting calls and requests in
// flight finish) and returns when they are done or ctx ends.
func (s *Server) Shutdown(ctx context.Context) error {
	s.stop()
	s.cfg.Logger.Info("mux: stopped accepting; draining")
	var wg sync.WaitGroup
	var mu sync.Mutex
	var first error
	note := func(err error) {
		mu.Lock()
		if first == nil && err != nil {
			first = err
		}
		mu.Unlock()
	}
	for _, srv := range s.owned {
		wg.Go(func() { note(srv.Shutdown(ctx)) })
	}
	wg.Wait()
	s.serving.Wait()
	return first
}

// Close stops accepting and closes everything at once, owned servers'
// connections included.
func (s *Server) Close() error {
	s.stop()
	for _, srv := range s.owned {
		srv.Close()
	}
	s.serving.Wait()
	return nil
}

func (s *Server) stop() {
	s.once.Do(func() {
		s.mu.Lock()
		close(s.done)
		s.mu.Unlock()
		s.root.Close()
		s.cm.Close()
		s.root.closeHeld()
	})
	s.pumps.Wait()
}
