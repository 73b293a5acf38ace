// Package tunnel pipes two connections into each other, both directions,
// passing a half-close on (so that a client's EOF reaches the backend while
// the answer still flows back), and counts the bytes.
//
// A tunnel does not outlive its usefulness: once one direction has ended,
// the other has HalfCloseTimeout without a byte (30 s by default) before
// both ends are closed, as HAProxy's timeout client-fin and server-fin do;
// an optional IdleTimeout closes a tunnel silent both ways; and TCP
// keep-alive (30 s idle, then 3 probes 10 s apart) is turned on for the
// TCP connections under the ends, so that a peer that vanished without a
// FIN is noticed within about a minute. The timeouts are read and write
// deadlines on the ends, not goroutines of their own (a timer stands in
// only for an end that takes no deadline).
package tunnel

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// closeWriter is implemented by *net.TCPConn, *net.UnixConn, *tls.Conn.
type closeWriter interface{ CloseWrite() error }

// Stats counts the bytes a Pipe has moved so far; safe to read while the
// pipe runs.
type Stats struct {
	AToB atomic.Int64
	BToA atomic.Int64
}

// Defaults of Options.
const (
	// DefaultHalfCloseTimeout is how long a half-closed tunnel may stay
	// silent: long enough for a backend to compute an answer to a request
	// its client ended with a FIN, short enough that peers that never
	// finish do not pile up descriptors (HAProxy's documentation uses 30 s
	// for timeout client-fin too).
	DefaultHalfCloseTimeout = 30 * time.Second

	// The TCP keep-alive Pipe sets by default: the first probe after
	// KeepAliveIdle without traffic, then one every KeepAliveInterval, and
	// the connection dropped after KeepAliveCount unanswered, so that a
	// peer gone without a FIN (power cut, NAT state lost, cable pulled) is
	// noticed after about a minute rather than the two hours of Linux's
	// default.
	KeepAliveIdle     = 30 * time.Second
	KeepAliveInterval = 10 * time.Second
	KeepAliveCount    = 3
)

// The errors Pipe returns when it closed a tunnel for lack of traffic.
var (
	ErrHalfCloseTimeout = errors.New("tunnel: half-closed tunnel silent for too long")
	ErrIdleTimeout      = errors.New("tunnel: idle for too long")
)

// Options bounds how long a tunnel may live without traffic. The zero
// value is the defaults.
type Options struct {
	// HalfCloseTimeout bounds a half-closed tunnel: once one direction has
	// ended (its source sent EOF, passed on as a half-close), the other
	// direction may go HalfCloseTimeout without a byte, or take as long
	// for one write, before both ends are closed. It is an inactivity
	// timeout, like HAProxy's timeout client-fin and server-fin: an answer
	// that keeps flowing is never cut. Zero means DefaultHalfCloseTimeout
	// (30 s); negative means no limit (a silent peer then holds both ends
	// for ever, as before this option existed).
	HalfCloseTimeout time.Duration

	// IdleTimeout, if positive, closes the tunnel after that long without
	// a byte in either direction (or a write taking that long). Zero or
	// negative means no limit: interactive sessions (SSH, a database
	// client) may rightly be silent for hours, and keep-alive finds the
	// peers that are gone.
	IdleTimeout time.Duration

	// KeepAlive is set on each end that is, or wraps (through a NetConn
	// method, as *tls.Conn does), a *net.TCPConn. nil means
	// {Enable: true, Idle: KeepAliveIdle, Interval: KeepAliveInterval,
	// Count: KeepAliveCount}; a config with Enable false turns keep-alive
	// off. Errors setting it are ignored (some systems cannot set every
	// field).
	KeepAlive *net.KeepAliveConfig
}

func (o Options) halfCloseTimeout() time.Duration {
	switch {
	case o.HalfCloseTimeout == 0:
		return DefaultHalfCloseTimeout
	case o.HalfCloseTimeout < 0:
		return 0
	}
	return o.HalfCloseTimeout
}

