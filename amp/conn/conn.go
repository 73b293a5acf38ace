package conn

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/ampmux/ampmux/amp"
	"github.com/ampmux/ampmux/amp/box"
)

// Conn is one AMP connection. Its methods are safe for concurrent use.
//
// Lock order: pmu and wmu are never held together; no network I/O happens
// under either.
type Conn struct {
	nc       net.Conn
	cfg      Config
	dialHost string          // set by Dial: the name StartTLS verifies by default
	ctx      context.Context // responders' context; cancelled when the conn ends
	cancel   context.CancelFunc

	// Owned by the reader goroutine.
	dec        *box.Decoder
	in         box.Box
	inlineResp box.Box
	errBox     box.Box

	// Calls waiting for answers. A nil entry is a cancelled call whose
	// answer is still due: it is dropped when it comes.
	pmu     sync.Mutex
	pending pendingCalls
	nextTag uint64
	lost    error // set once; after it no call is accepted

	// Outgoing bytes. Callers append under wmu; the writer goroutine swaps
	// buffers and writes without the lock.
	flushMu  sync.Mutex // held by whoever is writing to the network: writer or a direct flusher
	wmu      sync.Mutex
	wbuf     []byte
	wspare   []byte
	wspace   chan struct{}   // closed and replaced when a full buffer drains; nil if nobody waits
	wclosing bool            // no more writes accepted; writer flushes and exits
	wmark    int             // if >= 0: flush wbuf[:wmark], then pause (StartTLS, switch)
	wpaused  chan struct{}   // closed by the writer once paused at the mark
	wresume  chan struct{}   // closed to let a paused writer go on
	wstop    bool            // on resume, exit without closing: the conn was taken over
	wholding bool            // the writer is paused at a mark: nobody may write
	wconn    net.Conn        // where the writer writes: nc, or the TLS conn over it
	locked   error           // set while a switch is pending: nothing may be sent
	nbw      nbWriter        // guarded by flushMu
	raw      syscall.RawConn // nc's socket, for non-blocking writes; nil if it has none

	// TLS and switching. tlsState is set once by the reader goroutine;
	// read it under tlsMu.
	tlsMu     sync.Mutex
	tlsState  *tls.ConnectionState
	tlsServer bool
	tlsBusy   bool           // a StartTLS is under way
	inInline  bool           // reader: an inline responder is running
	switchTo  func(net.Conn) // reader: set by SwitchAfterAnswer
	takenOver bool           // reader: AMP has stopped; nc belongs to someone else
	werr      error
	wake      chan struct{} // buffered 1: there is something to write
	wseq      atomic.Uint64 // boxes appended so far: the writer yields while it grows
	waking    atomic.Int32  // callers woken by an answer and not yet back in CallBox
	wbytes    atomic.Int64  // len(wbuf), for deciding to flush without taking wmu
	kick      atomic.Bool   // reader queued answers without waking the writer
	onReader  atomic.Bool   // user code (a Go callback, an inline responder) runs on the reader
	fdsOut    []int         // descriptors to send with the next write (Unix only)
	fdsClose  []io.Closer
	sentFDs   int
	fdIn      *fdQueue

	active   atomic.Int32 // commands received and not yet answered
	handlers sync.WaitGroup
	sem      chan struct{}

	onDone     func(*Conn)
	closeOnce  sync.Once
	errOnce    sync.Once
	err        error // why the connection ended; set before done closes
	done       chan struct{}
	readerDone chan struct{}
	writerDone chan struct{}
}

type connKey struct{}

// FromContext returns the connection a responder is serving, so that it
// can call the peer back.
func FromContext(ctx context.Context) *Conn {
	c, _ := ctx.Value(connKey{}).(*Conn)
	return c
}

// New starts AMP on nc: it starts the reader and writer goroutines and
// returns at once. The Conn owns nc from then on.
func New(nc net.Conn, cfg *Config) *Conn { return newConn(nc, cfg, nil) }

