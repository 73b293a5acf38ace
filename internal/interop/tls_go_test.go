package interop

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"errors"
	"io"
	"math/big"
	"net"
	"sort"
	"testing"
	"time"

	"github.com/ampmux/ampmux/amp"
	"github.com/ampmux/ampmux/amp/box"
	"github.com/ampmux/ampmux/amp/conn"
	"github.com/ampmux/ampmux/amp/switching"
	"github.com/ampmux/ampmux/internal/demo"
)

// startGoTLSServer serves the contract twisted_tls.py's client expects:
// StartTLS with client certificates required, "echo" for CN "client" only.
func startGoTLSServer(t *testing.T, certs *TLSCerts) string {
	t.Helper()
	reg := switching.NewRegistry()
	reg.Register("echo", func(c net.Conn, _ switching.Info) {
		defer c.Close()
		io.Copy(c, c)
	}, switching.Policy{AllowedNames: []string{TLSClientCN}})
	m := amp.NewMux()
	demo.Register(m)
	reg.Install(m)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &conn.Server{Config: conn.Config{Handler: m, Logger: quietLogger(), TLS: &tls.Config{
		Certificates: []tls.Certificate{certs.Server.TLS()},
		ClientCAs:    certs.CA.Pool(),
		ClientAuth:   tls.RequireAndVerifyClientCert,
	}}}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	return l.Addr().String()
}

// TestTwistedTLSClientAgainstGoServer: Twisted's StartTLS with a client
// certificate and ProtocolSwitchCommand reach the Go server's echo; every
// refusal is answered as specified.
func TestTwistedTLSClientAgainstGoServer(t *testing.T) {
	certs := WriteTLSCerts(t, t.TempDir())
	addr := startGoTLSServer(t, certs)
	res := RunTwistedTLSClient(t, certs.Dir, addr)
	if len(res) < 7 {
		t.Fatalf("only %d checks ran", len(res))
	}
	var names []string
	for name, detail := range res {
		names = append(names, name)
		if detail != "" {
			t.Errorf("%s: %s", name, detail)
		}
	}
	sort.Strings(names)
	t.Logf("Twisted TLS checks against the Go server: %v", names)
}

// TestGoSwitchingAgainstTwistedServer: switching.Dial against a Twisted
// server that switches to an echo protocol.
func TestGoSwitchingAgainstTwistedServer(t *testing.T) {
	certs := WriteTLSCerts(t, t.TempDir())
	addr := StartTwistedTLSServer(t, certs.Dir)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	clientCfg := &tls.Config{RootCAs: certs.CA.Pool(), Certificates: []tls.Certificate{certs.Client.TLS()}}

	t.Run("echo 1 MiB", func(t *testing.T) {
		c, err := switching.Dial(ctx, addr, "echo", clientCfg)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		payload := make([]byte, 1<<20+12345)
		rand.Read(payload)
		go func() {
			for off := 0; off < len(payload); off += 60000 {
				c.Write(payload[off:min(off+60000, len(payload))])
			}
		}()
		got := make([]byte, len(payload))
		c.SetReadDeadline(time.Now().Add(30 * time.Second))
		if _, err := io.ReadFull(c, got); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, payload) {
			t.Fatal("echo differs")
		}
	})

	// An optimistic dial: the first bytes ride right behind the switch
	// request, which Twisted hands to the inner protocol; a refusal shows
	// on the first read.
	t.Run("optimistic", func(t *testing.T) {
		d := switching.Dialer{TLSConfig: clientCfg, Optimistic: true}
		c, err := d.Dial(ctx, addr, "echo")
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		payload := make([]byte, 256<<10+5)
		rand.Read(payload)
		go c.Write(payload)
		got := make([]byte, len(payload))
		c.SetReadDeadline(time.Now().Add(30 * time.Second))
		if _, err := io.ReadFull(c, got); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, payload) {
			t.Fatal("echo differs")
		}

		c2, err := d.Dial(ctx, addr, "nope")
		if err != nil {
			t.Fatal(err)
		}
		defer c2.Close()
		c2.Write([]byte("inner bytes Twisted reads as AMP"))
		c2.SetReadDeadline(time.Now().Add(30 * time.Second))
		_, err = c2.Read(make([]byte, 1))
		var de *switching.DialError
		if !errors.As(err, &de) || de.Step != switching.StepSwitch || !errors.Is(err, switching.ErrUnknownProtocol) {
			t.Fatalf("got %v, want an UNKNOWN_PROTOCOL switch refusal", err)
		}
	})

	refusals := []struct {
		name string
		dial func() (net.Conn, error)
		is   error
	}{
		{"unknown protocol", func() (net.Conn, error) { return switching.Dial(ctx, addr, "nope", clientCfg) }, switching.ErrUnknownProtocol},
		{"without TLS", func() (net.Conn, error) { return switching.DialInsecurePlaintext(ctx, addr, "echo") }, switching.ErrTLSRequired},
		{"certificate not allowed", func() (net.Conn, error) {
			return switching.Dial(ctx, addr, "echo", &tls.Config{RootCAs: certs.CA.Pool(), Certificates: []tls.Certificate{certs.Intruder.TLS()}})
		}, switching.ErrForbidden},
	}
	for _, r := range refusals {
		t.Run(r.name, func(t *testing.T) {
			c, err := r.dial()
			if c != nil {
				c.Close()
			}
			var de *switching.DialError
			if !errors.As(err, &de) || de.Step != switching.StepSwitch || !errors.Is(err, r.is) {
				t.Fatalf("got %v, want a switch refusal matching %v", err, r.is)
			}
		})
	}

	t.Run("second StartTLS and AMP over TLS", func(t *testing.T) {
		c, err := conn.Dial(ctx, "tcp", addr, &conn.Config{Logger: quietLogger()})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		cfg := clientCfg.Clone()
		cfg.ServerName = "localhost"
		if err := c.StartTLS(ctx, cfg); err != nil {
			t.Fatal(err)
		}
		if cert := c.PeerCertificate(); cert == nil || !cert.Equal(certs.Server.Cert) {
			t.Fatal("peer certificate is not the server's")
		}
		r, err := demo.Sum.Call(ctx, c, demo.SumArgs{A: big.NewInt(13), B: big.NewInt(81)})
		if err != nil || r.Total.Int64() != 94 {
			t.Fatalf("Sum over TLS: %v %v", r.Total, err)
		}
		_, err = c.Call(ctx, conn.StartTLSCommand, &box.Box{})
		var re *amp.RemoteError
		if !errors.As(err, &re) || re.Code != conn.CodeTLSError {
			t.Fatalf("second StartTLS: %v", err)
		}
		list, err := switching.ListProtocols.Call(ctx, c, struct{}{})
		if err != nil || len(list.Protocols) != 1 || list.Protocols[0] != "echo" {
			t.Fatalf("ListProtocols: %v %v", list, err)
		}
	})
}
