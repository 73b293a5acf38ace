package conn

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/ampmux/ampmux/amp"
	"github.com/ampmux/ampmux/amp/box"
)

// StartTLSCommand is the wire name of Twisted's amp.StartTLS. Its request
// and answer carry no arguments on the wire.
const StartTLSCommand = "StartTLS"

// Error codes of StartTLS refusals.
const (
	// CodeTLSError answers StartTLS when this end has no TLS configured
	// (as Twisted answers when TLS is not available) or TLS is running.
	CodeTLSError = "TLS_ERROR"
)

var (
	// ErrTLSActive: StartTLS on a connection already secured (or being
	// secured). Twisted answers a second StartTLS as if it worked; we
	// refuse it with a TLS_ERROR answer.
	ErrTLSActive = errors.New("conn: TLS already started on this connection")
	// ErrNoTLSConfig: the peer asked for StartTLS and Config.TLS is nil.
	ErrNoTLSConfig = errors.New("conn: TLS not available")
	// ErrNoServerName: StartTLS on a Conn not made by Dial, with no
	// tls.Config.ServerName to verify the peer against.
	ErrNoServerName = errors.New("conn: StartTLS needs tls.Config.ServerName (the connection was not made by Dial)")
	// ErrTLSPending: a StartTLS or protocol switch was asked for while a
	// StartTLS request (or answer) awaits its handshake; one at a time.
	ErrTLSPending = errors.New("conn: StartTLS pending")
)

// TLSError reports a failed TLS handshake; the connection is closed. Err
// is what crypto/tls said: errors.As finds x509.UnknownAuthorityError,
// x509.HostnameError, tls.AlertError (the peer refused us) and the like.
type TLSError struct {
	Server bool // this end was the TLS server
	// Remote: the peer refused us with a TLS alert (with TLS 1.3 a client
	// learns that its certificate was refused only on its first read).
	Remote bool
	Err    error
}

func (e *TLSError) Error() string {
	side := "client"
	if e.Server {
		side = "server"
	}
	return fmt.Sprintf("conn: TLS handshake failed (%s side): %v", side, e.Err)
}

func (e *TLSError) Unwrap() error { return e.Err }

const defaultHandshakeTimeout = 10 * time.Second

// ConnectionState returns the TLS state once StartTLS has completed:
// version, cipher suite, and the peer's verified certificate chains (for
// authorization decisions).
func (c *Conn) ConnectionState() (tls.ConnectionState, bool) {
	c.tlsMu.Lock()
	defer c.tlsMu.Unlock()
	if c.tlsState == nil {
		return tls.ConnectionState{}, false
	}
	return *c.tlsState, true
}

// PeerCertificate returns the peer's leaf certificate after StartTLS, or
// nil (no TLS, or a client that sent none).
func (c *Conn) PeerCertificate() *x509.Certificate {
	st, ok := c.ConnectionState()
	if !ok || len(st.PeerCertificates) == 0 {
		return nil
	}
	return st.PeerCertificates[0]
}

// StartTLS asks the peer to start TLS and, once it agrees, runs the
// handshake as the TLS client. Boxes sent meanwhile wait and go out
// encrypted. cfg says how to verify the server; nil means the system roots
// and the name that was dialled. With no ServerName, a Conn made by Dial
// verifies the host it dialled; any other Conn returns ErrNoServerName
// (never the peer's address: an IP taken from the socket proves nothing).
// Skipping verification takes cfg.InsecureSkipVerify, explicitly.
//
// A refusal returns the *amp.RemoteError and the connection goes on in
// the clear; a failed handshake returns a *TLSError and closes it. If ctx
// ends before the answer, the connection is closed (its state is unknown).
func (c *Conn) StartTLS(ctx context.Context, cfg *tls.Config) error {
	cfg, err := clientTLSConfig(cfg, c.dialHost)
	if err != nil {
		return err
	}
	c.tlsMu.Lock()
	if c.tlsState != nil || c.tlsBusy {
		c.tlsMu.Unlock()
		return ErrTLSActive
	}
	c.tlsBusy = true
	c.tlsMu.Unlock()
	defer func() {
		c.tlsMu.Lock()
		c.tlsBusy = false
		c.tlsMu.Unlock()
	}()
	cl := &call{done: make(chan struct{}, 1)}
	cl.after = func(isErr bool) error {
		if isErr {
			c.resumeWriter(false, nil)
			return nil
		}
		return c.upgradeTLS(cl.paused, cfg, false)
	}
	return c.specialCall(ctx, StartTLSCommand, &box.Box{}, cl, false)
}

// clientTLSConfig fills in the name to verify: the one in cfg, or the host
// that was dialled.
func clientTLSConfig(cfg *tls.Config, dialHost string) (*tls.Config, error) {
	if cfg == nil {
		cfg = &tls.Config{}
	}
	if cfg.ServerName != "" || cfg.InsecureSkipVerify {
		return cfg, nil
	}
	if dialHost == "" {
		return nil, ErrNoServerName
	}
	cfg = cfg.Clone()
	cfg.ServerName = dialHost
	return cfg, nil
}