// newConn is New with a function called once the connection has ended (a
// Server's bookkeeping, without a goroutine per connection to wait).
func newConn(nc net.Conn, cfg *Config, onDone func(*Conn)) *Conn {
	c := &Conn{
		onDone:     onDone,
		nc:         nc,
		cfg:        cfg.withDefaults(),
		wake:       make(chan struct{}, 1),
		wmark:      -1,
		wconn:      nc,
		done:       make(chan struct{}),
		readerDone: make(chan struct{}),
		writerDone: make(chan struct{}),
	}
	c.sem = make(chan struct{}, c.cfg.MaxHandlers)
	c.raw = rawConnOf(nc)
	var rd io.Reader = nc
	ctx := context.WithValue(c.cfg.BaseContext, connKey{}, c)
	if uc, ok := nc.(*net.UnixConn); ok {
		c.fdIn = &fdQueue{}
		rd = &unixReader{uc: uc, q: c.fdIn}
		ctx = amp.WithFDTransport(ctx, c)
	}
	c.ctx, c.cancel = context.WithCancel(ctx)
	c.dec = box.NewDecoder(&kickReader{c: c, r: rd})
	c.dec.SetMaxBoxSize(c.cfg.MaxBoxSize)
	go c.readLoop()
	go c.writeLoop()
	return c
}

