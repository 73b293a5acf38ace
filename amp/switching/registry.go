package switching

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/asn1"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"sort"
	"strings"
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
	// Relayed, on a connection a RemoteListener accepted, is what the
	// gateway says of the client it tunnels; nil elsewhere.
	Relayed *Relayed
}

// Relayed is what a gateway says of the client whose connection it
// tunnels to a publisher: the address the client connected from, and
// its certificate's PeerName ("" without one). An agent can trust it as
// far as it trusts the gateway whose certificate it verified.
type Relayed struct {
	Addr string
	Name string
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
	// certificate carries one of these names: among its DNS SANs if it has
	// any (its common name is then ignored), else as its one common name.
	// A subject with several common names is refused. Names compare
	// exactly. See PeerName.
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
	// exposure, for a route made by Expose, goes with it.
	exposure *Exposure
}

// Registry holds the inner protocols a server offers. It is safe for
// concurrent use; protocols can be added and removed while serving.
type Registry struct {
	mu        sync.RWMutex
	protocols map[string]*protocol
	exposures map[string]*Exposure
	// standbys are the standby connections parked or being switched,
	// for any route, with the publisher that holds each (*conn.Conn →
	// *publisher): an agent announcing one twice, for one route or two,
	// or again to a publisher that replaced the one holding it, must not
	// have it handed to two clients.
	standbys sync.Map
}

// NewRegistry returns an empty registry.
func NewRegistry() *Registry {
	return &Registry{protocols: make(map[string]*protocol), exposures: make(map[string]*Exposure)}
}

// Register offers protocol name, served by h under policy p, replacing any
// earlier registration of that name.
func (r *Registry) Register(name string, h Handler, p Policy) {
	if name == "" || h == nil {
		panic("switching: Register needs a name and a handler")
	}
	r.register(&protocol{name: name, policy: p, serve: h})
}

func (r *Registry) register(p *protocol) {
	r.mu.Lock()
	old := r.protocols[p.name]
	r.protocols[p.name] = p
	r.mu.Unlock()
	if old != nil && old.exposure != nil && old.exposure != p.exposure {
		old.exposure.Close()
	}
}

// Unregister withdraws protocol name; connections already switched go on.
// A route made by Expose takes its Exposure with it.
func (r *Registry) Unregister(name string) {
	r.mu.Lock()
	old := r.protocols[name]
	delete(r.protocols, name)
	r.mu.Unlock()
	if old != nil && old.exposure != nil {
		old.exposure.Close()
	}
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

// Install registers the ProtocolSwitch and ListProtocols responders on m,
// and those of publishing (_ampmux_publish, _ampmux_standby; see Expose).
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
	amp.HandleInline(m, publishCmd, r.servePublish)
	amp.HandleInline(m, standbyCmd, r.serveStandby)
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
	if info.TLS != nil && info.TLS.Version < MinTLSVersion && !pol.AllowPlaintext {
		return fmt.Errorf("%w: %q needs TLS 1.2 or later, the connection has %s",
			ErrTLSRequired, p.name, tls.VersionName(info.TLS.Version))
	}
	if len(pol.AllowedNames) > 0 {
		cert := info.PeerCertificate()
		if cert == nil {
			return fmt.Errorf("%w: %q needs a client certificate", ErrForbidden, p.name)
		}
		if err := nameAllowed(cert, pol.AllowedNames); err != nil {
			return &forbiddenName{protocol: p.name, reason: err}
		}
	}
	if pol.Authorize != nil {
		if err := pol.Authorize(info); err != nil {
			return fmt.Errorf("%w: %v", ErrForbidden, err)
		}
	}
	return nil
}

// The reasons PeerName finds no name to key on.
var (
	// ErrNoPeerName: no certificate, or one with neither a DNS SAN nor a
	// common name.
	ErrNoPeerName = errors.New("switching: certificate has no name (neither a DNS SAN nor a common name)")
	// ErrSeveralCommonNames: the subject holds more than one common name
	// attribute, so that which one "the" name is depends on who reads it
	// (Go's Subject.CommonName keeps the last, OpenSSL shows the first).
	ErrSeveralCommonNames = errors.New("switching: certificate subject has several common names")
)

// oidCommonName is the X.520 commonName attribute, 2.5.4.3.
var oidCommonName = asn1.ObjectIdentifier{2, 5, 4, 3}

