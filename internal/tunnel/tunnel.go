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
// FIN is noticed within about a minute. Silence is counted from the last
// byte moved either way, read from an end or written to one, so that data
// that keeps flowing, however slowly, is never cut. The timeouts are read
// and write deadlines on the ends, not goroutines of their own: a timer
// stands in only for an end that refuses a deadline, and closes both ends
// when it fires.
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
// pipe runs (and after: see PipeWith on a copy it did not wait for).
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
//
// A byte counts as traffic when it is read from an end and again when it
// is written to the other, however long the write takes: a write that its
// deadline interrupts after some progress goes on with the rest. Progress
// inside one write is seen only when that deadline passes, so a slow
// write can give the tunnel up to one more timeout after its last byte.
// Two kinds of end cannot go on that way. A *tls.Conn makes a write its
// deadline interrupted fail for good (crypto/tls cannot resume a record),
// so over TLS a single write (of up to 32 KiB) that takes longer than the
// timeout ends the tunnel, with the timeout's error. An end that refuses
// write deadlines shows a write's progress only when the write returns,
// so the stand-in timer bounds that write as a whole.
type Options struct {
	// HalfCloseTimeout bounds a half-closed tunnel: once one direction has
	// ended (its source sent EOF, passed on as a half-close), the other
	// direction may go HalfCloseTimeout without moving a byte before both
	// ends are closed. It is an inactivity timeout, like HAProxy's timeout
	// client-fin and server-fin: an answer that keeps flowing, even to a
	// reader slower than a buffer per timeout, is never cut. Zero means
	// DefaultHalfCloseTimeout (30 s); negative means no limit (a silent
	// peer then holds both ends for ever, as before this option existed).
	HalfCloseTimeout time.Duration

	// IdleTimeout, if positive, closes the tunnel after that long without
	// a byte moving in either direction: steady traffic one way keeps it
	// open. Zero or negative means no limit: interactive sessions (SSH, a
	// database client) may rightly be silent for hours, and keep-alive
	// finds the peers that are gone.
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
// other side's write half if it can (with its CloseWrite, or, where that
// is missing or says errors.ErrUnsupported, the CloseWrite of the
// connection under its NetConn method), or closes it if it cannot; from
// then on opt.HalfCloseTimeout applies to the direction left. It returns
// the first error that was not an orderly end: one matching
// ErrHalfCloseTimeout or ErrIdleTimeout if it closed the tunnel for
// silence.
//
// PipeWith owns the ends' deadlines while it runs. An end whose
// SetReadDeadline or SetWriteDeadline fails (a StdioConn over a terminal,
// say) is timed by a timer instead, which closes both ends when it fires,
// whatever call on them is in progress.
//
// Once PipeWith has closed both ends early (for a timeout, or after an
// error), it does not wait for a copy blocked in a Read or Write of an
// end that has no deadline of PipeWith's for that call: Close does not
// interrupt every such call (not a Read of an *os.File over a terminal or
// a blocking pipe, as stdin often is). It returns, and that goroutine
// exits whenever its call returns, without another Read or Write (what
// it read goes nowhere); the bytes its Write had written are still added
// to st.
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
		running:   [2]bool{true, true},
	}
	p.cond.L = &p.mu
	if p.idle > 0 {
		p.mu.Lock()
		p.timed.Store(true)
		p.armReadLocked(0, p.deadlineLocked())
		p.armReadLocked(1, p.deadlineLocked())
		p.mu.Unlock()
	}
	go p.copy(0, &st.AToB)
	go p.copy(1, &st.BToA)
	p.mu.Lock()
	for !p.doneLocked() {
		p.cond.Wait()
	}
	p.closed.Store(true) // final: from now on nothing is armed, and shut does nothing
	if p.timer != nil {
		p.timer.Stop()
	}
	err := p.first
	p.mu.Unlock()
	a.Close()
	b.Close()
	return err
}

// What a copy is in.
const (
	callNone = iota
	callRead
	callWrite
)