// Dial connects to addr and starts AMP on the connection.
func Dial(ctx context.Context, network, addr string, cfg *Config) (*Conn, error) {
	var d net.Dialer
	nc, err := d.DialContext(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	c := New(nc, cfg)
	if host, _, err := net.SplitHostPort(addr); err == nil {
		c.dialHost = host // before anyone else sees c
	}
	return c, nil
}

// NetConn returns the underlying connection.
func (c *Conn) NetConn() net.Conn { return c.nc }

// LocalAddr and RemoteAddr are those of the underlying connection.
func (c *Conn) LocalAddr() net.Addr  { return c.nc.LocalAddr() }
func (c *Conn) RemoteAddr() net.Addr { return c.nc.RemoteAddr() }

// Done is closed when the connection has ended and its goroutines (but
// not necessarily its responders) have exited.
func (c *Conn) Done() <-chan struct{} { return c.done }

// Err returns why the connection ended: nil while it is open and after a
// clean Close or a clean hang-up by the peer.
func (c *Conn) Err() error {
	select {
	case <-c.done:
		return cleanErr(c.err)
	default:
		return nil
	}
}

// Close sends what is queued (waiting at most a few seconds for a peer
// that does not read), closes the connection, fails pending calls with
// ErrConnectionLost, and waits for the reader and writer goroutines to
// exit. Responders still running see their context cancelled; Done is
// closed once they have returned. Do not call Close from an inline
// responder (return a fatal error instead). Close is idempotent.
func (c *Conn) Close() error {
	c.closeAfterFlush(net.ErrClosed)
	<-c.readerDone
	<-c.writerDone
	return nil
}

// closeAfterFlush stops new writes and lets the writer send what is queued
// before the connection is torn down with cause.
func (c *Conn) closeAfterFlush(cause error) {
	first := false
	c.closeOnce.Do(func() {
		first = true
		c.setErr(cause)
		c.wmu.Lock()
		c.wclosing = true
		c.wmu.Unlock()
		// Bound the final flush, also for a write already blocked.
		c.nc.SetWriteDeadline(time.Now().Add(finalFlushTimeout))
		c.signalWriter()
	})
	if first {
		// Outside the Once: Go callbacks run here.
		c.failPending(cause)
	}
}

// fail tears the connection down at once.
func (c *Conn) fail(err error) {
	c.setErr(err)
	c.failPending(err)
	c.wmu.Lock()
	c.wclosing = true
	if c.werr == nil {
		c.werr = err
	}
	c.wmu.Unlock()
	c.nc.Close()
	c.signalWriter()
}

func (c *Conn) setErr(err error) {
	c.errOnce.Do(func() {
		c.err = err
		c.cancel()
	})
}

func (c *Conn) failPending(cause error) {
	lost := &LostError{Cause: cause}
	c.pmu.Lock()
	if c.lost != nil {
		c.pmu.Unlock()
		return
	}
	c.lost = lost
	calls := c.pending.drain()
	c.pmu.Unlock()
	for _, cl := range calls {
		switch {
		case cl == nil:
		case cl.cb != nil:
			done := cl.cb
			releaseCall(cl)
			done(nil, lost)
		default:
			cl.err = lost
			cl.done <- struct{}{}
		}
	}
}

// finish runs once both goroutines are gone.
func (c *Conn) finish() {
	if !c.takenOver {
		c.nc.Close()
	}
	c.releaseFDs()
	if c.cfg.OnError != nil {
		c.cfg.OnError(c, cleanErr(c.err))
	}
	close(c.done)
	if c.onDone != nil {
		c.onDone(c)
	}
}

// cleanErr hides the causes of an orderly end.
func cleanErr(err error) error {
	if errors.Is(err, net.ErrClosed) || err == io.EOF || errors.Is(err, ErrSwitched) {
		return nil
	}
	return err
}

type call struct {
	done  chan struct{} // buffered 1
	reply *box.Box
	err   error
	// For StartTLS and switches: run on the reader goroutine when the
	// answer arrives, before the caller is woken.
	after  func(isErr bool) error
	paused chan struct{}
	// counted: the reader counted this caller in Conn.waking when it
	// woke it.
	counted bool
	// The request's wire form, built outside the write lock.
	enc []byte
	// cb: a call made by Go; the answer goes to it on the reader.
	cb func(*box.Box, error)
	// refs: a Go call is recycled once both its sender and whoever calls
	// cb back are done with it (a peer may answer, or the connection
	// fail, before the sender has finished).
	refs atomic.Int32
}

var callPool = sync.Pool{New: func() any { return &call{done: make(chan struct{}, 1)} }}

// putCall recycles cl, unless it held a large request.
func putCall(cl *call) {
	cl.reply, cl.err, cl.cb, cl.counted = nil, nil, nil, false
	if cap(cl.enc) > 64<<10 {
		return
	}
	callPool.Put(cl)
}

// releaseCall drops one of a Go call's two references.
func releaseCall(cl *call) {
	if cl.refs.Add(-1) == 0 {
		putCall(cl)
	}
}

// CallBox sends command with the fields of args (which must not hold
// _ask or _command: that is a *box.DuplicateKeyError) and waits for the
// answer, whose fields it copies into
// reply. An error answer returns a *amp.RemoteError. If ctx ends first,
// CallBox returns ctx.Err() at once and the late answer is dropped.
func (c *Conn) CallBox(ctx context.Context, command string, args, reply *box.Box) error {
	cl := callPool.Get().(*call)
	cl.reply = reply
	tag, alone, err := c.register(cl)
	if err != nil {
		putCall(cl)
		return err
	}
	if err := c.sendCommand(ctx, cl, command, tag, args, alone); err != nil {
		if !c.unregister(tag, cl) {
			<-cl.done // failPending (or an early answer) signalled it
			if cl.counted {
				c.waking.Add(-1)
			}
		}
		putCall(cl)
		return err
	}
	if done := ctx.Done(); done == nil {
		<-cl.done // no select for contexts that never end
	} else {
		select {
		case <-cl.done:
		case <-done:
			if c.abandon(tag, cl) {
				return ctx.Err()
			}
			<-cl.done // answered or failed while we looked
		}
	}
	if cl.counted {
		cl.counted = false
		c.waking.Add(-1)
	}
	err = cl.err
	putCall(cl)
	return err
}

// register gives cl a tag and makes it pending. alone: no other call is
// waiting for an answer, nor was just answered (its caller may be about to
// call again).
func (c *Conn) register(cl *call) (tag uint64, alone bool, err error) {
	c.pmu.Lock()
	defer c.pmu.Unlock()
	if c.lost != nil {
		return 0, false, c.lost
	}
	c.nextTag++
	tag = c.nextTag
	c.pending.put(tag, cl)
	return tag, c.pending.len() == 1 && c.waking.Load() == 0, nil
}

// unregister takes back a call that could not be sent; false means
// failPending has it and signals (or calls back) it.
func (c *Conn) unregister(tag uint64, cl *call) bool {
	c.pmu.Lock()
	defer c.pmu.Unlock()
	cur, _ := c.pending.lookup(tag)
	if c.lost != nil || cur != cl {
		return false
	}
	c.pending.remove(tag)
	return true
}

// abandon forgets a call whose caller gave up; it reports false if the
// answer (or a failure) got there first and cl.done is about to fire.
func (c *Conn) abandon(tag uint64, cl *call) bool {
	c.pmu.Lock()
	cur, _ := c.pending.lookup(tag)
	owned := c.lost == nil && cur == cl
	if owned {
		c.pending.cancel(tag) // the answer is still due; drop it then
	}
	c.pmu.Unlock()
	if owned {
		cl.reply = nil
		putCall(cl)
	}
	return owned
}

// Call is CallBox returning a new reply box.
func (c *Conn) Call(ctx context.Context, command string, args *box.Box) (*box.Box, error) {
	reply := new(box.Box)
	if err := c.CallBox(ctx, command, args, reply); err != nil {
		return nil, err
	}
	return reply, nil
}

// SendBox sends command with args and no _ask: the peer answers nothing
// (Twisted's requiresAnswer=False).
func (c *Conn) SendBox(ctx context.Context, command string, args *box.Box) error {
	c.pmu.Lock()
	lost := c.lost
	c.pmu.Unlock()
	if lost != nil {
		return lost
	}
	cl := callPool.Get().(*call) // for its encoding buffer
	defer putCall(cl)
	var err error
	cl.enc, err = box.AppendWith(cl.enc[:0], args, box.Field{Key: amp.KeyCommand, Value: []byte(command)})
	if err != nil {
		return err
	}
	if err := c.enqueueWire(ctx, nil, cl.enc, c.cfg.MaxWriteBuffer, nil, false); err != nil {
		return err
	}
	c.signalWriter()
	return nil
}

// sendCommand queues a call and sees it sent: a caller with no other call
// pending writes it itself, sparing the hand-off to the writer goroutine
// (a third of the latency at one call in flight); otherwise the writer
// batches it with the boxes of other callers.
func (c *Conn) sendCommand(ctx context.Context, cl *call, command string, tag uint64, args *box.Box, alone bool) error {
	if err := c.encodeCall(cl, command, tag, args); err != nil {
		return err
	}
	if err := c.enqueueWire(ctx, nil, cl.enc, c.cfg.MaxWriteBuffer, nil, false); err != nil {
		return err
	}
	if alone {
		c.flushDirect(false)
	} else {
		c.signalWriter()
	}
	return nil
}

// enqueue appends the wire form of b to the write buffer, waiting while
// the buffer holds limit bytes or more. With mark, the writer sends
// everything up to and including b, then pauses until resumed: what is
// queued after b waits (for TLS to start, or is dropped by a switch). The
// returned channel is closed once the writer has paused.
func (c *Conn) enqueue(ctx context.Context, b *box.Box, limit int, mark bool) (chan struct{}, error) {
	var paused chan struct{}
	if mark {
		paused = make(chan struct{})
	}
	return paused, c.enqueueWire(ctx, b, nil, limit, paused, false)
}

// enqueueWire appends a box to the write buffer, waiting while the buffer
// holds limit bytes or more: b encoded in place, or enc already encoded
// (when b is nil). paused (if not nil) marks the end of this box for the
// writer to pause at; lock refuses every later box until the switch is
// decided.
func (c *Conn) enqueueWire(ctx context.Context, b *box.Box, enc []byte, limit int, paused chan struct{}, lock bool) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if err := c.waitSpace(ctx, limit); err != nil {
		return err
	}
	if c.locked != nil {
		return c.locked
	}
	if b != nil {
		var err error
		if c.wbuf, err = box.Append(c.wbuf, b); err != nil {
			return err
		}
	} else {
		c.wbuf = append(c.wbuf, enc...)
	}
	c.wseq.Add(1)
	c.wbytes.Store(int64(len(c.wbuf)))
	if paused != nil {
		c.wmark = len(c.wbuf)
		c.wpaused = paused
		c.wresume = make(chan struct{})
	}
	if lock {
		c.locked = ErrSwitchPending
	}
	return nil
}