// PeerName returns the name that identifies cert's holder, the one
// Policy.AllowedNames is matched against and the one to log or to key
// per-client limits on: the first DNS subject alternative name if the
// certificate has any (the common name is then ignored, as
// x509.Certificate.VerifyHostname ignores it), else its common name.
//
// It fails, with an error matching ErrSeveralCommonNames, when the subject
// holds more than one common name attribute (CN=bob,CN=alice), whether or
// not there are SANs: such a subject means different things to different
// readers, and a CA that issues one is not to be trusted with names. It
// fails with ErrNoPeerName for a nil certificate or one with neither a DNS
// SAN nor a non-empty common name. IP, URI and e-mail SANs are not names
// here.
//
// cert should be a verified one (Info.PeerCertificate): PeerName checks
// nothing about who signed it.
func PeerName(cert *x509.Certificate) (string, error) {
	if cert == nil {
		return "", fmt.Errorf("%w: no certificate", ErrNoPeerName)
	}
	cn, err := singleCommonName(cert)
	if err != nil {
		return "", err
	}
	if len(cert.DNSNames) > 0 {
		return cert.DNSNames[0], nil
	}
	if cn == "" {
		return "", ErrNoPeerName
	}
	return cn, nil
}

// singleCommonName returns the subject's common name, "" if it has none,
// or an error if it has several.
func singleCommonName(cert *x509.Certificate) (string, error) {
	var cns []string
	for _, atv := range cert.Subject.Names {
		if !atv.Type.Equal(oidCommonName) {
			continue
		}
		v, _ := atv.Value.(string)
		cns = append(cns, v)
	}
	if len(cns) > 1 {
		return "", fmt.Errorf("%w: %q", ErrSeveralCommonNames, cns)
	}
	if len(cns) == 1 {
		return cns[0], nil
	}
	// A certificate built in memory rather than parsed has no Names.
	return cert.Subject.CommonName, nil
}

// nameAllowed matches cert against allowed: on its DNS SANs only if it has
// any, else on its single common name; names compare exactly (no case
// folding, no wildcard expansion: a SAN "*.example.com" matches only the
// allowed name "*.example.com"). It returns why not, or nil.
func nameAllowed(cert *x509.Certificate, allowed []string) error {
	cn, err := singleCommonName(cert)
	if err != nil {
		return err
	}
	if len(cert.DNSNames) > 0 {
		for _, n := range cert.DNSNames {
			if slices.Contains(allowed, n) {
				return nil
			}
		}
		return fmt.Errorf("the certificate's DNS names %q are not allowed (with DNS names, its common name does not count)", cert.DNSNames)
	}
	if cn == "" {
		return ErrNoPeerName
	}
	if slices.Contains(allowed, cn) {
		return nil
	}
	return fmt.Errorf("the certificate's common name %q is not allowed", cn)
}

// forbiddenName is a refusal by AllowedNames: it matches ErrForbidden and
// the reason (ErrSeveralCommonNames, say), with the package's prefix once.
type forbiddenName struct {
	protocol string
	reason   error
}

func (e *forbiddenName) Error() string {
	return fmt.Sprintf("%v: %q: %s", ErrForbidden, e.protocol, strings.TrimPrefix(e.reason.Error(), "switching: "))
}

func (e *forbiddenName) Unwrap() []error { return []error{ErrForbidden, e.reason} }

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
		if errors.Is(err, ErrUnavailable) {
			return err
		}
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

// CloseWrite half-closes the connection when the one underneath can: with
// its CloseWrite or, where it has none or that says errors.ErrUnsupported,
// with that of the connection under its NetConn method, and so on down
// (the connection a switch hands over may wrap the TLS or TCP one, to
// replay bytes read past the switch request). It returns
// errors.ErrUnsupported if none can.
func (c *Conn) CloseWrite() error {
	nc := c.Conn
	for range 8 { // wrappers do not nest deeper than that
		if cw, ok := nc.(interface{ CloseWrite() error }); ok {
			if err := cw.CloseWrite(); !errors.Is(err, errors.ErrUnsupported) {
				return err
			}
		}
		u, ok := nc.(interface{ NetConn() net.Conn })
		if !ok {
			break
		}
		if nc = u.NetConn(); nc == nil {
			break
		}
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