// pipe is the state of one PipeWith. Direction i, copy i, reads ends[i]
// and writes ends[1-i].
type pipe struct {
	ends      [2]net.Conn
	halfClose time.Duration // 0: no limit
	idle      time.Duration // 0: no limit
	start     time.Time

	// activity is when the last byte was read or written, either way, or
	// a direction ended: nanoseconds since start.
	activity atomic.Int64
	// timed: a timeout applies. Set under mu; once set it stays (a timeout
	// that applies never stops applying), so that while it is not, no
	// deadline of PipeWith's was ever set.
	timed atomic.Bool
	// closed is set under mu when both ends are being closed: early (by
	// shut), or by PipeWith as it returns. It is final: nothing is armed
	// after it, and what the copies see after it is the close, not news.
	closed atomic.Bool
	// ended[i]: direction i's source reached EOF (set under mu).
	ended [2]atomic.Bool
	// in[i] is the call copy i is in, or about to make; writes[i] counts
	// copy i's write calls (incremented before in[i] says callWrite).
	in     [2]atomic.Int32
	writes [2]atomic.Int64
	// rdl[e], wdl[e]: the read and write deadlines last set on ends[e], in
	// nanoseconds since start; 0 if PipeWith set none there (none was
	// needed yet, or the end refused it). Stored under mu.
	rdl, wdl [2]atomic.Int64

	mu      sync.Mutex
	cond    sync.Cond   // on mu: a copy returned, or shut closed the ends
	running [2]bool     // copy i has not returned
	torn    bool        // shut has closed both ends
	noRead  [2]bool     // ends[e] refused a read deadline: the timer stands in
	noWrite [2]bool     // ends[e] refused a write deadline: the timer stands in
	timer   *time.Timer // the stand-in, made on the first refusal
	first   error
	// waited[w][j] is the write call of copy j that an expiry seen by w
	// (copy 0 or 1, or 2: the timer) was put off for, and the activity
	// then.
	waited [3][2]struct {
		ok          bool
		act, writes int64
	}
}

func (p *pipe) touch() { p.activity.Store(int64(time.Since(p.start))) }

// silence is how long no byte has moved.
func (p *pipe) silence() time.Duration {
	return time.Since(p.start) - time.Duration(p.activity.Load())
}

// timeoutLocked is the silence the tunnel may go through, 0 for none, and
// the error that closing for it returns. Once a direction has ended, it
// bounds the direction left (the ended one's copy has returned).
func (p *pipe) timeoutLocked() (time.Duration, error) {
	t, why := p.idle, ErrIdleTimeout
	if (p.ended[0].Load() || p.ended[1].Load()) && p.halfClose > 0 && (t == 0 || p.halfClose < t) {
		t, why = p.halfClose, ErrHalfCloseTimeout
	}
	return t, why
}

// deadlineLocked is when the tunnel times out if no byte moves before:
// nanoseconds since start, 0 if no timeout applies.
func (p *pipe) deadlineLocked() int64 {
	t, _ := p.timeoutLocked()
	if t == 0 || p.closed.Load() {
		return 0
	}
	return p.activity.Load() + int64(t)
}

// armReadLocked sets ends[e]'s read deadline, or the stand-in timer, to
// at (nanoseconds since start; 0: none, as deadlineLocked says).
func (p *pipe) armReadLocked(e int, at int64) {
	if at == 0 || p.closed.Load() {
		return
	}
	if !p.noRead[e] {
		if p.ends[e].SetReadDeadline(p.start.Add(time.Duration(at))) == nil {
			p.rdl[e].Store(at)
			return
		}
		p.noRead[e] = true
		p.rdl[e].Store(0)
	}
	p.armTimerLocked(at)
}

// armWriteLocked is armReadLocked for ends[e]'s write deadline.
func (p *pipe) armWriteLocked(e int, at int64) {
	if at == 0 || p.closed.Load() {
		return
	}
	if !p.noWrite[e] {
		if p.ends[e].SetWriteDeadline(p.start.Add(time.Duration(at))) == nil {
			p.wdl[e].Store(at)
			return
		}
		p.noWrite[e] = true
		p.wdl[e].Store(0)
	}
	p.armTimerLocked(at)
}

func (p *pipe) armWrite(e int) {
	p.mu.Lock()
	p.armWriteLocked(e, p.deadlineLocked())
	p.mu.Unlock()
}

