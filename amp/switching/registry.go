package switching

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/ampmux/ampmux/amp"
	"github.com/ampmux/ampmux/amp/box"
	"github.com/ampmux/ampmux/amp/conn"
)

// Info is what was negotiated before a switch.
type Info struct {
	Protocol   string
	RemoteAddr net.Addr
	LocalAddr  net.Addr
	// TLS is the connection's TLS state, nil if it was not secured.
	TLS *tls.ConnectionState
	// State is what Policy.Prepare returned (a dialed backend, say).
	State any
}

// PeerCertificate returns the client's verified leaf certificate, or nil.
func (i Info) PeerCertificate() *x509.Certificate {
	if i.TLS == nil || len(i.TLS.VerifiedChains) == 0 {
		return nil
	}
	return i.TLS.VerifiedChains[0][0]
}

// Handler serves a switched connection; it owns c and must close it.
type Handler func(c net.Conn, info Info)

// Policy says who may switch to a protocol. The zero Policy requires TLS
// and lets every client that completed it in.
type Policy struct {
	// AllowPlaintext lets clients switch without StartTLS.
	AllowPlaintext bool
	// AllowedNames, if not empty, admits only clients whose verified
	// certificate has one of these names as common name or DNS SAN.
	AllowedNames []string
	// Authorize, if set, is asked last; an error refuses with FORBIDDEN.
	Authorize func(Info) error
	// Prepare, if set, runs before the switch is answered (to dial a
	// backend, say); an error refuses with UNAVAILABLE. What it returns
	// reaches the handler as Info.State; if the switch fails after Prepare
	// succeeded, a State that is an io.Closer is closed. Prepare may block,
	// up to PrepareTimeout: this connection reads nothing meanwhile.
	Prepare func(ctx context.Context, info Info) (state any, err error)
	// PrepareTimeout bounds Prepare (default 10 s).
	PrepareTimeout time.Duration
}

type protocol struct {
	name   string
	policy Policy
	serve  Handler
}

// Registry holds the inner protocols a server offers. It is safe for
// concurrent use; protocols can be added and removed while serving.
type Registry struct {
	mu        sync.RWMutex
	protocols map[string]*protocol
}

// NewRegistry returns an empty registry.
func NewRegistry() *Registry {
	return &Registry{protocols: make(map[string]*protocol)}
}

// Register offers protocol name, served by h under policy p, replacing any
// earlier registration of that name.
func (r *Registry) Register(name string, h Handler, p Policy) {
	if name == "" || h == nil {
		panic("switching: Register needs a name and a handler")
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.protocols[name] = &protocol{name: name, policy: p, serve: h}
}

// Unregister withdraws protocol name; connections already switched go on.
func (r *Registry) Unregister(name string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.protocols, name)
}