// encodeCall puts the wire form of a call into cl.enc.
func (c *Conn) encodeCall(cl *call, command string, tag uint64, args *box.Box) error {
	var tmp [16]byte
	var err error
	cl.enc, err = box.AppendWith(cl.enc[:0], args,
		box.Field{Key: amp.KeyAsk, Value: strconv.AppendUint(tmp[:0], tag, 16)},
		box.Field{Key: amp.KeyCommand, Value: []byte(command)})
	return err
}

// waitSpace waits, with wmu held, until the write buffer is under limit.
func (c *Conn) waitSpace(ctx context.Context, limit int) error {
	for {
		if c.wclosing {
			if c.werr != nil {
				return &LostError{Cause: c.werr}
			}
			return &LostError{Cause: net.ErrClosed}
		}
		if len(c.wbuf) < limit {
			return nil
		}
		if c.wspace == nil {
			c.wspace = make(chan struct{})
		}
		// Whoever filled the buffer may not have woken the writer (calls
		// from the reader goroutine leave the flush to it).
		c.signalWriter()
		ch := c.wspace
		c.wmu.Unlock()
		var err error
		select {
		case <-ch:
		case <-ctx.Done():
			err = ctx.Err()
		case <-c.done:
		}
		c.wmu.Lock()
		if err != nil {
			return err
		}
	}
}

