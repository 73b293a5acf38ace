package main

// The processes this tool starts from its own binary (itself, or the test
// binary), chosen by the environment variable roleEnv: the backend, and
// the two halves of the plain TLS proxy that forward → serve is compared
// with. Each listens on 127.0.0.1:0, prints "listening on ADDR", serves
// until killed, and exits when its standard input ends (its parent died).

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"time"
)

const roleEnv = "AMPMUX_TUNNEL_ROLE"

// Backend operations: the first byte a client sends.
const (
	opEcho     = 'E' // echo every byte (this one too) until EOF
	opUpload   = 'U' // then an 8-byte length N and N bytes; answered by a report
	opDownload = 'D' // then an 8-byte length N; answered by N bytes, then EOF
)

// The upload report: a status byte and the count the sink received.
const (
	reportOK      = 'K'
	reportShort   = 'S' // EOF before N bytes
	reportCorrupt = 'X' // a byte differed from the pattern
	reportLen     = 9
)

// Bulk data is the pattern byte(i % patternPeriod), checked on arrival (a
// memcmp against a precomputed slice: cheap next to the transfer).
const (
	patternPeriod = 251
	ioSize        = 256 << 10
)

var pattern = func() []byte {
	p := make([]byte, patternPeriod+ioSize)
	for i := range p {
		p[i] = byte(i % patternPeriod)
	}
	return p
}()

// patternAt is the n bytes of the pattern at stream offset off.
func patternAt(off int64, n int) []byte {
	o := int(off % patternPeriod)
	return pattern[o : o+n]
}

// writePattern writes n pattern bytes to w.
func writePattern(w io.Writer, n int64) error {
	var sent int64
	for sent < n {
		k := int(min(int64(ioSize), n-sent))
		m, err := w.Write(patternAt(sent, k))
		sent += int64(m)
		if err != nil {
			return fmt.Errorf("after %d of %d bytes: %w", sent, n, err)
		}
	}
	return nil
}

// readPattern reads from r until EOF or limit bytes (limit < 0: until
// EOF), checking every byte against the pattern. It returns the count and
// whether all bytes matched; err is a read error other than EOF.
func readPattern(r io.Reader, limit int64) (n int64, ok bool, err error) {
	buf := make([]byte, ioSize)
	ok = true
	for limit < 0 || n < limit {
		p := buf
		if limit >= 0 {
			p = buf[:min(int64(len(buf)), limit-n)]
		}
		k, rerr := r.Read(p)
		if k > 0 {
			if ok && !bytes.Equal(p[:k], patternAt(n, k)) {
				ok = false
			}
			n += int64(k)
		}
		if rerr == io.EOF {
			return n, ok, nil
		}
		if rerr != nil {
			return n, ok, rerr
		}
	}
	return n, ok, nil
}

// roleMain runs a role and returns the exit status.
func roleMain(role string, args []string) int {
	go func() { // our parent holds the other end: exit with it
		io.Copy(io.Discard, os.Stdin)
		os.Exit(0)
	}()
	var err error
	switch role {
	case "backend":
		err = runBackendRole(args)
	case "tlsserver":
		err = runTLSServerRole(args)
	case "tlsclient":
		err = runTLSClientRole(args)
	default:
		err = fmt.Errorf("unknown role %q", role)
	}
	fmt.Fprintf(os.Stderr, "tunnel %s: %v\n", role, err)
	return 1
}

func listenAndAnnounce(addr string) (net.Listener, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	fmt.Printf("listening on %s\n", ln.Addr())
	return ln, nil
}

func runBackendRole(args []string) error {
	fs := flag.NewFlagSet("backend", flag.ContinueOnError)
	listen := fs.String("listen", "127.0.0.1:0", "address")
	if err := fs.Parse(args); err != nil {
		return err
	}
	ln, err := listenAndAnnounce(*listen)
	if err != nil {
		return err
	}
	return serveBackend(ln)
}

// serveBackend is the backend: sink, source and echo on one port, told
// apart by the first byte (so that one route, one sslh and one proxy pair
// serve every measurement).
func serveBackend(ln net.Listener) error {
	for {
		c, err := ln.Accept()
		if err != nil {
			return err
		}
		go handleBackend(c)
	}
}

func handleBackend(c net.Conn) {
	defer c.Close()
	var op [1]byte
	if _, err := io.ReadFull(c, op[:]); err != nil {
		return
	}
	switch op[0] {
	case opEcho: // the first byte included
		if _, err := c.Write(op[:]); err != nil {
			return
		}
		buf := make([]byte, 4096)
		for {
			n, err := c.Read(buf)
			if n > 0 {
				if _, werr := c.Write(buf[:n]); werr != nil {
					return
				}
			}
			if err != nil {
				return
			}
		}
	case opUpload:
		var hdr [8]byte
		if _, err := io.ReadFull(c, hdr[:]); err != nil {
			return
		}
		want := int64(binary.BigEndian.Uint64(hdr[:]))
		got, ok, _ := readPattern(c, want)
		var rep [reportLen]byte
		switch {
		case got < want:
			rep[0] = reportShort
		case !ok:
			rep[0] = reportCorrupt
		default:
			rep[0] = reportOK
		}
		binary.BigEndian.PutUint64(rep[1:], uint64(got))
		c.Write(rep[:])
	case opDownload:
		var hdr [8]byte
		if _, err := io.ReadFull(c, hdr[:]); err != nil {
			return
		}
		if writePattern(c, int64(binary.BigEndian.Uint64(hdr[:]))) != nil {
			return
		}
		// End our direction, then let the client close: a close with
		// unread input would reset the connection.
		if cw, ok := c.(interface{ CloseWrite() error }); ok {
			cw.CloseWrite()
		}
		c.SetReadDeadline(time.Now().Add(30 * time.Second))
		io.Copy(io.Discard, c)
	}
}