func (o Options) keepAlive() net.KeepAliveConfig {
	if o.KeepAlive != nil {
		return *o.KeepAlive
	}
	return net.KeepAliveConfig{Enable: true, Idle: KeepAliveIdle, Interval: KeepAliveInterval, Count: KeepAliveCount}
}

// Pipe is PipeWith with the zero Options: a half-closed tunnel is closed
// after DefaultHalfCloseTimeout of silence, there is no idle limit, and
// keep-alive is on.
func Pipe(a, b net.Conn, st *Stats) error {
	return PipeWith(a, b, st, Options{})
}

// PipeWith copies a→b and b→a until both directions end, then closes
// both. When one side ends its direction (EOF), PipeWith half-closes the
// other side's write half if it can, or closes it if it cannot; from then
// on opt.HalfCloseTimeout applies to the direction left. It returns the
// first error that was not an orderly end: one matching ErrHalfCloseTimeout
// or ErrIdleTimeout if it closed the tunnel for silence.
//
// PipeWith owns the ends' deadlines while it runs. An end whose
// SetReadDeadline fails (a StdioConn over a terminal, say) is timed by a
// timer instead, which closes both ends when it fires.
func PipeWith(a, b net.Conn, st *Stats, opt Options) error {
	if st == nil {
		st = &Stats{}
	}
	ka := opt.keepAlive()
	setKeepAlive(a, ka)
	setKeepAlive(b, ka)
	p := &pipe{
		ends:      [2]net.Conn{a, b},
		halfClose: opt.halfCloseTimeout(),
		idle:      max(opt.IdleTimeout, 0),
		start:     time.Now(),
	}
	if p.idle > 0 {
		p.mu.Lock()
		p.armLocked(0)
		p.armLocked(1)
		p.mu.Unlock()
	}
	var wg sync.WaitGroup
	wg.Add(2)
	go p.copy(&wg, 0, &st.AToB)
	go p.copy(&wg, 1, &st.BToA)
	wg.Wait()
	p.mu.Lock()
	p.closed.Store(true) // a stand-in timer firing now records nothing
	for _, t := range p.timers {
		if t != nil {
			t.Stop()
		}
	}
	err := p.first
	p.mu.Unlock()
	a.Close()
	b.Close()
	return err
}

// pipe is the state of one PipeWith. Direction i reads ends[i] and writes
// ends[1-i].
type pipe struct {
	ends      [2]net.Conn
	halfClose time.Duration // 0: no limit
	idle      time.Duration // 0: no limit
	start     time.Time

	// activity is when the last byte was read, either way, or a direction
	// ended: nanoseconds since start.
	activity atomic.Int64
	// closed is set before PipeWith closes both ends early; errors after
	// it are the close's, not news.
	closed atomic.Bool

	// ended[i]: direction i's source reached EOF (set under mu).
	ended [2]atomic.Bool

	mu      sync.Mutex
	untimed [2]bool        // ends[i] refused a read deadline: timers[i] stands in
	timers  [2]*time.Timer // the stand-ins, made on first need
	first   error          // guarded by mu until the copies end
}

func (p *pipe) touch() { p.activity.Store(int64(time.Since(p.start))) }

// timeoutLocked is the silence direction i may go through, 0 for none,
// and the error that closing for it returns.
func (p *pipe) timeoutLocked(i int) (time.Duration, error) {
	t, why := p.idle, ErrIdleTimeout
	if p.ended[1-i].Load() && p.halfClose > 0 && (t == 0 || p.halfClose < t) {
		t, why = p.halfClose, ErrHalfCloseTimeout
	}
	return t, why
}

