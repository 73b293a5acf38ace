package interop

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ampmux/ampmux/internal/pki"
)

// TLSScript is the testdata script for StartTLS / ProtocolSwitch interop.
const TLSScript = "twisted_tls.py"

// File names WriteTLSCerts uses (twisted_tls.py --certs expects them).
const (
	TLSCAFile          = "ca.pem"
	TLSServerFile      = "server.pem"
	TLSServerKeyFile   = "server-key.pem"
	TLSClientFile      = "client.pem"
	TLSClientKeyFile   = "client-key.pem"
	TLSIntruderFile    = "intruder.pem"
	TLSIntruderKeyFile = "intruder-key.pem"
)

// TLSClientCN and TLSIntruderCN are the common names of the two client
// certificates; only TLSClientCN may switch to "echo".
const (
	TLSClientCN   = "client"
	TLSIntruderCN = "intruder"
)

// TLSCerts is the PKI written by WriteTLSCerts.
type TLSCerts struct {
	CA                       *pki.CA
	Server, Client, Intruder *pki.Cert
	Dir                      string
}

// WriteTLSCerts makes a CA, a server certificate (localhost, 127.0.0.1,
// ::1) and two client certificates signed by it (CN "client" and CN
// "intruder"), writes the seven PEM files twisted_tls.py expects into dir
// (ca.pem, server.pem, server-key.pem, client.pem, client-key.pem,
// intruder.pem, intruder-key.pem), and returns them. It fails t on error.
func WriteTLSCerts(t testing.TB, dir string) *TLSCerts {
	t.Helper()
	ca, err := pki.NewCA("ampmux interop test CA")
	if err != nil {
		t.Fatalf("interop: WriteTLSCerts: %v", err)
	}
	srv, err := ca.Server(pki.DefaultHosts...)
	if err != nil {
		t.Fatalf("interop: WriteTLSCerts: %v", err)
	}
	cli, err := ca.Client(TLSClientCN)
	if err != nil {
		t.Fatalf("interop: WriteTLSCerts: %v", err)
	}
	intr, err := ca.Client(TLSIntruderCN)
	if err != nil {
		t.Fatalf("interop: WriteTLSCerts: %v", err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatalf("interop: WriteTLSCerts: %v", err)
	}
	files := []struct {
		name string
		data []byte
		mode os.FileMode
	}{
		{TLSCAFile, ca.CertPEM(), 0o644},
		{TLSServerFile, srv.CertPEM(), 0o644},
		{TLSServerKeyFile, srv.KeyPEM(), 0o600},
		{TLSClientFile, cli.CertPEM(), 0o644},
		{TLSClientKeyFile, cli.KeyPEM(), 0o600},
		{TLSIntruderFile, intr.CertPEM(), 0o644},
		{TLSIntruderKeyFile, intr.KeyPEM(), 0o600},
	}
	for _, f := range files {
		if err := os.WriteFile(filepath.Join(dir, f.name), f.data, f.mode); err != nil {
			t.Fatalf("interop: WriteTLSCerts: %v", err)
		}
	}
	return &TLSCerts{CA: ca, Server: srv, Client: cli, Intruder: intr, Dir: dir}
}

// StartTwistedTLSServer starts `twisted_tls.py server --certs certsDir`
// (with extra args, e.g. "--host", "::1") and waits up to 10 s for its
// "LISTENING <port>" line, failing t with the server's stderr otherwise. A
// t.Cleanup stops it (closes its stdin, kills it after 5 s) and waits for
// it, logging its stderr if the test failed. It returns "127.0.0.1:<port>"
// (or the --host given).
func StartTwistedTLSServer(t testing.TB, certsDir string, args ...string) string {
	t.Helper()
	return startScriptServer(t, TLSScript, append([]string{"server", "--certs", certsDir}, args...)...)
}

// RunTwistedTLSClientFull runs `twisted_tls.py client --certs certsDir`
// against addr ("host:port") with extra args (e.g. "--only",
// "switch_*") and returns its parsed output. It fails t, showing the full
// output, if the script cannot run, times out (150 s), exits with a status
// other than 0 (all passed) or 1 (some failed), or prints malformed output.
// Failed checks are logged.
func RunTwistedTLSClientFull(t testing.TB, certsDir, addr string, args ...string) *ClientResult {
	t.Helper()
	return runClientScript(t, "RunTwistedTLSClient", TLSScript+" client", TLSScript,
		[]string{"client", "--certs", certsDir}, addr, args)
}

// RunTwistedTLSClient runs `twisted_tls.py client` against addr and returns
// a map from check name to "" (passed) or the failure detail. See
// RunTwistedTLSClientFull for how it fails t.
func RunTwistedTLSClient(t testing.TB, certsDir, addr string, args ...string) map[string]string {
	t.Helper()
	return RunTwistedTLSClientFull(t, certsDir, addr, args...).Results
}

// TLSClientCheckNames returns the names of twisted_tls.py's client checks
// (those selected by args such as "--only", "switch_*"), in run order.
func TLSClientCheckNames(t testing.TB, args ...string) []string {
	t.Helper()
	out := RunPython(t, TLSScript, append([]string{"client", "--list"}, args...)...)
	return strings.Fields(string(out))
}
