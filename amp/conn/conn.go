package conn

import (
	"context"
	"errors"
	"io"
	"net"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ampmux/ampmux/amp"
	"github.com/ampmux/ampmux/amp/box"
)

// Conn is one AMP connection. Its methods are safe for concurrent use.
//
// Lock order: pmu and wmu are never held together; no network I/O happens
// under either.
type Conn struct {
	nc     net.Conn
	cfg    Config
	ctx    context.Context // responders' context; cancelled when the conn ends
	cancel context.CancelFunc

	// Owned by the reader goroutine.
	dec        *box.Decoder
	in         box.Box
	inlineResp box.Box
	errBox     box.Box

	// Calls waiting for answers. A nil entry is a cancelled call whose
	// answer is still due: it is dropped when it comes.
	pmu     sync.Mutex
	pending map[uint64]*call
	nextTag uint64
	lost    error // set once; after it no call is accepted

	// Outgoing bytes. Callers append under wmu; the writer goroutine swaps
	// buffers and writes without the lock.
	wmu      sync.Mutex
	wbuf     []byte
	wspare   []byte
	wbox     box.Box       // scratch for building command boxes
	wspace   chan struct{} // closed and replaced when a full buffer drains; nil if nobody waits
	wclosing bool          // no more writes accepted; writer flushes and exits
	werr     error
	wake     chan struct{} // buffered 1: there is something to write
	kick     atomic.Bool   // reader queued answers without waking the writer
	fdsOut   []int         // descriptors to send with the next write (Unix only)
	fdsClose []io.Closer
	sentFDs  int
	fdIn     *fdQueue

	active   atomic.Int32 // commands received and not yet answered
	handlers sync.WaitGroup
	sem      chan struct{}

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
func New(nc net.Conn, cfg *Config) *Conn {
	c := &Conn{
		nc:         nc,
		cfg:        cfg.withDefaults(),
		pending:    make(map[uint64]*call),
		wake:       make(chan struct{}, 1),
		done:       make(chan struct{}),
		readerDone: make(chan struct{}),
		writerDone: make(chan struct{}),
	}
	c.sem = make(chan struct{}, c.cfg.MaxHandlers)
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
	return New(nc, cfg), nil
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
		if errors.Is(c.err, net.ErrClosed) || c.err == io.EOF {
			return nil
		}
		return c.err
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
	c.closeOnce.Do(func() {
		c.setErr(cause)
		c.failPending(cause)
		c.wmu.Lock()
		c.wclosing = true
		c.wmu.Unlock()
		// Bound the final flush, also for a write already blocked.
		c.nc.SetWriteDeadline(time.Now().Add(finalFlushTimeout))
		c.signalWriter()
	})
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
	calls := c.pending
	c.pending = nil
	c.pmu.Unlock()
	for _, cl := range calls {
		if cl != nil {
			cl.err = lost
			cl.done <- struct{}{}
		}
	}
}

// finish runs once both goroutines are gone.
func (c *Conn) finish() {
	c.nc.Close()
	c.releaseFDs()
	if c.cfg.OnError != nil {
		c.cfg.OnError(c, c.Err2())
	}
	close(c.done)
}

// Err2 is Err without waiting for done (used while finishing).
func (c *Conn) Err2() error {
	if errors.Is(c.err, net.ErrClosed) || c.err == io.EOF {
		return nil
	}
	return c.err
}

type call struct {
	done  chan struct{} // buffered 1
	reply *box.Box
	err   error
}

var callPool = sync.Pool{New: func() any { return &call{done: make(chan struct{}, 1)} }}

// CallBox sends command with the fields of args (which must not hold
// _ask or _command) and waits for the answer, whose fields it copies into
// reply. An error answer returns a *amp.RemoteError. If ctx ends first,
// CallBox returns ctx.Err() at once and the late answer is dropped.
func (c *Conn) CallBox(ctx context.Context, command string, args, reply *box.Box) error {
	cl := callPool.Get().(*call)
	cl.reply = reply
	c.pmu.Lock()
	if c.lost != nil {
		c.pmu.Unlock()
		callPool.Put(cl)
		return c.lost
	}
	c.nextTag++
	tag := c.nextTag
	c.pending[tag] = cl
	c.pmu.Unlock()

	if err := c.writeCommand(ctx, command, tag, args); err != nil {
		c.pmu.Lock()
		owned := c.pending != nil && c.pending[tag] == cl
		if owned {
			delete(c.pending, tag)
		}
		c.pmu.Unlock()
		if !owned {
			<-cl.done // failPending signalled it
		}
		cl.reply, cl.err = nil, nil
		callPool.Put(cl)
		return err
	}
	select {
	case <-cl.done:
	case <-ctx.Done():
		c.pmu.Lock()
		owned := c.pending != nil && c.pending[tag] == cl
		if owned {
			c.pending[tag] = nil // the answer is still due; drop it then
		}
		c.pmu.Unlock()
		if owned {
			cl.reply = nil
			callPool.Put(cl)
			return ctx.Err()
		}
		<-cl.done // answered or failed while we looked
	}
	err := cl.err
	cl.reply, cl.err = nil, nil
	callPool.Put(cl)
	return err
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
	return c.writeCommand(ctx, command, 0, args)
}

// writeCommand queues a command box; tag 0 means no _ask.
func (c *Conn) writeCommand(ctx context.Context, command string, tag uint64, args *box.Box) error {
	c.wmu.Lock()
	if err := c.waitSpace(ctx, c.cfg.MaxWriteBuffer); err != nil {
		c.wmu.Unlock()
		return err
	}
	b := &c.wbox
	b.CopyFrom(args)
	b.SetString(amp.KeyCommand, command)
	if tag != 0 {
		var tmp [16]byte
		b.Set(amp.KeyAsk, strconv.AppendUint(tmp[:0], tag, 16))
	}
	var err error
	c.wbuf, err = box.Append(c.wbuf, b)
	b.Reset()
	c.wmu.Unlock()
	if err == nil {
		c.signalWriter()
	}
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
	c.wmu.Lock()
	if err := c.waitSpace(c.ctx, 4*c.cfg.MaxWriteBuffer); err != nil {
		c.wmu.Unlock()
		return err
	}
	var err error
	c.wbuf, err = box.Append(c.wbuf, b)
	c.wmu.Unlock()
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

// kickReader wakes the writer before the reader blocks on the network.
type kickReader struct {
	c *Conn
	r io.Reader
}

func (k *kickReader) Read(p []byte) (int, error) {
	if k.c.kick.Load() {
		k.c.kick.Store(false)
		k.c.signalWriter()
	}
	return k.r.Read(p)
}

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
		c.wmu.Lock()
		out := c.wbuf
		c.wbuf, c.wspare = c.wspare[:0], nil
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
			return
		}
		if len(out) > 0 {
			if err := c.write(out, fds, closing); err != nil {
				c.fail(err)
				return
			}
			for _, f := range closers {
				f.Close()
			}
		}
		if cap(out) <= 1<<20 {
			c.wmu.Lock()
			c.wspare = out[:0]
			c.wmu.Unlock()
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
	_, err := c.nc.Write(out)
	return err
}

func (c *Conn) readLoop() {
	defer close(c.readerDone)
	for {
		err := c.dec.Next(&c.in)
		if err == nil {
			err = c.dispatch(&c.in)
		}
		if err != nil {
			c.readFailed(err)
			return
		}
	}
}

func (c *Conn) readFailed(err error) {
	select {
	case <-c.ctx.Done():
		// We closed it; whatever the read says is a consequence.
		c.fail(c.err)
		return
	default:
	}
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