// armLocked sets direction i's read deadline, or its stand-in timer, to
// the last activity plus its timeout.
func (p *pipe) armLocked(i int) {
	t, _ := p.timeoutLocked(i)
	if t == 0 {
		return
	}
	deadline := p.start.Add(time.Duration(p.activity.Load()) + t)
	if !p.untimed[i] {
		if p.ends[i].SetReadDeadline(deadline) == nil {
			return
		}
		p.untimed[i] = true
	}
	d := time.Until(deadline)
	if p.timers[i] == nil {
		p.timers[i] = time.AfterFunc(d, func() { p.timerFired(i) })
	} else {
		p.timers[i].Reset(d)
	}
}

// expired says what a read deadline of direction i that passed means:
// not ours (no timeout applies: whoever owns the end set it), not yet
// (traffic since; re-armed), or expired, with the error to end on.
func (p *pipe) expired(i int) (ours, expired bool, err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	t, why := p.timeoutLocked(i)
	if t == 0 {
		return false, false, nil
	}
	if since := time.Since(p.start) - time.Duration(p.activity.Load()); since < t {
		p.armLocked(i)
		return true, false, nil
	}
	return true, true, fmt.Errorf("%w (%v without a byte)", why, t)
}

func (p *pipe) timerFired(i int) {
	if _, expired, err := p.expired(i); expired {
		p.fail(err)
	}
}

// armWrite bounds the write direction i is about to make by its timeout.
// A timeout that applies never stops applying, so that when none does no
// write deadline was ever set.
func (p *pipe) armWrite(i int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if t, _ := p.timeoutLocked(i); t > 0 {
		p.ends[1-i].SetWriteDeadline(time.Now().Add(t))
	}
}

// fail records err, unless the tunnel is already being closed, and closes
// both ends.
func (p *pipe) fail(err error) {
	p.mu.Lock()
	if !p.closed.Load() {
		p.first = err
		p.closed.Store(true)
	}
	p.mu.Unlock()
	p.ends[0].Close()
	p.ends[1].Close()
}