// armTimerLocked sets the stand-in timer to at. Once made, it stays armed
// until the pipe is closed: when it fires early (traffic since), it
// re-arms itself for the new deadline.
func (p *pipe) armTimerLocked(at int64) {
	d := time.Duration(at) - time.Since(p.start)
	if p.timer == nil {
		p.timer = time.AfterFunc(d, p.timerFired)
	} else {
		p.timer.Reset(d)
	}
}

// timerFired closes the tunnel if it has been silent for its timeout, and
// otherwise re-arms the timer for when it will have been. It bounds every
// call on the ends, a Read or a Write, by closing both.
func (p *pipe) timerFired() {
	p.mu.Lock()
	if p.closed.Load() { // stopped: PipeWith has returned, or is closing
		p.mu.Unlock()
		return
	}
	t, why := p.timeoutLocked()
	at := p.deadlineLocked()
	if p.silence() >= t {
		at = p.putOffLocked(2)
	}
	if at != 0 {
		p.armTimerLocked(at)
		p.mu.Unlock()
		return
	}
	p.mu.Unlock()
	p.shut(fmt.Errorf("%w (%v without a byte)", why, t))
}

// putOffLocked is called when w (copy 0 or 1, or 2: the timer) finds the
// tunnel silent for its timeout. A write of the other copy in progress,
// to an end that has a deadline of ours, may have moved bytes that are
// not counted yet: they are when its deadline passes. Then the expiry is
// put off until just after that, once per write call: if the call has
// ended and nothing has moved since, that write is stuck too (it saw the
// silence itself, and put its own expiry off for w's call, if w was in
// one). putOffLocked returns when to look again, or 0 if the tunnel has
// expired.
func (p *pipe) putOffLocked(w int) int64 {
	act := p.activity.Load()
	var at int64
	for j := range 2 {
		if j == w || p.in[j].Load() != callWrite {
			continue
		}
		d := p.wdl[1-j].Load()
		if d == 0 {
			continue // no deadline of ours: its progress shows when it returns
		}
		n := p.writes[j].Load()
		was := &p.waited[w][j]
		if was.ok && was.act == act && was.writes != n {
			continue // put off once for an earlier call, which moved nothing
		}
		was.ok, was.act, was.writes = true, act, n
		if at == 0 || d < at {
			at = d
		}
	}
	if at == 0 {
		return 0
	}
	return max(at, int64(time.Since(p.start))) + int64(deadlineSlack)
}

// deadlineSlack is how much before a deadline of PipeWith's an end may say
// it passed and still be believed (the runtime computes a deadline from
// two clock readings).
const deadlineSlack = 10 * time.Millisecond

// timedOut handles a call of copy i that failed with a deadline error:
// set is the deadline (rdl or wdl) in force when the call began, cut says
// whether a deadline of ours already interrupted the write going on. It
// returns true if the copy may go on (the tunnel is not silent, or may
// not be: the deadline is re-armed); otherwise it has closed the tunnel.
func (p *pipe) timedOut(i, call int, set int64, cut bool, err error) bool {
	e, dl, what := i, &p.rdl[i], ""
	if call == callWrite {
		e, dl, what = 1-i, &p.wdl[1-i], "; a write blocked"
	}
	p.mu.Lock()
	t, why := p.timeoutLocked()
	cur := dl.Load()
	switch {
	case cur == 0:
		// No deadline of ours is on that end: whoever owns the end set
		// it (none of our timeouts applied yet).
	case cur == set && time.Since(p.start) < time.Duration(set)-deadlineSlack:
		// Ours has not passed: the end fails calls by itself, as a
		// *tls.Conn does for good once a deadline interrupted a write.
		if cut {
			err = fmt.Errorf("%w (a write took over %v, and the end cannot resume one its deadline interrupted: %w)", why, t, err)
		}
	default:
		at := p.deadlineLocked()
		if p.silence() >= t {
			at = p.putOffLocked(i)
		}
		if at == 0 {
			err = fmt.Errorf("%w (%v without a byte%s)", why, t, what)
			break
		}
		if call == callRead {
			p.armReadLocked(e, at)
		} else {
			p.armWriteLocked(e, at)
		}
		p.mu.Unlock()
		return true
	}
	p.mu.Unlock()
	p.shut(err)
	return false
}

