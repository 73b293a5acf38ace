package mux

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync/atomic"

	"github.com/pires/go-proxyproto"
)

// The PROXY protocol (v1 and v2, as HAProxy's send-proxy and
// send-proxy-v2 send it) carries the client's address through a load
// balancer. The mux reads a header only from Config.ProxyFrom: there it
// is read before sniffing, and the address it carries becomes the
// connection's RemoteAddr and its source in the limits' table. From
// anyone else a connection that starts with a header is refused: a
// client must not choose the address it is known by. A header after an
// AMP box, inside a TLS stream or an HTTP request, is data like any other.

// ErrProxyHeader is the read error of a connection whose PROXY header is
// refused: sent by a source not in Config.ProxyFrom, sent twice, or
// malformed. The mux closes such connections.
var ErrProxyHeader = errors.New("mux: PROXY protocol header refused")

// ProxyError says why a PROXY header was refused.
type ProxyError struct {
	From   net.Addr // the socket's peer
	Reason string
	Err    error // the parser's, if any
}

func (e *ProxyError) Error() string {
	s := fmt.Sprintf("mux: PROXY protocol header from %v refused: %s", e.From, e.Reason)
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	return s
}

func (e *ProxyError) Is(target error) bool { return target == ErrProxyHeader }
func (e *ProxyError) Unwrap() error        { return e.Err }

// proxyBuffer is the bufio size for reading a header: a v1 header is at
// most 107 bytes, HAProxy's v2 without TLVs 28 (IPv4) or 52 (IPv6); bigger
// v2 headers are read past the buffer.
const proxyBuffer = 512

// proxied is what a header said: the addresses to report.
type proxied struct{ remote, local net.Addr }

// trusted reports whether a may send PROXY headers.
func trusted(from []netip.Prefix, a net.Addr) bool {
	if len(from) == 0 {
		return false
	}
	ap, err := netip.ParseAddrPort(a.String())
	if err != nil {
		return false
	}
	ip := ap.Addr().Unmap()
	for _, p := range from {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}

// readProxyHeader reads c's header, if it sends one, before its first
// byte goes to sniffing; bytes read past the header stay in c.br. A LOCAL
// header (a balancer's health check) keeps the socket's addresses.
//
// It returns a *ProxyError for a refused header; any other error is the
// connection's own (a timeout, an EOF), for this read only: the bytes read
// so far stay in c.br, taken for no header.
func (c *sniffConn) readProxyHeader() error {
	c.br = bufio.NewReaderSize(c.Conn, proxyBuffer)
	if sig, err := startsWithSignature(c.br); !sig {
		if c.br.Buffered() > 0 {
			return nil // those bytes first; the error comes again after
		}
		return err
	}
	h, err := proxyproto.Read(c.br)
	switch {
	case errors.Is(err, proxyproto.ErrNoProxyProtocol):
		return nil
	case err != nil:
		return c.refuse("malformed", err)
	}
	if h.Command.IsLocal() {
		return nil
	}
	src, dst := h.SourceAddr, h.DestinationAddr
	if _, ok := src.(*net.TCPAddr); !ok {
		// UDP or unix sources: keep the socket's, which is still true.
		return nil
	}
	c.proxy.Store(&proxied{remote: src, local: dst})
	c.t.proxy.headers.Add(1)
	key := sourceOf(src)
	victim, v := c.t.rekey(c, key)
	if victim != nil {
		victim.Conn.Close() // already uncounted
	}
	if v != admitted && c.t.warn != nil {
		c.t.warn(v, key, victim)
	}
	if v == refusedSource {
		return &ProxyError{From: c.Conn.RemoteAddr(), Reason: "its client " + src.String() + " has MaxConnsPerSource open"}
	}
	return nil
}

// startsWithSignature peeks one byte more at a time while what has come
// could begin a PROXY signature, so that a client whose short first
// message starts like one ("PING\r\n") is not kept waiting for twelve
// bytes. It reports whether a whole v1 or v2 signature is there.
func startsWithSignature(br *bufio.Reader) (bool, error) {
	for n := 1; ; n++ {
		b, err := br.Peek(n)
		if err != nil {
			return false, err
		}
		v1 := bytes.HasPrefix(proxyproto.SIGV1, b) || bytes.HasPrefix(b, proxyproto.SIGV1)
		v2 := bytes.HasPrefix(proxyproto.SIGV2, b)
		switch {
		case !v1 && !v2:
			return false, nil
		case v1 && n >= len(proxyproto.SIGV1), v2 && n == len(proxyproto.SIGV2):
			return true, nil
		}
	}
}

// refuse counts, logs and describes a refused header.
func (c *sniffConn) refuse(reason string, err error) error {
	c.t.proxy.refused.Add(1)
	e := &ProxyError{From: c.Conn.RemoteAddr(), Reason: reason, Err: err}
	if c.t.warnProxy != nil {
		c.t.warnProxy(e)
	}
	return e
}

// RemoteAddr is the client's address: the socket's, or what a trusted
// PROXY header said.
func (c *sniffConn) RemoteAddr() net.Addr {
	if p := c.proxy.Load(); p != nil {
		return p.remote
	}
	return c.Conn.RemoteAddr()
}

// LocalAddr is the address the client connected to: the socket's, or
// the balancer's, from a trusted PROXY header.
func (c *sniffConn) LocalAddr() net.Addr {
	if p := c.proxy.Load(); p != nil && p.local != nil {
		return p.local
	}
	return c.Conn.LocalAddr()
}

// matchProxyHeader matches a connection whose sniffed bytes start with a
// PROXY header: one the mux did not take as a trusted source's (so from
// an untrusted source, or a second one). Such connections are refused.
//
// It reads a byte at a time and stops at the first that differs from both
// signatures, so that a short message starting like one ("PING\r\n") goes
// on to the next matcher at once.
func matchProxyHeader(r io.Reader) bool {
	var b [12]byte
	for n := 0; n < len(b); n++ {
		if _, err := io.ReadFull(r, b[n:n+1]); err != nil {
			return false
		}
		v1 := n < len(proxyproto.SIGV1) && b[n] == proxyproto.SIGV1[n] && bytes.Equal(b[:n], proxyproto.SIGV1[:n])
		v2 := b[n] == proxyproto.SIGV2[n] && bytes.Equal(b[:n], proxyproto.SIGV2[:n])
		switch {
		case v1 && n == len(proxyproto.SIGV1)-1:
			return true
		case !v1 && !v2:
			return false
		}
	}
	return true // the whole v2 signature
}

// proxyCounters are Stats' PROXY counts, kept outside the table's lock.
type proxyCounters struct {
	headers atomic.Int64 // trusted headers that gave an address
	refused atomic.Int64 // connections closed for their header
}