// end passes direction i's EOF on and starts the half-close clock on the
// other direction.
func (p *pipe) end(i int) {
	p.touch()
	dst := p.ends[1-i]
	// The last write deadline may have passed since (traffic the other
	// way kept the tunnel up), and a *tls.Conn's CloseWrite writes.
	p.armWrite(i)
	if cw, ok := unwrap(dst).(closeWriter); !ok || cw.CloseWrite() != nil {
		dst.Close()
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.ended[i].Store(true)
	if p.ended[1-i].Load() {
		return
	}
	p.armLocked(1 - i)
	if t, _ := p.timeoutLocked(1 - i); t > 0 {
		// The other direction may be blocked writing to this source.
		p.ends[i].SetWriteDeadline(time.Now().Add(t))
	}
}

func (p *pipe) copy(wg *sync.WaitGroup, i int, n *atomic.Int64) {
	defer wg.Done()
	src, dst := p.ends[i], p.ends[1-i]
	buf := make([]byte, 32<<10)
	for {
		nr, rerr := src.Read(buf)
		if nr > 0 {
			p.touch()
			if p.idle > 0 || p.ended[1-i].Load() {
				p.armWrite(i)
			}
			nw, werr := dst.Write(buf[:nr])
			n.Add(int64(max(nw, 0)))
			if werr == nil && nw < nr {
				werr = io.ErrShortWrite
			}
			if werr != nil {
				p.broken(i, werr)
				return
			}
		}
		switch {
		case rerr == nil:
		case errors.Is(rerr, io.EOF):
			p.end(i)
			return
		case errors.Is(rerr, os.ErrDeadlineExceeded) && !p.closed.Load():
			ours, expired, err := p.expired(i)
			switch {
			case !ours:
				p.broken(i, rerr)
				return
			case expired:
				p.fail(err)
				return
			}
		default:
			p.broken(i, rerr)
			return
		}
	}
}

// broken ends both directions after err on direction i: a write that
// timed out is a timeout of the tunnel, a close (ours or the other
// copy's) is an orderly end, anything else is the error to return.
func (p *pipe) broken(i int, err error) {
	if errors.Is(err, os.ErrDeadlineExceeded) {
		p.mu.Lock()
		t, why := p.timeoutLocked(i)
		p.mu.Unlock()
		if t > 0 {
			err = fmt.Errorf("%w (a write blocked for %v)", why, t)
		}
	}
	if isClosed(err) {
		p.closed.Store(true) // not news; but the tunnel ends
		p.ends[0].Close()
		p.ends[1].Close()
		return
	}
	p.fail(err)
}

// setKeepAlive applies ka to the TCP connection under c, if there is one.
func setKeepAlive(c net.Conn, ka net.KeepAliveConfig) {
	type keepAliver interface {
		SetKeepAliveConfig(net.KeepAliveConfig) error
	}
	for range 8 { // wrappers do not nest deeper than that
		if k, ok := c.(keepAliver); ok {
			k.SetKeepAliveConfig(ka)
			return
		}
		u, ok := c.(interface{ NetConn() net.Conn })
		if !ok {
			return
		}
		c = u.NetConn()
	}
}

// Echo sends back what c sends, counting it both ways, until c half-closes;
// then it closes c.
func Echo(c net.Conn, st *Stats) error {
	if st == nil {
		st = &Stats{}
	}
	n, err := io.Copy(countingWriter{c, &st.BToA}, c)
	st.AToB.Store(n)
	if err == nil || isClosed(err) {
		if cw, ok := unwrap(c).(closeWriter); ok {
			cw.CloseWrite()
		}
		err = nil
	}
	c.Close()
	return err
}

// unwrap reaches a connection under a wrapper that embeds it (such as
// switching.Conn), for CloseWrite.
func unwrap(c net.Conn) net.Conn {
	for {
		if _, ok := c.(closeWriter); ok {
			return c
		}
		u, ok := c.(interface{ NetConn() net.Conn })
		if !ok {
			return c
		}
		c = u.NetConn()
	}
}

func isClosed(err error) bool {
	return errors.Is(err, net.ErrClosed) || errors.Is(err, io.EOF)
}

type countingWriter struct {
	w io.Writer
	n *atomic.Int64
}

func (c countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n.Add(int64(n))
	return n, err
}

// StdioConn is stdin and stdout as a net.Conn, for ProxyCommand-style
// tunnels (`ampmux connect`). CloseWrite closes stdout. Deadlines are
// passed on to In and Out when they take them (an *os.File over a pipe
// does); otherwise the Set methods return os.ErrNoDeadline, and PipeWith
// times that end with a timer instead.
type StdioConn struct {
	In  io.ReadCloser
	Out io.WriteCloser
}

type readDeadliner interface{ SetReadDeadline(time.Time) error }
type writeDeadliner interface{ SetWriteDeadline(time.Time) error }

func (s *StdioConn) Read(p []byte) (int, error)  { return s.In.Read(p) }
func (s *StdioConn) Write(p []byte) (int, error) { return s.Out.Write(p) }
func (s *StdioConn) CloseWrite() error           { return s.Out.Close() }
func (s *StdioConn) Close() error {
	s.Out.Close()
	return s.In.Close()
}
func (s *StdioConn) LocalAddr() net.Addr  { return stdioAddr{} }
func (s *StdioConn) RemoteAddr() net.Addr { return stdioAddr{} }

func (s *StdioConn) SetDeadline(t time.Time) error {
	return errors.Join(s.SetReadDeadline(t), s.SetWriteDeadline(t))
}

func (s *StdioConn) SetReadDeadline(t time.Time) error {
	if d, ok := s.In.(readDeadliner); ok {
		return d.SetReadDeadline(t)
	}
	return os.ErrNoDeadline
}

func (s *StdioConn) SetWriteDeadline(t time.Time) error {
	if d, ok := s.Out.(writeDeadliner); ok {
		return d.SetWriteDeadline(t)
	}
	return os.ErrNoDeadline
}

type stdioAddr struct{}

func (stdioAddr) Network() string { return "stdio" }
func (stdioAddr) String() string  { return "stdio" }
