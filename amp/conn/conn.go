package conn

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ampmux/ampmux/amp"
	"github.com/ampmux/ampmux/amp/box"
)

// Conn is one AMP connection. Its methods are safe for concurrent use. The
// package documentation describes its goroutines, locks and states; the
// fields below are grouped by who owns them.
type Conn struct {
	// Set before the goroutines start (dialHost by Dial, before c is
	// shared); read-only after.
	nc        net.Conn
	cfg       Config
	dialHost  string          // the name StartTLS verifies by default
	ctx       context.Context // handler responders' context; cancelled when the conn ends
	cancel    context.CancelFunc
	inlineCtx context.Context // inline responders' and Go callbacks' context: ctx plus &c.inline
	fast      fastWriter      // the fast path's socket; its state is the ownerFast holder's
	fdIn      *fdQueue        // descriptors received (Unix sockets only)
	onDone    func(*Conn)
	opened    time.Time

	// The reader goroutine's.
	rd reader
	// inline is the reader's too; SwitchAfterAnswer reaches it through
	// inlineCtx, so its fields are atomic.
	inline inlineState

	// Calls waiting for answers, under pmu. A cancelled call whose answer
	// is still due stays pending with a nil call, and its answer is dropped.
	pmu     sync.Mutex
	pending pendingCalls
	nextTag uint64
	lost    error     // set once; after it no call is accepted
	calls   sync.Pool // *call, recycled (safe for concurrent use)
	// wsent counts the bytes of the write stream the socket has taken
	// (the writer's or the fast path's, see noteSent): the reader's
	// heartbeat takes its progress for a sign of life. probeMark is the
	// heartbeat probe's: > 0, the write stream's offset just past the
	// probe awaiting its write (set by enqueue, under wmu); < 0, minus the
	// UnixNano time its last byte was written (set by noteSent); 0, none.
	wsent     atomic.Int64
	probeMark atomic.Int64
	// rcvd counts the bytes of the read stream (the reader's, through
	// kickReader), for Bytes.
	rcvd atomic.Int64
	// waking counts callers woken by an answer and not yet back: the
	// reader adds, the caller takes away. While it is not zero, callers
	// leave the write to the writer, which waits for them to batch.
	waking atomic.Int32

	// The write queue, under wmu.
	wmu  sync.Mutex
	w    writeState
	wake chan struct{} // buffered 1: anyone sends, the writer receives
	// Hints for the writer's batching, written under wmu, read without.
	wseq   atomic.Uint64 // boxes queued so far
	wbytes atomic.Int64  // len(w.buf)
	// kick: boxes were queued from the reader without waking the writer;
	// the reader sends them before it next blocks on the network. Set on
	// the reader (by code holding the token), cleared by the reader.
	kick atomic.Bool
	// dlSet is when the writer last armed the write deadline: the writer
	// goroutine's.
	dlSet time.Time
	// finalBy (UnixNano), once Close has set it, is the deadline of the
	// final flush, which the writer never extends.
	finalBy atomic.Int64

	// TLS state, under tlsMu. tlsState is set once by the reader.
	tlsMu     sync.Mutex
	tlsState  *tls.ConnectionState
	tlsServer bool
	tlsBusy   bool // a StartTLS is under way

	// Commands being answered, and the handler queue under hmu.
	active   atomic.Int32 // commands received and not yet answered
	hmu      sync.Mutex
	hq       handlerQueue
	handlers sync.WaitGroup

	// Ending.
	closeOnce  sync.Once
	errOnce    sync.Once
	err        error       // why the connection ended; set before done closes
	ended      atomic.Bool // set just after err: the connection is ending (ctx may also end through Config.BaseContext)
	done       chan struct{}
	readerDone chan struct{}
	writerDone chan struct{}
}

// reader is the state only the reader goroutine touches.
type reader struct {
	dec        *box.Decoder
	in         box.Box
	inlineResp box.Box
	errBox     box.Box
	probeEnc   []byte // the heartbeat probe's wire form
	// boxes counts the boxes decoded; boxAt is its value when the box
	// deadline was last armed, boxArmedAt when, boxStart when the box
	// being read began (first seen partly read).
	boxes, boxAt         uint64
	boxArmedAt, boxStart time.Time
	// buf accounts for the decoder's buffer against Config.Budget.
	buf readBuffer
	// armed: the box deadline is set because a box is partly read (see
	// kickReader.Read).
	armed bool
	// hb: the heartbeat's state, when Config.Heartbeat is on.
	hb heartbeat
	// takenOver: AMP has stopped; the socket belongs to someone else.
	takenOver bool
}