// specialCall sends a StartTLS or switch request: the writer pauses after
// it, and cl.after runs on the reader goroutine when the answer comes.
func (c *Conn) specialCall(ctx context.Context, command string, args *box.Box, cl *call, lock bool) error {
	if err := c.sendSpecial(ctx, command, args, cl, lock); err != nil {
		return err
	}
	select {
	case <-cl.done:
		return cl.err
	case <-ctx.Done():
	}
	select {
	case <-cl.done: // the answer came with the end of ctx: it counts
		return cl.err
	default:
	}
	// The peer may already be switching: the only safe way out.
	c.fail(fmt.Errorf("conn: %s abandoned: %w", command, ctx.Err()))
	<-cl.done
	return cl.err
}

// sendSpecial queues the request of specialCall and wakes the writer.
func (c *Conn) sendSpecial(ctx context.Context, command string, args *box.Box, cl *call, lock bool) error {
	cl.paused = make(chan struct{})
	tag, _, err := c.register(cl)
	if err != nil {
		return err
	}

	err = c.encodeCall(cl, command, tag, args)
	if err == nil {
		q := c.forCall(c.onReader(ctx))
		q.paused, q.lock = cl.paused, lock
		err = c.enqueue(ctx, nil, cl.enc, q)
	}
	if err != nil {
		if !c.unregister(tag, cl) {
			<-cl.done
		}
		return err
	}
	c.signalWriter()
	return nil
}

// waitPaused waits, on the reader goroutine, for the writer to have sent
// everything up to the mark.
func (c *Conn) waitPaused(paused chan struct{}) error {
	select {
	case <-paused:
		return nil
	case <-c.writerDone:
		if c.err != nil {
			return &LostError{Cause: c.err}
		}
		return &LostError{Cause: net.ErrClosed}
	}
}

// upgradeTLS runs on the reader goroutine once the StartTLS answer has
// been sent (server) or received (client): it runs the handshake over the
// raw connection, bytes the decoder read ahead first, then makes reader
// and writer use TLS.
func (c *Conn) upgradeTLS(paused chan struct{}, cfg *tls.Config, server bool) error {
	if err := c.waitPaused(paused); err != nil {
		return err
	}
	// The handshake has its own timeout: no box or heartbeat deadline
	// may cut it short.
	c.nc.SetReadDeadline(time.Time{})
	c.rd.armed, c.rd.hb = false, heartbeat{seq: c.rd.hb.seq} // probe tags stay unique
	raw := newPrefixConn(c.nc, c.rd.dec.Buffered())
	var tc *tls.Conn
	if server {
		tc = tls.Server(raw, cfg)
	} else {
		tc = tls.Client(raw, cfg)
	}
	timeout := c.cfg.HandshakeTimeout
	if timeout <= 0 {
		timeout = defaultHandshakeTimeout
	}
	ctx, cancel := context.WithTimeout(c.ctx, timeout)
	err := tc.HandshakeContext(ctx)
	cancel()
	if err != nil {
		terr := &TLSError{Server: server, Remote: isRemoteAlert(err), Err: err}
		if c.cfg.OnTLS != nil {
			c.cfg.OnTLS(c, terr)
		}
		c.fail(terr)
		return terr
	}
	c.nc.SetReadDeadline(time.Time{})
	st := tc.ConnectionState()
	c.tlsMu.Lock()
	c.tlsState = &st
	c.tlsServer = server
	c.tlsMu.Unlock()
	c.rd.dec.Reset(&kickReader{c: c, r: tc})
	c.resumeWriter(false, tc)
	if c.cfg.OnTLS != nil {
		c.cfg.OnTLS(c, nil)
	}
	return nil
}

// serveStartTLS answers a StartTLS command (on the reader goroutine) and
// starts the server side of TLS.
func (c *Conn) serveStartTLS(ask []byte, hasAsk bool) error {
	if !hasAsk {
		return &ProtocolError{Err: errors.New("conn: StartTLS without _ask")}
	}
	c.tlsMu.Lock()
	active := c.tlsState != nil
	c.tlsMu.Unlock()
	switch {
	case c.cfg.TLS == nil:
		return c.answerError(ask, CodeTLSError, ErrNoTLSConfig.Error(), true)
	case active:
		return c.answerError(ask, CodeTLSError, ErrTLSActive.Error(), true)
	}
	b := &c.rd.inlineResp
	b.Reset()
	b.Set(amp.KeyAnswer, ask)
	paused := make(chan struct{})
	// Our own StartTLS or switch request pending makes enqueue refuse:
	// the requests crossed.
	q := c.forAnswer(true)
	q.paused = paused
	if err := c.enqueue(context.Background(), b, nil, q); err != nil {
		c.queueFull(err)
		return crossed(err)
	}
	c.signalWriter()
	return c.upgradeTLS(paused, c.cfg.TLS, true)
}

// isRemoteAlert reports an alert the TLS peer sent (crypto/tls wraps those
// in a net.OpError whose Op is "remote error").
func isRemoteAlert(err error) bool {
	var oe *net.OpError
	return errors.As(err, &oe) && oe.Op == "remote error"
}

// tlsReadError turns an alert read after the handshake into a TLSError.
func (c *Conn) tlsReadError(err error) error {
	c.tlsMu.Lock()
	secured, server := c.tlsState != nil, c.tlsServer
	c.tlsMu.Unlock()
	if secured && isRemoteAlert(err) {
		return &TLSError{Server: server, Remote: true, Err: err}
	}
	return err
}