// The plain TLS proxy: tlsclient accepts plaintext and dials tlsserver
// over TLS with a client certificate; tlsserver terminates TLS, insists
// on a verified client certificate, dials the backend and io.Copy's both
// ways with half-close. The shape of forward → serve, minus AMP.

func runTLSServerRole(args []string) error {
	fs := flag.NewFlagSet("tlsserver", flag.ContinueOnError)
	listen := fs.String("listen", "127.0.0.1:0", "address")
	backend := fs.String("backend", "", "backend address")
	certFile := fs.String("cert", "", "server certificate")
	keyFile := fs.String("key", "", "server key")
	caFile := fs.String("client-ca", "", "CA of client certificates")
	if err := fs.Parse(args); err != nil {
		return err
	}
	pair, err := tls.LoadX509KeyPair(*certFile, *keyFile)
	if err != nil {
		return err
	}
	pool, err := loadPool(*caFile)
	if err != nil {
		return err
	}
	// As ampmux serve configures it.
	cfg := &tls.Config{Certificates: []tls.Certificate{pair}, MinVersion: tls.VersionTLS12,
		ClientCAs: pool, ClientAuth: tls.VerifyClientCertIfGiven}
	ln, err := listenAndAnnounce(*listen)
	if err != nil {
		return err
	}
	for {
		c, err := ln.Accept()
		if err != nil {
			return err
		}
		go func() {
			tc := tls.Server(c, cfg)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			err := tc.HandshakeContext(ctx)
			cancel()
			if err != nil {
				c.Close()
				return
			}
			if len(tc.ConnectionState().VerifiedChains) == 0 {
				fmt.Fprintln(os.Stderr, "tlsserver: client without a certificate")
				c.Close()
				return
			}
			bc, err := net.DialTimeout("tcp", *backend, 10*time.Second)
			if err != nil {
				fmt.Fprintln(os.Stderr, "tlsserver:", err)
				tc.Close()
				return
			}
			proxy(tc, bc)
		}()
	}
}

func runTLSClientRole(args []string) error {
	fs := flag.NewFlagSet("tlsclient", flag.ContinueOnError)
	listen := fs.String("listen", "127.0.0.1:0", "address")
	server := fs.String("server", "", "tlsserver address")
	caFile := fs.String("ca", "", "CA of the server certificate")
	certFile := fs.String("cert", "", "client certificate")
	keyFile := fs.String("key", "", "client key")
	if err := fs.Parse(args); err != nil {
		return err
	}
	cfg, err := clientTLSConfig(*caFile, *certFile, *keyFile, *server)
	if err != nil {
		return err
	}
	ln, err := listenAndAnnounce(*listen)
	if err != nil {
		return err
	}
	d := &tls.Dialer{NetDialer: &net.Dialer{Timeout: 10 * time.Second}, Config: cfg}
	for {
		c, err := ln.Accept()
		if err != nil {
			return err
		}
		go func() {
			tc, err := d.Dial("tcp", *server)
			if err != nil {
				fmt.Fprintln(os.Stderr, "tlsclient:", err)
				c.Close()
				return
			}
			proxy(c, tc)
		}()
	}
}

// proxy copies both ways with io.Copy; an EOF is passed on as a
// half-close (CloseWrite: a TCP FIN, or a TLS close_notify).
func proxy(a, b net.Conn) {
	var wg sync.WaitGroup
	half := func(dst, src net.Conn) {
		defer wg.Done()
		if _, err := io.Copy(dst, src); err != nil && !errors.Is(err, net.ErrClosed) {
			a.Close()
			b.Close()
			return
		}
		if cw, ok := dst.(interface{ CloseWrite() error }); !ok || cw.CloseWrite() != nil {
			dst.Close()
		}
	}
	wg.Add(2)
	go half(b, a)
	go half(a, b)
	wg.Wait()
	a.Close()
	b.Close()
}

func loadPool(file string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("%s holds no certificate", file)
	}
	return pool, nil
}

// clientTLSConfig is what ampmux forward builds from --ca, --cert and
// --key for --server addr.
func clientTLSConfig(caFile, certFile, keyFile, addr string) (*tls.Config, error) {
	pool, err := loadPool(caFile)
	if err != nil {
		return nil, err
	}
	pair, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, err
	}
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	return &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{pair}, ServerName: host}, nil
}