// inlineState is the token that the contexts of inline responders and Go
// callbacks carry (inlineCtx): only code holding it, while it runs on the
// reader, may leave its writes to the reader or ask for a switch.
type inlineState struct {
	c          *Conn
	onReader   atomic.Bool // an inline responder or a Go callback runs
	responding atomic.Bool // an inline responder runs
	switchTo   atomic.Pointer[func(net.Conn)]
}

type connKey struct{}
type inlineKey struct{}

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
		opened:     time.Now(),
		onDone:     onDone,
		nc:         nc,
		cfg:        cfg.withDefaults(),
		wake:       make(chan struct{}, 1),
		done:       make(chan struct{}),
		readerDone: make(chan struct{}),
		writerDone: make(chan struct{}),
	}
	c.w.mark = -1
	c.w.wconn = nc
	c.fast = newFastWriter(nc)
	var rd io.Reader = nc
	ctx := context.WithValue(c.cfg.BaseContext, connKey{}, c)
	if r, q := descriptorReader(nc); r != nil {
		rd, c.fdIn = r, q
		ctx = amp.WithFDTransport(ctx, c)
	}
	c.ctx, c.cancel = context.WithCancel(ctx)
	c.inline.c = c
	c.inlineCtx = context.WithValue(c.ctx, inlineKey{}, &c.inline)
	c.rd.dec = box.NewDecoder(&kickReader{c: c, r: rd})
	c.rd.dec.SetMaxBoxSize(c.cfg.MaxBoxSize)
	c.rd.dec.SetMaxFields(c.cfg.MaxFields)
	c.rd.dec.SetGrowHook(c.bufferResized)
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

// Opened returns when AMP started on the connection (for an access log's
// durations, without a table of its own).
func (c *Conn) Opened() time.Time { return c.opened }

// Bytes returns how many bytes of the AMP stream the connection has read
// and written so far (inside TLS once it is on; not those of a protocol
// it switched to).
func (c *Conn) Bytes() (read, written int64) { return c.rcvd.Load(), c.wsent.Load() }

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

// closeAfterFlush moves to closing: no new boxes, and the writer sends
// what is queued before the connection is torn down with cause.
func (c *Conn) closeAfterFlush(cause error) {
	first := false
	c.closeOnce.Do(func() {
		first = true
		// Closing before the cancel: a responder that returns when its
		// context ends must not get that answer sent.
		c.wmu.Lock()
		c.w.closing = true
		c.w.cause = cause
		c.releaseSpaceLocked()
		if !c.w.stop {
			// Bound the final flush, also for a write already blocked;
			// under wmu, so that it cannot land after a switch.
			by := time.Now().Add(finalFlushTimeout)
			c.finalBy.Store(by.UnixNano())
			c.nc.SetWriteDeadline(by)
		}
		c.wmu.Unlock()
		c.setErr(cause)
		c.signalWriter()
	})
	if first {
		// Outside the Once: Go callbacks run here.
		c.failPending(cause)
	}
}

// fail moves to closed at once.
func (c *Conn) fail(err error) {
	c.setErr(err)
	c.failPending(err)
	c.wmu.Lock()
	c.w.closing = true
	if c.w.err == nil {
		c.w.err = err
	}
	c.releaseSpaceLocked()
	stopped := c.w.stop
	c.wmu.Unlock()
	if !stopped { // after a switch the socket is its new owner's
		c.nc.Close()
	}
	c.signalWriter()
}

func (c *Conn) setErr(err error) {
	c.errOnce.Do(func() {
		c.err = err
		c.ended.Store(true)
		c.cancel()
	})
}

// finish runs once both goroutines and every handler are gone.
func (c *Conn) finish() {
	if !c.rd.takenOver {
		c.nc.Close()
	}
	c.dropQueue()
	c.releaseQueue()
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

var _ amp.Caller = (*Conn)(nil)
