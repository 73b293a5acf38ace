package interop

import (
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// wantTLSChecks are twisted_tls.py's client checks, in run order.
var wantTLSChecks = []string{
	"starttls_sum",
	"switch_echo_1mib",
	"switch_echo_immediate",
	"unknown_protocol",
	"switch_without_tls",
	"switch_forbidden",
	"second_starttls",
}

func TestWriteTLSCerts(t *testing.T) {
	dir := t.TempDir()
	certs := WriteTLSCerts(t, dir)
	if certs.Dir != dir {
		t.Fatalf("Dir = %q, want %q", certs.Dir, dir)
	}
	roots := certs.CA.Pool()
	read := func(name string) *x509.Certificate {
		t.Helper()
		data, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		block, _ := pem.Decode(data)
		if block == nil || block.Type != "CERTIFICATE" {
			t.Fatalf("%s: no CERTIFICATE block", name)
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		return c
	}
	for _, tc := range []struct {
		file, cn string
		usage    x509.ExtKeyUsage
	}{
		{TLSClientFile, TLSClientCN, x509.ExtKeyUsageClientAuth},
		{TLSIntruderFile, TLSIntruderCN, x509.ExtKeyUsageClientAuth},
		{TLSServerFile, "localhost", x509.ExtKeyUsageServerAuth},
	} {
		c := read(tc.file)
		if c.Subject.CommonName != tc.cn {
			t.Errorf("%s: CN %q, want %q", tc.file, c.Subject.CommonName, tc.cn)
		}
		if _, err := c.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{tc.usage}}); err != nil {
			t.Errorf("%s: does not verify against ca.pem: %v", tc.file, err)
		}
	}
	if err := read(TLSServerFile).VerifyHostname("127.0.0.1"); err != nil {
		t.Errorf("server.pem: %v", err)
	}
	for _, key := range []string{TLSServerKeyFile, TLSClientKeyFile, TLSIntruderKeyFile} {
		data, err := os.ReadFile(filepath.Join(dir, key))
		if err != nil {
			t.Fatal(err)
		}
		block, _ := pem.Decode(data)
		if block == nil || block.Type != "PRIVATE KEY" {
			t.Fatalf("%s: no PRIVATE KEY block", key)
		}
		if _, err := x509.ParsePKCS8PrivateKey(block.Bytes); err != nil {
			t.Errorf("%s: %v", key, err)
		}
	}
}

func TestTwistedTLSCheckNames(t *testing.T) {
	if got := TLSClientCheckNames(t); !slices.Equal(got, wantTLSChecks) {
		t.Fatalf("check names %q, want %q", got, wantTLSChecks)
	}
	if got := TLSClientCheckNames(t, "--only", "switch_echo_*"); !slices.Equal(got, []string{"switch_echo_1mib", "switch_echo_immediate"}) {
		t.Fatalf("--only switch_echo_*: %q", got)
	}
}

// TestTwistedTLSSelf runs twisted_tls.py's client against its own server:
// Twisted against Twisted, so the checks themselves are known to be right
// before they judge ampmux.
func TestTwistedTLSSelf(t *testing.T) {
	certs := WriteTLSCerts(t, t.TempDir())
	addr := StartTwistedTLSServer(t, certs.Dir)
	res := RunTwistedTLSClientFull(t, certs.Dir, addr)
	if !slices.Equal(res.Order, wantTLSChecks) {
		t.Errorf("checks ran %q, want %q", res.Order, wantTLSChecks)
	}
	for _, name := range res.Order {
		if d := res.Results[name]; d != "" {
			t.Errorf("%s: %s", name, d)
		}
	}
	if res.Failed != 0 || res.Passed != len(wantTLSChecks) {
		t.Errorf("SUMMARY %d passed, %d failed", res.Passed, res.Failed)
	}
	for _, line := range res.Info {
		t.Logf("INFO %s", line)
	}
}
