//go:build unix

package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ampmux/ampmux/amp/conn"
	"github.com/ampmux/ampmux/amp/switching"
	"github.com/ampmux/ampmux/internal/demo"
	"github.com/ampmux/ampmux/internal/pki"
)

// TestReloadUnderLoad: SIGHUP with a renewed certificate and a new route
// while a tunnel moves data. The transfer completes intact, new
// connections get the new certificate and the new route, and a broken
// configuration on a later SIGHUP leaves that one serving.
func TestReloadUnderLoad(t *testing.T) {
	dir, b := writePKI(t)
	echo := startEchoBackend(t)
	file := filepath.Join(dir, "serve.yaml")
	writeConfig := func(routes ...string) {
		t.Helper()
		y := fmt.Sprintf("tls_cert: %s\ntls_key: %s\nclient_ca: %s\nroutes:\n",
			filepath.Join(dir, pki.ServerFile), filepath.Join(dir, pki.ServerKeyFile), filepath.Join(dir, pki.CAFile))
		for _, r := range routes {
			y += fmt.Sprintf("  - name: %s\n    backend: %s\n", r, echo)
		}
		if err := os.WriteFile(file+".new", []byte(y), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(file+".new", file); err != nil {
			t.Fatal(err)
		}
	}
	writeConfig("e")
	p, addr := startServe(t, "--config", file)
	clientTLS := &tls.Config{RootCAs: b.CA.Pool(), Certificates: []tls.Certificate{b.Client.TLS()}, ServerName: "127.0.0.1"}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	serial := func() *big.Int {
		t.Helper()
		c, err := conn.Dial(ctx, "tcp", addr, &conn.Config{})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if err := c.StartTLS(ctx, clientTLS); err != nil {
			t.Fatal(err)
		}
		return c.PeerCertificate().SerialNumber
	}
	first := serial()

	// A tunnel moving data: half of it before the reload, half after.
	tc, err := switching.Dial(ctx, addr, "e", clientTLS)
	if err != nil {
		t.Fatal(err)
	}
	defer tc.Close()
	chunk := bytes.Repeat([]byte("0123456789abcdef"), 1<<19) // 8 MiB
	back := make(chan []byte, 1)
	go func() { b, _ := io.ReadAll(tc); back <- b }()
	if _, err := tc.Write(chunk); err != nil {
		t.Fatal(err)
	}

	renewed, err := b.CA.Server(pki.DefaultHosts...)
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, pki.ServerKeyFile), renewed.KeyPEM(), 0o600)
	os.WriteFile(filepath.Join(dir, pki.ServerFile), renewed.CertPEM(), 0o644)
	writeConfig("e", "e2")
	p.cmd.Process.Signal(syscall.SIGHUP)
	p.stderr.waitFor(t, "configuration reloaded")

	if got := serial(); got.Cmp(renewed.Cert.SerialNumber) != 0 || got.Cmp(first) == 0 {
		t.Fatalf("after the reload a new connection got serial %v; the renewed certificate's is %v (the old one's %v)", got, renewed.Cert.SerialNumber, first)
	}
	e2, err := switching.Dial(ctx, addr, "e2", clientTLS)
	if err != nil {
		t.Fatalf("the route added by the reload: %v", err)
	}
	e2.Close()

	if _, err := tc.Write(chunk); err != nil {
		t.Fatalf("the tunnel, after the reload: %v", err)
	}
	tc.(interface{ CloseWrite() error }).CloseWrite()
	if got := <-back; !bytes.Equal(got, append(chunk, chunk...)) {
		t.Fatalf("the transfer across the reload: %d bytes back of %d", len(got), 2*len(chunk))
	}

	// A broken configuration is refused whole; the one in force stays.
	if err := os.WriteFile(file, []byte("tls_cert: /nonexistent.pem\ntls_key: /nonexistent-key.pem\nroutes: [\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	p.cmd.Process.Signal(syscall.SIGHUP)
	p.stderr.waitFor(t, "reload refused")
	if got := serial(); got.Cmp(renewed.Cert.SerialNumber) != 0 {
		t.Fatalf("after a refused reload: serial %v, want the renewed %v", got, renewed.Cert.SerialNumber)
	}
	if c, err := switching.Dial(ctx, addr, "e2", clientTLS); err != nil {
		t.Fatalf("after a refused reload, route e2: %v", err)
	} else {
		c.Close()
	}
	// A route the next good configuration drops is refused.
	writeConfig("e2")
	p.cmd.Process.Signal(syscall.SIGHUP)
	p.stderr.waitCount(t, "configuration reloaded", 2)
	if _, err := switching.Dial(ctx, addr, "e", clientTLS); !errors.Is(err, switching.ErrUnknownProtocol) {
		t.Fatalf("a route the reload removed: %v, want UNKNOWN_PROTOCOL", err)
	}
}

// TestReloadLimits: SIGHUP puts new connection limits in force for new
// connections (a smaller box cap, a per-source cap) while a connection
// from before keeps the ones it started with.
func TestReloadLimits(t *testing.T) {
	file := filepath.Join(t.TempDir(), "serve.yaml")
	write := func(y string) {
		t.Helper()
		if err := os.WriteFile(file+".new", []byte(y), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(file+".new", file); err != nil {
			t.Fatal(err)
		}
	}
	write("demo: true\n")
	p, addr := startServe(t, "--config", file)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	dial := func() *conn.Conn {
		t.Helper()
		c, err := conn.Dial(ctx, "tcp", addr, nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	large := demo.EchoValues{Bytes: bytes.Repeat([]byte("x"), 8<<10)}
	echo := func(c *conn.Conn) error {
		got, err := demo.Echo.Call(ctx, c, large)
		if err == nil && !bytes.Equal(got.Bytes, large.Bytes) {
			t.Errorf("Echo returned %d bytes, want %d", len(got.Bytes), len(large.Bytes))
		}
		return err
	}
	before := dial()
	if err := echo(before); err != nil {
		t.Fatalf("8 KiB Echo under the default limits: %v", err)
	}

	write("demo: true\nlimits:\n  max_box_size: 4096\n  max_conns_per_source: 2\n")
	p.cmd.Process.Signal(syscall.SIGHUP)
	p.stderr.waitFor(t, "configuration reloaded")
	if strings.Contains(p.stderr.String(), "need_restart") {
		t.Errorf("limits named as needing a restart:\n%s", p.stderr)
	}

	after := dial()
	if err := echo(after); err == nil {
		t.Error("8 KiB Echo on a new connection passed max_box_size: 4096")
	}
	if err := echo(before); err != nil {
		t.Errorf("the connection from before the reload lost its limits: %v", err)
	}
	// Open from this address now: before, and a second; a third is refused.
	second := dial()
	if _, err := demo.Sum.Call(ctx, second, demo.SumArgs{A: big.NewInt(1), B: big.NewInt(2)}); err != nil {
		t.Fatalf("second connection under max_conns_per_source: 2: %v", err)
	}
	third := dial()
	if _, err := demo.Sum.Call(ctx, third, demo.SumArgs{A: big.NewInt(1), B: big.NewInt(2)}); err == nil {
		t.Error("a third connection from one address passed max_conns_per_source: 2")
	}
}