// queueAnswer appends an answer or error box; the reader's kickReader
// wakes the writer before it next blocks, so that all answers to one read
// leave in one write.
func (c *Conn) queueAnswer(b *box.Box, fromReader bool) error {
	_, err := c.enqueue(c.ctx, b, 4*c.cfg.MaxWriteBuffer, false)
	if err != nil {
		return err
	}
	if fromReader {
		c.kick.Store(true)
	} else {
		c.signalWriter()
	}
	return nil
}

func (c *Conn) signalWriter() {
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// kickReader wakes the writer before the reader blocks on the network, and
// arms the box deadline while a box is partly read.
type kickReader struct {
	c     *Conn
	r     io.Reader
	armed bool
}

func (k *kickReader) Read(p []byte) (int, error) {
	c := k.c
	if c.kick.Load() {
		// Input ran dry: send every answer to it in one write, from here.
		c.kick.Store(false)
		c.flushDirect(true)
	}
	if midBox := len(c.dec.Buffered()) > 0; midBox != k.armed {
		k.armed = midBox
		if midBox {
			c.nc.SetReadDeadline(time.Now().Add(c.cfg.BoxTimeout))
		} else {
			c.nc.SetReadDeadline(time.Time{})
		}
	}
	return k.r.Read(p)
}

// maxYields bounds how often the writer yields for more boxes before it
// writes.
const maxYields = 8

func (c *Conn) writeLoop() {
	defer func() {
		close(c.writerDone)
		<-c.readerDone
		c.handlers.Wait()
		c.finish()
	}()
	for {
		<-c.wake
		// Let the callers woken by the same read append their boxes
		// before we take the buffer: this batching is most of the
		// throughput under load.
		runtime.Gosched()
		// Go on yielding while callers keep appending: one write for a
		// whole wave of callers woken by one read.
		for range maxYields {
			n := c.wseq.Load()
			runtime.Gosched()
			if c.wseq.Load() == n && c.waking.Load() == 0 || c.wbytes.Load() >= flushEarly {
				break
			}
		}
		c.flushMu.Lock()
		c.wmu.Lock()
		if c.wstop {
			// Taken over: what is queued belongs to nobody now.
			c.wmu.Unlock()
			c.flushMu.Unlock()
			return
		}
		out := c.wbuf
		var paused, resume chan struct{}
		if c.wmark >= 0 {
			// Up to the mark now; the rest waits for the pause to end.
			c.wbuf = append(c.wspare[:0], out[c.wmark:]...)
			c.wbytes.Store(int64(len(c.wbuf)))
			out = out[:c.wmark]
			c.wmark, paused, resume = -1, c.wpaused, c.wresume
			c.wholding = true // until resumeWriter
		} else {
			c.wbuf = c.wspare[:0]
			c.wbytes.Store(int64(len(c.wbuf)))
		}
		c.wspare = nil
		var fds []int
		var closers []io.Closer
		if len(out) > 0 { // descriptors need stream bytes to ride on
			fds, closers = c.fdsOut, c.fdsClose
			c.fdsOut, c.fdsClose = nil, nil
		}
		closing, werr := c.wclosing, c.werr
		if c.wspace != nil {
			close(c.wspace)
			c.wspace = nil
		}
		c.wmu.Unlock()
		if werr != nil {
			c.flushMu.Unlock()
			return
		}
		if len(out) > 0 {
			if err := c.write(out, fds, closing); err != nil {
				c.flushMu.Unlock()
				c.fail(err)
				return
			}
			for _, f := range closers {
				f.Close()
			}
		}
		c.returnSpare(out)
		c.flushMu.Unlock()
		if paused != nil {
			close(paused)
			select {
			case <-resume:
			case <-c.ctx.Done():
			}
			c.wmu.Lock()
			stop := c.wstop
			c.wmu.Unlock()
			if stop {
				return
			}
			c.signalWriter() // send what queued up meanwhile
			continue
		}
		if closing {
			c.wmu.Lock()
			more := len(c.wbuf) > 0
			c.wmu.Unlock()
			if more {
				c.signalWriter()
				continue
			}
			c.nc.Close()
			return
		}
	}
}

func (c *Conn) write(out []byte, fds []int, closing bool) error {
	switch {
	case closing:
		c.nc.SetWriteDeadline(time.Now().Add(finalFlushTimeout))
	case c.cfg.WriteTimeout > 0:
		c.nc.SetWriteDeadline(time.Now().Add(c.cfg.WriteTimeout))
	}
	if len(fds) > 0 {
		return c.writeWithFDs(out, fds)
	}
	_, err := c.wconn.Write(out)
	return err
}

func (c *Conn) readLoop() {
	defer close(c.readerDone)
	for {
		err := c.dec.Next(&c.in)
		if err == nil {
			err = c.dispatch(&c.in)
		}
		if c.takenOver {
			return
		}
		if err != nil {
			c.readFailed(err)
			return
		}
		if c.kick.Load() && c.wbytes.Load() >= flushEarly {
			// Much is queued and more input waits: send it now, so that
			// the peer works on it while we go on.
			c.kick.Store(false)
			c.flushDirect(true)
		}
	}
}

// flushEarly is how many queued bytes make the reader (or writer) send
// before the batch is complete: large enough to amortize the syscall over
// ~100 small boxes, small enough that both peers work at once.
const flushEarly = 4 << 10

func (c *Conn) readFailed(err error) {
	select {
	case <-c.ctx.Done():
		// We closed it; whatever the read says is a consequence.
		c.fail(c.err)
		return
	default:
	}
	err = c.tlsReadError(err)
	var pe *ProtocolError
	switch {
	case err == io.EOF:
	case errors.As(err, &pe):
	case isDecodeError(err):
		err = &ProtocolError{Err: err}
	}
	if pe != nil || isDecodeError(err) {
		c.cfg.Logger.Warn("amp: closing connection after bad input", "remote", c.nc.RemoteAddr(), "err", err)
	}
	// Let answers already queued go out, then close.
	c.closeAfterFlush(err)
	c.nc.SetReadDeadline(time.Now())
}

func isDecodeError(err error) bool {
	var tl *box.TooLongError
	return errors.As(err, &tl) || errors.Is(err, box.ErrBoxTooLarge) ||
		errors.Is(err, box.ErrDuplicateKey) || errors.Is(err, io.ErrUnexpectedEOF)
}