// shut closes both ends early and records err (nil: an orderly end), unless
// the tunnel is already being closed.
func (p *pipe) shut(err error) {
	p.mu.Lock()
	if p.closed.Load() {
		p.mu.Unlock()
		return
	}
	p.closed.Store(true)
	p.first = err
	if p.timer != nil {
		p.timer.Stop()
	}
	p.mu.Unlock()
	p.ends[0].Close()
	p.ends[1].Close()
	p.mu.Lock()
	p.torn = true
	p.cond.Broadcast()
	p.mu.Unlock()
}

// broken ends the tunnel after err: a close (ours or the other copy's) is
// an orderly end, anything else is the error to return.
func (p *pipe) broken(err error) {
	if isClosed(err) {
		err = nil
	}
	p.shut(err)
}

// doneLocked says whether PipeWith may return: both copies have, or shut
// has closed both ends and each copy still running is blocked in a call
// Close may not interrupt, and no deadline of ours will.
func (p *pipe) doneLocked() bool {
	if p.closed.Load() && !p.torn {
		return false // shut is closing the ends
	}
	for i := range 2 {
		if !p.running[i] {
			continue
		}
		if !p.torn {
			return false
		}
		switch p.in[i].Load() {
		case callRead:
			if p.rdl[i].Load() != 0 {
				return false
			}
		case callWrite:
			if p.wdl[1-i].Load() != 0 {
				return false
			}
		default:
			return false // between calls: it sees closed and returns
		}
	}
	return true
}

// enter records that copy i is about to make call, and says whether it
// may: not once the ends are being closed.
func (p *pipe) enter(i, call int) bool {
	p.in[i].Store(int32(call))
	return !p.closed.Load()
}

func (p *pipe) exit(i int) {
	p.in[i].Store(callNone)
	p.mu.Lock()
	p.running[i] = false
	p.cond.Broadcast()
	p.mu.Unlock()
}

// end passes direction i's EOF on and starts the half-close clock on the
// other direction.
func (p *pipe) end(i int) {
	p.touch()
	dst := p.ends[1-i]
	if p.timed.Load() {
		// The last write deadline may have passed since (traffic the other
		// way kept the tunnel up), and a *tls.Conn's CloseWrite writes.
		p.armWrite(1 - i)
	}
	if !p.enter(i, callWrite) {
		return
	}
	if closeWrite(dst) != nil && !p.closed.Load() {
		dst.Close()
	}
	p.in[i].Store(callNone)
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed.Load() {
		return
	}
	p.ended[i].Store(true)
	if p.ended[1-i].Load() {
		return
	}
	if t, _ := p.timeoutLocked(); t > 0 {
		p.timed.Store(true)
		at := p.deadlineLocked()
		p.armReadLocked(1-i, at)
		// The other direction may be blocked writing to this source.
		p.armWriteLocked(i, at)
	}
}

func (p *pipe) copy(i int, n *atomic.Int64) {
	defer p.exit(i)
	src := p.ends[i]
	buf := make([]byte, 32<<10)
	for {
		set := p.rdl[i].Load()
		if !p.enter(i, callRead) {
			return
		}
		nr, rerr := src.Read(buf)
		if nr > 0 {
			p.touch()
		}
		p.in[i].Store(callNone)
		if p.closed.Load() {
			return // the ends are closed (what was read goes nowhere)
		}
		if nr > 0 {
			if !p.write(i, buf[:nr], n) {
				return
			}
		}
		switch {
		case rerr == nil:
		case errors.Is(rerr, io.EOF):
			p.end(i)
			return
		case errors.Is(rerr, os.ErrDeadlineExceeded):
			if !p.timedOut(i, callRead, set, false, rerr) {
				return
			}
		default:
			p.broken(rerr)
			return
		}
	}
}