// Names returns the registered protocol names, sorted.
func (r *Registry) Names() []string {
	r.mu.RLock()
	defer r.mu.RUnlock()
	names := make([]string, 0, len(r.protocols))
	for n := range r.protocols {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

func (r *Registry) lookup(name string) *protocol {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.protocols[name]
}

// Install registers the ProtocolSwitch and ListProtocols responders on m.
// The connections they run on need a conn.Config.TLS for clients to pass
// TLS-requiring policies.
func (r *Registry) Install(m *amp.Mux) {
	// Inline: the reader must not look at the bytes after the request
	// until we know whether they are AMP or the inner protocol's.
	m.Add(&amp.Responder{
		Name:        CommandProtocolSwitch,
		Inline:      true,
		ErrorAnswer: ProtocolSwitch.ErrorAnswer,
		Serve:       r.serveSwitch,
	})
	amp.HandleInline(m, ListProtocols, func(ctx context.Context, _ struct{}) (ProtocolsReply, error) {
		info := infoFor(conn.FromContext(ctx), "")
		names := []string{}
		for _, n := range r.Names() {
			if p := r.lookup(n); p != nil && p.check(info) == nil {
				names = append(names, n)
			}
		}
		return ProtocolsReply{Protocols: names}, nil
	})
}

func infoFor(c *conn.Conn, name string) Info {
	info := Info{Protocol: name}
	if c == nil {
		return info
	}
	info.RemoteAddr, info.LocalAddr = c.RemoteAddr(), c.LocalAddr()
	if st, ok := c.ConnectionState(); ok {
		info.TLS = &st
	}
	return info
}

// check applies the policy, in the order a client can fix things: TLS
// first, then who it is.
func (p *protocol) check(info Info) error {
	pol := p.policy
	if info.TLS == nil && !pol.AllowPlaintext {
		return fmt.Errorf("%w: start TLS before switching to %q", ErrTLSRequired, p.name)
	}
	if len(pol.AllowedNames) > 0 {
		cert := info.PeerCertificate()
		if cert == nil {
			return fmt.Errorf("%w: %q needs a client certificate", ErrForbidden, p.name)
		}
		if !nameAllowed(cert, pol.AllowedNames) {
			return fmt.Errorf("%w: certificate %q may not use %q", ErrForbidden, cert.Subject.CommonName, p.name)
		}
	}
	if pol.Authorize != nil {
		if err := pol.Authorize(info); err != nil {
			return fmt.Errorf("%w: %v", ErrForbidden, err)
		}
	}
	return nil
}

func nameAllowed(cert *x509.Certificate, allowed []string) bool {
	if slices.Contains(allowed, cert.Subject.CommonName) {
		return true
	}
	for _, n := range cert.DNSNames {
		if slices.Contains(allowed, n) {
			return true
		}
	}
	return false
}

func (r *Registry) serveSwitch(ctx context.Context, req, _ *box.Box) error {
	var args SwitchArgs
	if err := ProtocolSwitch.DecodeArgs(req, &args, nil); err != nil {
		return &amp.RemoteError{Code: amp.CodeUnknown, Description: err.Error(), Err: err}
	}
	name := string(args.Protocol)
	p := r.lookup(name)
	if p == nil {
		return fmt.Errorf("%w: %q", ErrUnknownProtocol, name)
	}
	c := conn.FromContext(ctx)
	info := infoFor(c, name)
	if err := p.check(info); err != nil {
		return err
	}
	if p.policy.Prepare != nil {
		c.Flush() // Prepare may block: answers queued before must not wait
		timeout := p.policy.PrepareTimeout
		if timeout <= 0 {
			timeout = 10 * time.Second
		}
		pctx, cancel := context.WithTimeout(ctx, timeout)
		state, err := p.policy.Prepare(pctx, info)
		cancel()
		if err != nil {
			return fmt.Errorf("%w: %q: %v", ErrUnavailable, name, err)
		}
		info.State = state
	}
	err := c.SwitchAfterAnswer(ctx, func(nc net.Conn) {
		if nc == nil { // the switch failed after all
			if cl, ok := info.State.(io.Closer); ok {
				cl.Close()
			}
			return
		}
		p.serve(&Conn{Conn: nc, info: info}, info)
	})
	if err != nil {
		if cl, ok := info.State.(io.Closer); ok {
			cl.Close()
		}
	}
	return err
}

// Conn is a switched connection: the net.Conn of the inner protocol, with
// what was negotiated.
type Conn struct {
	net.Conn
	info Info
	// refused maps errors of an optimistic dial's connection: a refused
	// switch becomes a *DialError.
	refused func(error) error
}

func (c *Conn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if err != nil && c.refused != nil {
		err = c.refused(err)
	}
	return n, err
}

func (c *Conn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	if err != nil && c.refused != nil {
		err = c.refused(err)
	}
	return n, err
}

// Info returns what was negotiated before the switch.
func (c *Conn) Info() Info { return c.info }

// NetConn returns the connection underneath, for CloseWrite and the like.
func (c *Conn) NetConn() net.Conn { return c.Conn }

// CloseWrite half-closes the connection when the one underneath can.
func (c *Conn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return errors.ErrUnsupported
}

// InfoOf returns the negotiation details of a connection handed out by
// this package (directly or through a Listener), for example from an
// http.Server's ConnContext.
func InfoOf(c net.Conn) (Info, bool) {
	if sc, ok := c.(*Conn); ok {
		return sc.info, true
	}
	return Info{}, false
}
