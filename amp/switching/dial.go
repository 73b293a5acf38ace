package switching

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"log/slog"
	"net"

	"github.com/ampmux/ampmux/amp/box"
	"github.com/ampmux/ampmux/amp/conn"
)

// Step names the stage of Dial that failed.
type Step string

const (
	StepConnect  Step = "connect"
	StepStartTLS Step = "starttls"
	StepSwitch   Step = "switch"
)

// DialError says which step of Dial failed; Err is the cause (a
// *conn.TLSError for a failed handshake, an *amp.RemoteError matching
// ErrUnknownProtocol, ErrForbidden... for a refused switch).
type DialError struct {
	Step     Step
	Protocol string
	Err      error
}

func (e *DialError) Error() string {
	return fmt.Sprintf("switching: %s for %q failed: %v", e.Step, e.Protocol, e.Err)
}

func (e *DialError) Unwrap() error { return e.Err }

// Dial connects to the AMP server at addr (TCP), secures the connection
// with StartTLS, switches to protocol and returns the inner protocol's
// connection. cfg configures TLS: nil means the system roots, with the
// server name taken from addr; to skip verification set
// InsecureSkipVerify explicitly. DialInsecurePlaintext skips TLS.
func Dial(ctx context.Context, addr, protocol string, cfg *tls.Config) (net.Conn, error) {
	if cfg == nil {
		cfg = &tls.Config{}
	}
	if cfg.ServerName == "" && !cfg.InsecureSkipVerify {
		if host, _, err := net.SplitHostPort(addr); err == nil {
			cfg = cfg.Clone()
			cfg.ServerName = host
		}
	}
	return dial(ctx, addr, protocol, cfg)
}

// DialInsecurePlaintext is Dial without StartTLS: the inner protocol runs
// in the clear, and only servers that allow it (Policy.AllowPlaintext)
// accept.
func DialInsecurePlaintext(ctx context.Context, addr, protocol string) (net.Conn, error) {
	return dial(ctx, addr, protocol, nil)
}

func dial(ctx context.Context, addr, protocol string, cfg *tls.Config) (net.Conn, error) {
	var d net.Dialer
	nc, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, &DialError{Step: StepConnect, Protocol: protocol, Err: err}
	}
	inner, err := client(ctx, nc, protocol, cfg)
	if err != nil {
		nc.Close()
		return nil, err
	}
	return inner, nil
}

// Client runs the negotiation over an existing connection: StartTLS with
// cfg (skipped when cfg is nil: plaintext), then the switch. On error nc
// is closed.
func Client(ctx context.Context, nc net.Conn, protocol string, cfg *tls.Config) (net.Conn, error) {
	inner, err := client(ctx, nc, protocol, cfg)
	if err != nil {
		nc.Close()
	}
	return inner, err
}

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

func client(ctx context.Context, nc net.Conn, protocol string, cfg *tls.Config) (net.Conn, error) {
	c := conn.New(nc, &conn.Config{Logger: quiet})
	if cfg != nil {
		if err := c.StartTLS(ctx, cfg); err != nil {
			c.Close()
			return nil, &DialError{Step: StepStartTLS, Protocol: protocol, Err: err}
		}
	}
	var args box.Box
	args.SetString("protocol", protocol)
	inner, err := c.Switch(ctx, CommandProtocolSwitch, &args)
	if err != nil {
		c.Close()
		return nil, &DialError{Step: StepSwitch, Protocol: protocol, Err: ProtocolSwitch.MapError(err)}
	}
	info := Info{Protocol: protocol, RemoteAddr: nc.RemoteAddr(), LocalAddr: nc.LocalAddr()}
	if st, ok := c.ConnectionState(); ok {
		info.TLS = &st
	}
	return &Conn{Conn: inner, info: info}, nil
}
