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
	// MaxBoxSize bounds one incoming box in bytes (default 16 MiB).
	MaxBoxSize int
	// MaxHandlers bounds the responders running on their own goroutine at
	// once (default 1024).
	MaxHandlers int
	// MaxQueuedCommands bounds the commands waiting for a handler once
	// MaxHandlers run; past it, commands are answered with CodeOverloaded
	// (default MaxHandlers).
	MaxQueuedCommands int
	// MaxWriteBuffer is how many bytes of outgoing boxes may wait for the
	// network before callers block (default 4 MiB; answers may use four
	// times as much before the reader blocks too).
	MaxWriteBuffer int
	// BoxTimeout bounds how long a box may take to arrive once its first
	// byte has: a peer that starts a box and stalls (slowloris) loses the
	// connection. Idle time between boxes is not limited (default 30 s).
	BoxTimeout time.Duration
	// WriteTimeout bounds how long a write to the network may go without
	// progress; a peer that reads nothing for that long loses the
	// connection (default 30 s; negative: no limit).
	WriteTimeout time.Duration
	// TLS, if set, lets the peer secure the connection with StartTLS, this
	// end being the TLS server (certificates, ClientCAs, ClientAuth). With
	// nil, StartTLS is refused with TLS_ERROR.
	TLS *tls.Config
	// HandshakeTimeout bounds a StartTLS handshake (default 10 s).
	HandshakeTimeout time.Duration
	// BaseContext is the parent of the context responders get (default
	// context.Background()). Its end cancels their contexts; it does not
	// close the connection.
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
	defaultMaxWriteBuffer = 4 << 20
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
	if c.BaseContext == nil {
		c.BaseContext = context.Background()
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c
}
