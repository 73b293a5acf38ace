package switching_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"time"

	"github.com/ampmux/ampmux/amp"
	"github.com/ampmux/ampmux/amp/conn"
	"github.com/ampmux/ampmux/amp/switching"
	"github.com/ampmux/ampmux/internal/pki"
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

// exampleGateway serves, on loopback, an AMP gateway exposing route "web"
// to the client certificate "alice", published by the agent "agent"; it
// returns its address, the TLS configurations of alice and of the agent,
// and a function that stops it. (ampmux cert makes such certificates.)
func exampleGateway() (addr string, alice, agent *tls.Config, stop func()) {
	b, err := pki.NewBundle()
	if err != nil {
		panic(err)
	}
	tlsFor := func(name string) *tls.Config {
		c, err := b.CA.Client(name)
		if err != nil {
			panic(err)
		}
		return &tls.Config{RootCAs: b.CA.Pool(), Certificates: []tls.Certificate{c.TLS()}}
	}

	reg := switching.NewRegistry()
	// Clients of "web": alice only; its publisher: the agent.
	reg.Expose("web", []string{"agent"}, switching.Policy{AllowedNames: []string{"alice"}})
	m := amp.NewMux()
	reg.Install(m)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	srv := &conn.Server{Config: conn.Config{Handler: m, Heartbeat: 30 * time.Second, TLS: &tls.Config{
		Certificates: []tls.Certificate{b.Server.TLS()},
		ClientCAs:    b.CA.Pool(),
		ClientAuth:   tls.VerifyClientCertIfGiven,
	}}}
	go srv.Serve(l)
	return l.Addr().String(), tlsFor("alice"), tlsFor("agent"), func() { srv.Close() }
}

// A gateway exposes a route that an agent behind NAT publishes: a client
// reaches the agent's service through the gateway's one port. Before the
// agent connects, the route is UNAVAILABLE.
func ExampleRegistry_Expose() {
	gateway, alice, agent, stop := exampleGateway()
	defer stop()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	_, err := switching.Dial(ctx, gateway, "web", alice)
	fmt.Println("before the agent:", errors.Is(err, switching.ErrUnavailable))

	// The agent: an echo, published through the gateway.
	ln, err := switching.ListenRemote(ctx, gateway, "web", agent)
	if err != nil {
		panic(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { defer c.Close(); io.Copy(c, c) }()
		}
	}()

	c, err := switching.Dial(ctx, gateway, "web", alice)
	if err != nil {
		panic(err)
	}
	defer c.Close()
	fmt.Fprint(c, "hello")
	got := make([]byte, 5)
	io.ReadFull(c, got)
	fmt.Println("through the agent:", string(got))
	// Output:
	// before the agent: true
	// through the agent: hello
}

// An agent publishes an HTTP server through a gateway: http.Serve takes
// the remote listener as it would a TCP one, and a client dials the
// route on the gateway.
func ExampleListenRemote() {
	gateway, alice, agent, stop := exampleGateway()
	defer stop()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	// On the agent, behind NAT: dial out, publish "web", serve it.
	ln, err := switching.ListenRemote(ctx, gateway, "web", agent)
	if err != nil {
		panic(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "hello from behind the NAT, %s", r.URL.Path)
	})}
	go srv.Serve(ln)
	defer srv.Close() // closes ln too

	// Anywhere: a client of the route, through the gateway.
	tr := &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return switching.Dial(ctx, gateway, "web", alice)
	}}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr}).Get("http://web/index.html")
	if err != nil {
		panic(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	fmt.Println(string(body))
	// Output: hello from behind the NAT, /index.html
}
