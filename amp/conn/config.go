package conn

import (
	"context"
	"crypto/tls"
	"log/slog"
	"time"

	"github.com/ampmux/ampmux/amp"
)

// Config configures a connection. The zero value is usable: no responders
// (every command is answered UNHANDLED) and the defaults below.
type Config struct {
	// Handler finds responders for commands the peer sends.
	Handler amp.Locator
	// MaxBoxSize bounds one incoming box in bytes (default 16 MiB); a
	// larger box closes the connection with a *ProtocolError matching
	// box.ErrBoxTooLarge.
	MaxBoxSize int
	// MaxFields bounds the fields of one incoming box (default 1024,
	// box.DefaultMaxFields: Twisted's commands carry a handful); more
	// close the connection with a *ProtocolError matching
	// box.ErrTooManyFields.
	MaxFields int
	// Budget is the memory shared by connections that are not Trusted:
	// each may buffer box.ReadAhead (64 KiB) of an incoming box, hold
	// Allowance (256 KiB) of requests in its handlers and queue Allowance
	// for its peer on its own, and draws on the budget past that (see
	// Budget for what happens when it cannot). Several Servers may share
	// one. nil: a Server makes one of DefaultBudget (64 MiB) for its
	// connections; a connection made by New or Dial then has none, and
	// MaxBoxSize, MaxHandlers, MaxQueuedCommands and MaxWriteQueue alone
	// bound it.
	Budget *Budget
	// Trusted reports whether the peer has authenticated, so that its
	// connection no longer draws on Budget. It is asked only when the
	// connection would draw: on the reader goroutine when the read buffer
	// grows past box.ReadAhead or a command finds its handlers holding
	// Allowance of requests, and on whatever goroutine queues a box past
	// Allowance for the peer. It must be safe for concurrent use and must
	// not block; it may read c's state (ConnectionState, PeerCertificate,
	// RemoteAddr), not send on it. nil: the peer completed StartTLS with
	// a certificate this end verified (tls.ConnectionState.VerifiedChains
	// is not empty).
	Trusted func(c *Conn) bool
	// MaxHandlers bounds the responders running on their own goroutine at
	// once (default 1024).
	MaxHandlers int
	// MaxQueuedCommands bounds the commands waiting for a handler once
	// MaxHandlers run; past it, commands are answered with CodeOverloaded
	// (default MaxHandlers). Each holds a copy of its request: on a
	// connection that is not Trusted, those past Allowance draw on Budget,
	// and a command it cannot cover is answered CodeOverloaded too.
	MaxQueuedCommands int
	// MaxWriteBuffer is how many bytes of outgoing boxes (the batch being
	// written included) may wait for the network before callers block
	// (default 1 MiB). Calls made on the reader (from Go callbacks and
	// inline responders, with their ctx) never block: they go up to
	// MaxWriteQueue, and past it fail with ErrWriteQueueFull (see Go).
	MaxWriteBuffer int
	// MaxWriteQueue bounds the bytes waiting for the network, answers
	// included: past it, answers wait for room too, and the reader stops
	// reading until the writer has made some (default 4 × MaxWriteBuffer,
	// so that callers filling their share never stall the reader). The
	// writer's WriteTimeout bounds that wait: a peer that reads nothing
	// loses the connection with ErrWriteTimeout. Where the writer cannot
	// write (a StartTLS request awaiting its answer), an answer past it
	// closes the connection with ErrWriteQueueFull. On a connection that
	// is not Trusted, the bytes queued past Allowance draw on Budget, and
	// an answer it cannot cover waits as one past MaxWriteQueue does (see
	// the package documentation).
	MaxWriteQueue int
	// BoxTimeout bounds how long a box may take to arrive once its first
	// byte has, each box of a pipelined stream its own: a peer that starts
	// a box and stalls (slowloris) loses the connection. Idle time between
	// boxes is not limited (default 30 s).
	BoxTimeout time.Duration
	// WriteTimeout bounds how long a write to the network may go without
	// progress; a peer that reads nothing for that long loses the
	// connection with ErrWriteTimeout (default 30 s; negative: no limit,
	// and then nothing bounds how long the reader, waiting for room for an
	// answer past MaxWriteQueue, waits for such a peer).
	WriteTimeout time.Duration
	// Heartbeat, if positive, is how long this end waits between boxes
	// without receiving a byte before it probes the peer with a call of
	// HeartbeatCommand (which no one implements: any answer, an UNHANDLED
	// error included, shows the peer alive, and so does any other byte).
	// A peer that sends nothing for HeartbeatTimeout after the probe has
	// been written, and takes none of the bytes queued after it (gone
	// without a FIN, frozen, partitioned away), loses the connection with
	// ErrHeartbeatTimeout, within Heartbeat + HeartbeatTimeout of its last
	// byte when nothing else waits to be sent. A probe queued behind a
	// backlog is awaited only once written, and none is sent while the
	// write queue is past MaxWriteQueue: a peer that takes nothing then is
	// the writer's, which WriteTimeout bounds. Probes are only sent in the
	// open state: not while a StartTLS or switch is pending, never after a
	// switch. Default 0: off, since
	// the kernel's TCP keepalive (on by default in Go) already finds
	// vanished hosts, and every probe costs a box and a timer on each idle
	// connection; a server that must also free the connections of peers
	// that are alive but stuck turns it on (ampmux serve does).
	Heartbeat time.Duration
	// HeartbeatTimeout is how long after a probe is written any byte must
	// arrive (default Heartbeat). A probe left unanswered that long while
	// other bytes came (a peer may drop one: it crossed the peer's switch
	// request) is forgotten, and the next silence probes again.
	HeartbeatTimeout time.Duration
	// TLS, if set, lets the peer secure the connection with StartTLS, this
	// end being the TLS server (certificates, ClientCAs, ClientAuth). With
	// nil, StartTLS is refused with TLS_ERROR.
	TLS *tls.Config
	// HandshakeTimeout bounds a StartTLS handshake (default 10 s).
	HandshakeTimeout time.Duration
	// OnTLS, if set, is called after each StartTLS handshake, on the
	// reader goroutine (it must not block): err is nil on success, else
	// the *TLSError that ends the connection. For metrics.
	OnTLS func(c *Conn, err error)
	// BaseContext is the parent of the context responders get (default
	// context.Background()). Its end cancels their contexts; it does not
	// close the connection, and answers still wait for room as long as
	// the connection lives.
	BaseContext context.Context
	// Logger receives protocol errors and responder failures that become
	// UNKNOWN answers (default slog.Default()).
	Logger *slog.Logger
	// OnError, if set, is called once with the error that ended the
	// connection (nil after a clean Close or a clean hang-up by the peer).
	OnError func(c *Conn, err error)
}