// write writes b to direction i's destination, counting and touching as
// it goes; a write that a deadline of ours interrupted goes on with the
// rest (the deadline re-armed by timedOut) while the tunnel is not
// silent. It says whether the copy may go on.
func (p *pipe) write(i int, b []byte, n *atomic.Int64) bool {
	dst := p.ends[1-i]
	if p.timed.Load() {
		p.armWrite(1 - i)
	}
	for cut := false; ; cut = true {
		set := p.wdl[1-i].Load()
		p.writes[i].Add(1)
		if !p.enter(i, callWrite) {
			return false
		}
		nw, werr := dst.Write(b)
		nw = min(max(nw, 0), len(b))
		if nw > 0 {
			n.Add(int64(nw))
			p.touch() // before in says the call is over: see putOffLocked
			b = b[nw:]
		}
		p.in[i].Store(callNone)
		if p.closed.Load() {
			return false
		}
		switch {
		case werr == nil && len(b) == 0:
			return true
		case werr == nil:
			p.broken(io.ErrShortWrite)
			return false
		case !errors.Is(werr, os.ErrDeadlineExceeded):
			p.broken(werr)
			return false
		case !p.timedOut(i, callWrite, set, cut, werr):
			return false
		case len(b) == 0:
			return true
		}
	}
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

// Echo is EchoWith with the zero Options, as Pipe is PipeWith's.
func Echo(c net.Conn, st *Stats) error {
	return EchoWith(c, st, Options{})
}

// EchoWith sends back what c sends, counting it both ways (st.AToB what c
// sent, st.BToA what it was sent back), until c half-closes and has had
// everything back; then it half-closes c and closes it. It is PipeWith
// between c and an end that returns what is written to it, so opt's
// timeouts and keep-alive apply as to any tunnel: a client that half-closed
// but does not read its echo back, or (with IdleTimeout) one that sends
// nothing, is closed in time.
func EchoWith(c net.Conn, st *Stats, opt Options) error {
	return PipeWith(c, newLoopback(), st, opt)
}

// loopback is a net.Conn whose reads return what was written to it, over
// a net.Pipe: a Write returns once reads have taken all of it, and after
// CloseWrite reads return io.EOF. It takes deadlines, and Close interrupts
// its calls.
type loopback struct{ r, w net.Conn }

func newLoopback() *loopback {
	r, w := net.Pipe()
	return &loopback{r: r, w: w}
}

func (l *loopback) Read(p []byte) (int, error)  { return l.r.Read(p) }
func (l *loopback) Write(p []byte) (int, error) { return l.w.Write(p) }
func (l *loopback) CloseWrite() error           { return l.w.Close() }
func (l *loopback) Close() error {
	l.w.Close()
	return l.r.Close()
}
func (l *loopback) LocalAddr() net.Addr                { return namedAddr("echo") }
func (l *loopback) RemoteAddr() net.Addr               { return namedAddr("echo") }
func (l *loopback) SetReadDeadline(t time.Time) error  { return l.r.SetReadDeadline(t) }
func (l *loopback) SetWriteDeadline(t time.Time) error { return l.w.SetWriteDeadline(t) }
func (l *loopback) SetDeadline(t time.Time) error {
	return errors.Join(l.r.SetReadDeadline(t), l.w.SetWriteDeadline(t))
}

// closeWrite half-closes c with its CloseWrite or, where c has none or it
// says errors.ErrUnsupported (a wrapper over a connection it cannot see
// into, such as switching.Conn over another wrapper), with that of the
// connection under c's NetConn method.
func closeWrite(c net.Conn) error {
	for range 8 { // wrappers do not nest deeper than that
		if cw, ok := c.(closeWriter); ok {
			if err := cw.CloseWrite(); !errors.Is(err, errors.ErrUnsupported) {
				return err
			}
		}
		u, ok := c.(interface{ NetConn() net.Conn })
		if !ok {
			break
		}
		if c = u.NetConn(); c == nil {
			break
		}
	}
	return errors.ErrUnsupported
}

func isClosed(err error) bool {
	return errors.Is(err, net.ErrClosed) || errors.Is(err, io.EOF)
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
func (s *StdioConn) LocalAddr() net.Addr  { return namedAddr("stdio") }
func (s *StdioConn) RemoteAddr() net.Addr { return namedAddr("stdio") }

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

// namedAddr is the address of an end that has none: "stdio", "echo".
type namedAddr string

func (a namedAddr) Network() string { return string(a) }
func (a namedAddr) String() string  { return string(a) }
