package switching

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"

	"github.com/ampmux/ampmux/amp"
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

// MinTLSVersion is the oldest TLS version this package lets an inner
// protocol run over: Dial and Client never offer less (whatever
// TLSConfig.MinVersion says), and a Registry refuses a switch over an
// older one with TLS_REQUIRED (unless the policy allows plaintext, which
// an old TLS is still better than). TLS 1.0 and 1.1 are deprecated (RFC
// 8996); Twisted and every maintained TLS stack speak 1.2.
const MinTLSVersion = tls.VersionTLS12

// secureConfig returns a copy of cfg (nil means an empty one, the system
// roots) that offers no TLS version older than MinTLSVersion. It leaves
// verification as cfg has it: on unless InsecureSkipVerify is set.
func secureConfig(cfg *tls.Config) *tls.Config {
	if cfg == nil {
		return &tls.Config{MinVersion: MinTLSVersion}
	}
	cfg = cfg.Clone()
	if cfg.MinVersion < MinTLSVersion {
		cfg.MinVersion = MinTLSVersion
	}
	return cfg
}

// Dialer holds the options of a client dial. The zero value dials TCP,
// secures the connection with StartTLS against the system roots (the
// server name taken from the address), and waits for the switch's answer.
type Dialer struct {
	// TLSConfig configures StartTLS; nil means the system roots, as for
	// an empty tls.Config. The name verified is TLSConfig.ServerName or,
	// for Dial, the host of the address dialled. A MinVersion below
	// MinTLSVersion (TLS 1.2), zero included, is raised to it; the config
	// itself is not modified. To skip verification set InsecureSkipVerify
	// explicitly; to skip TLS, InsecurePlaintext.
	TLSConfig *tls.Config

	// InsecurePlaintext skips StartTLS: the inner protocol runs in the
	// clear, and only servers that allow it (Policy.AllowPlaintext)
	// accept.
	InsecurePlaintext bool

	// Optimistic returns the connection as soon as the switch request is
	// written, without waiting for its answer: the first bytes written
	// follow the request in the same flight, which saves a round trip and
	// the server's own preparation (ampmux dials the backend before it
	// answers). A refused switch then shows on the first Read, as a
	// *DialError with Step "switch", and the connection is closed. The
	// server must accept bytes right behind the request, as this package
	// and Twisted do.
	Optimistic bool

	// NetDialer dials TCP; nil means a zero net.Dialer.
	NetDialer *net.Dialer
}

// Dial connects to the AMP server at addr (TCP), secures the connection
// with StartTLS, switches to protocol and returns the inner protocol's
// connection.
func (d *Dialer) Dial(ctx context.Context, addr, protocol string) (net.Conn, error) {
	nd := d.NetDialer
	if nd == nil {
		nd = &net.Dialer{}
	}
	nc, err := nd.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, &DialError{Step: StepConnect, Protocol: protocol, Err: err}
	}
	withName := *d
	if cfg := d.TLSConfig; !d.InsecurePlaintext && (cfg == nil || cfg.ServerName == "" && !cfg.InsecureSkipVerify) {
		// Verify the name dialed, not the address it resolved to.
		if host, _, err := net.SplitHostPort(addr); err == nil {
			withName.TLSConfig = secureConfig(cfg)
			withName.TLSConfig.ServerName = host
		}
	}
	return withName.Client(ctx, nc, protocol)
}

// Client runs the negotiation over an existing connection: StartTLS
// (unless InsecurePlaintext), then the switch. On error nc is closed.
//
// Client cannot know which name nc was dialled for (its remote address
// proves nothing), so StartTLS needs TLSConfig.ServerName (or
// InsecureSkipVerify): without one, Client fails before sending anything
// with a *DialError of Step StepStartTLS wrapping conn.ErrNoServerName.
func (d *Dialer) Client(ctx context.Context, nc net.Conn, protocol string) (net.Conn, error) {
	var cfg *tls.Config
	if !d.InsecurePlaintext {
		cfg = secureConfig(d.TLSConfig)
	}
	inner, err := client(ctx, nc, protocol, cfg, d.Optimistic)
	if err != nil {
		nc.Close()
	}
	return inner, err
}

// Dial is Dialer.Dial with cfg as the TLS configuration.
func Dial(ctx context.Context, addr, protocol string, cfg *tls.Config) (net.Conn, error) {
	d := Dialer{TLSConfig: cfg}
	return d.Dial(ctx, addr, protocol)
}

// DialInsecurePlaintext is Dial without StartTLS (Dialer.InsecurePlaintext).
func DialInsecurePlaintext(ctx context.Context, addr, protocol string) (net.Conn, error) {
	d := Dialer{InsecurePlaintext: true}
	return d.Dial(ctx, addr, protocol)
}

// Client is Dialer.Client with cfg as the TLS configuration. As for Dial,
// nil cfg means the system roots, never plaintext; either way cfg must
// name the server (ServerName), since nc's address cannot.
func Client(ctx context.Context, nc net.Conn, protocol string, cfg *tls.Config) (net.Conn, error) {
	d := Dialer{TLSConfig: cfg}
	return d.Client(ctx, nc, protocol)
}

// ClientInsecurePlaintext is Client without StartTLS
// (Dialer.InsecurePlaintext): the inner protocol runs in the clear.
func ClientInsecurePlaintext(ctx context.Context, nc net.Conn, protocol string) (net.Conn, error) {
	d := Dialer{InsecurePlaintext: true}
	return d.Client(ctx, nc, protocol)
}

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

func client(ctx context.Context, nc net.Conn, protocol string, cfg *tls.Config, optimistic bool) (net.Conn, error) {
	c := conn.New(nc, &conn.Config{Logger: quiet})
	if cfg != nil {
		// c was made by conn.New, so StartTLS refuses a cfg with no
		// ServerName (conn.ErrNoServerName) before sending anything.
		if err := c.StartTLS(ctx, cfg); err != nil {
			c.Close()
			return nil, &DialError{Step: StepStartTLS, Protocol: protocol, Err: err}
		}
	}
	var args box.Box
	args.SetString("protocol", protocol)
	var inner net.Conn
	var err error
	if optimistic {
		inner, err = c.SwitchEarly(ctx, CommandProtocolSwitch, &args)
	} else {
		inner, err = c.Switch(ctx, CommandProtocolSwitch, &args)
	}
	if err != nil {
		c.Close()
		return nil, &DialError{Step: StepSwitch, Protocol: protocol, Err: ProtocolSwitch.MapError(err)}
	}
	info := Info{Protocol: protocol, RemoteAddr: nc.RemoteAddr(), LocalAddr: nc.LocalAddr()}
	if st, ok := c.ConnectionState(); ok {
		info.TLS = &st
	}
	sc := &Conn{Conn: inner, info: info}
	if optimistic {
		// Read and Write may both meet the refusal at once: MapError sets
		// the shared RemoteError's Err, so one at a time.
		var mu sync.Mutex
		sc.refused = func(err error) error {
			var re *amp.RemoteError
			if errors.As(err, &re) {
				mu.Lock()
				defer mu.Unlock()
				return &DialError{Step: StepSwitch, Protocol: protocol, Err: ProtocolSwitch.MapError(err)}
			}
			return err
		}
	}
	return sc, nil
}
