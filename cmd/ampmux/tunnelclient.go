package main

// What the client commands share. forward and connect: the flags that
// name the far end of a tunnel, the dial (StartTLS and ProtocolSwitch, or a
// plaintext switch) and how a failed dial is reported. call and bench: an
// AMP connection with optional StartTLS. All five: flag parsing with
// one-line errors.

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/ampmux/ampmux/amp"
	"github.com/ampmux/ampmux/amp/conn"
	"github.com/ampmux/ampmux/amp/switching"
)

// tunnelTarget is --server, --protocol, the TLS flags and
// --insecure-plaintext: where a tunnel goes and how it gets there.
type tunnelTarget struct {
	server      string
	protocol    string
	tls         tlsFlags
	plaintext   bool
	optimistic  bool
	dialTimeout time.Duration

	cfg *tls.Config // built by check; nil with --insecure-plaintext
}

func (t *tunnelTarget) register(fs *flag.FlagSet) {
	fs.StringVar(&t.server, "server", "", "`HOST:PORT` of the ampmux (or any AMP ProtocolSwitch) server (required)")
	fs.StringVar(&t.protocol, "protocol", "", "`name` of the inner protocol to switch to, as the server registered it (required)")
	t.tls.register(fs)
	fs.BoolVar(&t.plaintext, "insecure-plaintext", false, "skip StartTLS: the tunnel runs unencrypted and unauthenticated (only servers whose policy allows plaintext accept; not with the TLS flags)")
	fs.BoolVar(&t.optimistic, "optimistic", false, "send the first bytes right behind the switch request instead of waiting for its answer: saves a round trip and the server's backend dial per tunnel; a refused switch then ends the tunnel after it started (TLS is still complete before any byte is sent)")
	fs.DurationVar(&t.dialTimeout, "dial-timeout", 10*time.Second, "bound on connecting, StartTLS and the switch (with --optimistic: sending the switch), for each tunnel")
}

// check validates the flags once parsed and loads the TLS material, so that
// a bad file shows at start-up rather than on the first tunnel.
func (t *tunnelTarget) check() error {
	if t.server == "" {
		return usagef("--server is required")
	}
	if err := checkHostPort(t.server); err != nil {
		return err
	}
	if t.protocol == "" {
		return usagef("--protocol is required")
	}
	if t.dialTimeout <= 0 {
		return usagef("--dial-timeout must be positive")
	}
	if t.plaintext {
		if t.tls.given() {
			return usagef("--insecure-plaintext cannot be combined with --ca, --cert, --key, --server-name or --insecure-skip-verify")
		}
		return nil
	}
	cfg, err := t.tls.config(t.server)
	if err != nil {
		return err
	}
	t.cfg = cfg
	return nil
}

// dial opens one tunnel: TCP, StartTLS (unless plaintext), ProtocolSwitch.
func (t *tunnelTarget) dial(ctx context.Context) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, t.dialTimeout)
	defer cancel()
	d := switching.Dialer{TLSConfig: t.cfg, InsecurePlaintext: t.plaintext, Optimistic: t.optimistic}
	c, err := d.Dial(ctx, t.server, t.protocol)
	if err != nil {
		return nil, err
	}
	return halfClosable(c), nil
}

// halfClosable lets tunnel.Pipe reach the TLS (or TCP) connection under a
// *switching.Conn, so that a half-close is passed on as one: the embedded
// net.Conn's NetConn method is not promoted through the interface, and
// without this Pipe would close the whole connection on the client's EOF,
// losing the answer still on its way back.
func halfClosable(c net.Conn) net.Conn {
	sc, ok := c.(*switching.Conn)
	if !ok {
		return c
	}
	return &switchedConn{Conn: sc, under: sc.Conn}
}

type switchedConn struct {
	net.Conn          // the *switching.Conn, for reads, writes and Close
	under    net.Conn // what it wraps
}

// NetConn is what tunnel.Pipe follows to find CloseWrite.
func (s *switchedConn) NetConn() net.Conn { return s.under }

// checkHostPort wants HOST:PORT.
func checkHostPort(addr string) error {
	if _, port, err := net.SplitHostPort(addr); err != nil || port == "" {
		return usagef("--server %q is not HOST:PORT", addr)
	}
	return nil
}

// dialFailure says in one line which step of a tunnel's dial failed and
// why: "switch failed: FORBIDDEN: ...", "starttls failed: TLS: x509: ...",
// "connect failed: dial tcp ...: connection refused".
func dialFailure(err error) string {
	var de *switching.DialError
	if !errors.As(err, &de) {
		return err.Error()
	}
	return fmt.Sprintf("%s failed: %s", de.Step, failureReason(de.Err))
}

// failureReason puts what a user can act on first: an AMP error code, the
// TLS error, or the network error.
func failureReason(err error) string {
	var re *amp.RemoteError
	if errors.As(err, &re) {
		return remoteErrorLine(re)
	}
	var te *conn.TLSError
	if errors.As(err, &te) {
		if te.Remote {
			return "TLS: the server refused us: " + te.Err.Error()
		}
		return "TLS: " + te.Err.Error()
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return "timed out"
	}
	return err.Error()
}

// remoteErrorLine is an error answer as "CODE: description".
func remoteErrorLine(re *amp.RemoteError) string {
	if re.Description == "" {
		return re.Code
	}
	return re.Code + ": " + re.Description
}

// startAMP dials an AMP connection for call and bench, securing it with
// StartTLS when tlsCfg is not nil. Failures are ready to print.
func startAMP(ctx context.Context, server string, tlsCfg *tls.Config) (*conn.Conn, error) {
	c, err := conn.Dial(ctx, "tcp", server, &conn.Config{Logger: clientQuietLog})
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) {
			return nil, fmt.Errorf("connecting to %s: timed out", server)
		}
		return nil, err
	}
	if tlsCfg != nil {
		if err := c.StartTLS(ctx, tlsCfg); err != nil {
			c.Close()
			return nil, fmt.Errorf("StartTLS with %s failed: %s", server, failureReason(err))
		}
	}
	return c, nil
}

// clientQuietLog swallows the connection's own logging: the commands
// report failures themselves.
var clientQuietLog = slog.New(slog.NewTextHandler(io.Discard, nil))

// parseQuiet parses flags like the framework's parse, except that the
// flag package's own usage printing is muted: it prints the whole usage
// (to stdout) on every parse error, and a second time on --help. Here
// --help prints it once and an error is the one line run prints.
func parseQuiet(fs *flag.FlagSet, args []string) error {
	usage := fs.Usage
	fs.Usage = func() {}
	err := fs.Parse(args)
	fs.Usage = usage
	switch {
	case errors.Is(err, flag.ErrHelp):
		usage()
		return errHelp
	case err != nil:
		return usageError{strings.TrimSpace(err.Error())}
	}
	return nil
}

// lineWriter serialises whole lines from goroutines onto one writer.
type lineWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lineWriter) printf(format string, a ...any) {
	msg := fmt.Sprintf(format, a...)
	if len(msg) == 0 || msg[len(msg)-1] != '\n' {
		msg += "\n"
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	io.WriteString(l.w, msg)
}
