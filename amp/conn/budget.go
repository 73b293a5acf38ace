package conn

import (
	"errors"
	"fmt"
	"sync/atomic"

	"github.com/ampmux/ampmux/amp/box"
)

// DefaultBudget is the size of the Budget a Server makes when its Config
// has none: 64 MiB, four boxes of the default MaxBoxSize in flight at once
// from peers that have not authenticated. Counting the garbage collector's
// headroom (the heap may grow to twice what is live), a flood of
// never-ending boxes then costs a server about 150 MB however many
// connections it opens, while the many small boxes of anonymous peers
// that behave (within ReadAhead, 64 KiB, each) never touch it.
const DefaultBudget = 64 << 20

// Allowance is what a connection that has not authenticated may hold on
// its own, without drawing on its Budget, in each of two places: the
// requests its handlers hold (running or queued), and the bytes queued
// for its peer. Its read buffer has box.ReadAhead (64 KiB) of its own.
const Allowance = 256 << 10

// ErrBufferBudget: a connection that has not authenticated needed more
// memory than its Budget had left, for an incomplete box or for an answer
// that the bytes already queued for its peer left no room for; the
// connection is closed, and nothing else is affected.
var ErrBufferBudget = errors.New("conn: buffer budget exhausted")

// Budget is memory shared by connections that have not authenticated (see
// Config.Trusted). Each connection holds some on its own; past that it
// draws on the budget, and gives the bytes back as it lets them go, or
// when it ends:
//
//   - its read buffer past box.ReadAhead (64 KiB), for a large box being
//     received; growth the budget cannot cover closes the connection with
//     ErrBufferBudget;
//   - the requests held by its handlers (running or queued) past
//     Allowance; a command the budget cannot cover is answered
//     CodeOverloaded at once;
//   - the bytes queued for its peer past Allowance; an answer the budget
//     cannot cover waits for the writer to send what is queued, like one
//     past Config.MaxWriteQueue (see the package documentation).
//
// A Budget may be shared by several Servers and connections; it is safe
// for concurrent use.
type Budget struct {
	limit int64
	// own is the Allowance of each connection (a test may lower it).
	own  int64
	used atomic.Int64
}

// NewBudget returns a budget of bytes; bytes <= 0 means DefaultBudget.
func NewBudget(bytes int64) *Budget {
	if bytes <= 0 {
		bytes = DefaultBudget
	}
	return &Budget{limit: bytes, own: Allowance}
}

// Limit returns the budget's size in bytes.
func (b *Budget) Limit() int64 { return b.limit }

// InUse returns the bytes drawn now.
func (b *Budget) InUse() int64 { return b.used.Load() }

// take draws n bytes if the budget has them.
func (b *Budget) take(n int64) bool {
	for {
		cur := b.used.Load()
		if cur+n > b.limit {
			return false
		}
		if b.used.CompareAndSwap(cur, cur+n) {
			return true
		}
	}
}

// takeUpTo draws what it can of n bytes, and returns it.
func (b *Budget) takeUpTo(n int64) int64 {
	for {
		cur := b.used.Load()
		got := min(n, b.limit-cur)
		if got <= 0 {
			return 0
		}
		if b.used.CompareAndSwap(cur, cur+got) {
			return got
		}
	}
}

func (b *Budget) give(n int64) { b.used.Add(-n) }

// verifiedPeer is the default Config.Trusted: the peer proved who it is
// with a certificate this end verified during StartTLS.
func verifiedPeer(c *Conn) bool {
	c.tlsMu.Lock()
	defer c.tlsMu.Unlock()
	return c.tlsState != nil && len(c.tlsState.VerifiedChains) > 0
}

// readBuffer accounts for the decoder's buffer: the reader goroutine's.
type readBuffer struct {
	size    int   // the decoder's buffer, as its grow hook reported it
	charged int64 // drawn from cfg.Budget: what the buffer holds past box.ReadAhead
}

// bufferResized is the decoder's grow hook, on the reader goroutine. A
// connection is charged for its buffer past box.ReadAhead while it is not
// Trusted; growth the budget cannot cover is refused with
// ErrBufferBudget, which stops the decoder and ends the connection.
// Invariant: rb.charged == max(0, rb.size-box.ReadAhead) for a connection
// that has never been trusted, and never more than that; it goes back to
// the budget when the buffer shrinks, and in finish.
func (c *Conn) bufferResized(delta int) error {
	rb := &c.rd.buf
	size := rb.size + delta
	budget := c.cfg.Budget
	if budget == nil {
		rb.size = size
		return nil
	}
	want := max(0, int64(size-box.ReadAhead))
	switch {
	case want < rb.charged:
		// Shrunk: give back what the buffer no longer holds.
		budget.give(rb.charged - want)
		rb.charged = want
	case want > rb.charged && c.cfg.Trusted(c):
		// Trusted connections draw nothing; what was drawn goes back.
		budget.give(rb.charged)
		rb.charged = 0
	case want > rb.charged:
		need := want - rb.charged
		if !budget.take(need) {
			return fmt.Errorf("%w: a %d-byte read buffer needs %d bytes more, %d of %d are in use",
				ErrBufferBudget, size, need, budget.InUse(), budget.Limit())
		}
		rb.charged = want
	}
	rb.size = size
	return nil
}

// releaseBuffer gives back what the connection still holds of its budget,
// as the reader exits (the decoder is not used again).
func (c *Conn) releaseBuffer() {
	if c.rd.buf.charged > 0 {
		c.cfg.Budget.give(c.rd.buf.charged)
		c.rd.buf.charged = 0
	}
}
