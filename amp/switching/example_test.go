package switching_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"math/big"
	"net"
	"time"

	"github.com/ampmux/ampmux/amp"
	"github.com/ampmux/ampmux/amp/conn"
	"github.com/ampmux/ampmux/amp/switching"
)

// An AMP server offering one inner protocol, an echo, behind StartTLS;
// the client dials it, switches, and talks echo over the same connection.
func Example() {
	cert, roots := selfSigned("127.0.0.1")

	reg := switching.NewRegistry()
	reg.Register("echo", func(c net.Conn, _ switching.Info) {
		defer c.Close()
		io.Copy(c, c)
	}, switching.Policy{}) // TLS required, anyone may use it
	m := amp.NewMux()
	reg.Install(m)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	srv := &conn.Server{Config: conn.Config{Handler: m,
		TLS: &tls.Config{Certificates: []tls.Certificate{cert}}}}
	go srv.Serve(l)
	defer srv.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := switching.Dial(ctx, l.Addr().String(), "echo", &tls.Config{RootCAs: roots})
	if err != nil {
		panic(err)
	}
	defer c.Close()
	fmt.Fprint(c, "hello, echo")
	got := make([]byte, len("hello, echo"))
	if _, err := io.ReadFull(c, got); err != nil {
		panic(err)
	}
	fmt.Println(string(got))
	// Output: hello, echo
}

// selfSigned makes a certificate for host that is its own root: enough
// for an example (ampmux cert makes a real CA).
func selfSigned(host string) (tls.Certificate, *x509.CertPool) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		panic(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		IPAddresses:  []net.IP{net.ParseIP(host)},
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		panic(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		panic(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(leaf)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, roots
}