const (
	defaultMaxHandlers    = 1024
	defaultMaxWriteBuffer = 1 << 20
	finalFlushTimeout     = 2 * time.Second
	defaultBoxTimeout     = 30 * time.Second
	defaultWriteTimeout   = 30 * time.Second
)

func (cfg *Config) withDefaults() Config {
	c := Config{}
	if cfg != nil {
		c = *cfg
	}
	if c.BoxTimeout <= 0 {
		c.BoxTimeout = defaultBoxTimeout
	}
	if c.MaxHandlers <= 0 {
		c.MaxHandlers = defaultMaxHandlers
	}
	if c.MaxQueuedCommands <= 0 {
		c.MaxQueuedCommands = c.MaxHandlers
	}
	if c.WriteTimeout == 0 {
		c.WriteTimeout = defaultWriteTimeout
	}
	if c.MaxWriteBuffer <= 0 {
		c.MaxWriteBuffer = defaultMaxWriteBuffer
	}
	if c.MaxWriteQueue <= 0 {
		c.MaxWriteQueue = 4 * c.MaxWriteBuffer
	}
	if c.BaseContext == nil {
		c.BaseContext = context.Background()
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Heartbeat > 0 && c.HeartbeatTimeout <= 0 {
		c.HeartbeatTimeout = c.Heartbeat
	}
	if c.Trusted == nil {
		c.Trusted = verifiedPeer
	}
	return c
}
