//go:build linux

package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ampmux/ampmux/amp/switching"
	"github.com/ampmux/ampmux/internal/pki"
)

// startSSHD runs a real sshd on a loopback port with a generated host key
// that admits the generated user key; it returns the port and the key.
func startSSHD(t *testing.T) (port int, identity string) {
	t.Helper()
	sshd := "/usr/sbin/sshd"
	if _, err := os.Stat(sshd); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("sshd is missing (scripts/test installs openssh-server): %v", err)
		}
		t.Skip("sshd not installed (apt-get install -y openssh-server)")
	}
	if os.Geteuid() != 0 {
		t.Skip("sshd needs root here (privilege separation)")
	}
	os.MkdirAll("/run/sshd", 0o755)
	dir := t.TempDir()
	for _, k := range []string{"host", "id"} {
		if out, err := exec.Command("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", filepath.Join(dir, k)).CombinedOutput(); err != nil {
			t.Fatalf("ssh-keygen: %v %s", err, out)
		}
	}
	pub, _ := os.ReadFile(filepath.Join(dir, "id.pub"))
	os.WriteFile(filepath.Join(dir, "authorized_keys"), pub, 0o600)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port = l.Addr().(*net.TCPAddr).Port
	l.Close()
	conf := fmt.Sprintf("Port %d\nListenAddress 127.0.0.1\nHostKey %s\nAuthorizedKeysFile %s\nPidFile %s\nUsePAM no\nStrictModes no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\nPermitRootLogin prohibit-password\nSubsystem sftp internal-sftp\n",
		port, filepath.Join(dir, "host"), filepath.Join(dir, "authorized_keys"), filepath.Join(dir, "sshd.pid"))
	os.WriteFile(filepath.Join(dir, "sshd_config"), []byte(conf), 0o600)
	p := startProc(t, sshd, "-D", "-e", "-f", filepath.Join(dir, "sshd_config"))
	p.stderr.waitFor(t, "Server listening on 127.0.0.1")
	return port, filepath.Join(dir, "id")
}

// startHTTPServer runs python3 -m http.server on a loopback port over dir.
func startHTTPServer(t *testing.T, dir string) string {
	t.Helper()
	p := startProc(t, "/usr/bin/python3", "-u", "-m", "http.server", "--bind", "127.0.0.1", "--directory", dir, "0")
	m := regexp.MustCompile(`port (\d+)`).FindStringSubmatch(p.line(t))
	if m == nil {
		t.Fatalf("http.server said nothing of its port; stderr:\n%s", p.stderr.String())
	}
	return "127.0.0.1:" + m[1]
}

// TestExposeSSHAndHTTP: an agent publishes a real sshd and python's
// http.server through the gateway; ssh runs a command through `ampmux
// connect`, a 100 MB scp arrives intact, and the web page comes back.
func TestExposeSSHAndHTTP(t *testing.T) {
	sshPort, identity := startSSHD(t)
	site := t.TempDir()
	os.WriteFile(filepath.Join(site, "index.html"), []byte("published from behind the NAT"), 0o644)
	web := startHTTPServer(t, site)

	dir := t.TempDir()
	for _, args := range [][]string{{"cert", "--out", dir}, {"cert", "--out", dir, "--client", "agent-1"}} {
		if code, _, stderr := ctRun(args...); code != 0 {
			t.Fatalf("%v: %s", args, stderr)
		}
	}
	f := func(n string) string { return filepath.Join(dir, n) }
	gw, addr := startServe(t, "--tls-cert", f(pki.ServerFile), "--tls-key", f(pki.ServerKeyFile), "--client-ca", f(pki.CAFile),
		"--expose", "ssh=agent-1", "--expose", "web=agent-1")
	agent := startProc(t, serveTestBinary(t), "expose", "--server", addr,
		"--route", fmt.Sprintf("ssh=127.0.0.1:%d", sshPort), "--route", "web="+web,
		"--ca", f(pki.CAFile), "--cert", f("agent-1.pem"), "--key", f("agent-1-key.pem"))
	if l := agent.line(t); !strings.HasPrefix(l, "exposing 2") {
		t.Fatalf("expose printed %q; stderr:\n%s", l, agent.stderr.String())
	}
	gw.stderr.waitCount(t, "route published", 2)

	proxy := fmt.Sprintf("%s connect --server %s --protocol ssh --ca %s --cert %s --key %s",
		serveTestBinary(t), addr, f(pki.CAFile), f(pki.ClientFile), f(pki.ClientKeyFile))
	sshArgs := []string{"-o", "ProxyCommand=" + proxy, "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
		"-o", "BatchMode=yes", "-o", "LogLevel=ERROR", "-i", identity}
	out, err := exec.Command("ssh", append(sshArgs, "root@gateway", "echo hello through the reverse tunnel")...).CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != "hello through the reverse tunnel" {
		t.Fatalf("ssh: %v\n%s", err, out)
	}

	big := filepath.Join(t.TempDir(), "big")
	data := make([]byte, 100<<20)
	rand.Read(data)
	os.WriteFile(big, data, 0o600)
	copyTo := filepath.Join(t.TempDir(), "copy")
	scpArgs := []string{"-o", "ProxyCommand=" + proxy, "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
		"-o", "BatchMode=yes", "-o", "LogLevel=ERROR", "-i", identity}
	if out, err := exec.Command("scp", append(scpArgs, big, "root@gateway:"+copyTo)...).CombinedOutput(); err != nil {
		t.Fatalf("scp: %v\n%s", err, out)
	}
	got, err := os.ReadFile(copyTo)
	if err != nil || sha256.Sum256(got) != sha256.Sum256(data) {
		t.Fatalf("100 MB scp: %d bytes arrived, intact %v (%v)", len(got), bytes.Equal(got, data), err)
	}

	pool, _ := loadPool(f(pki.CAFile))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := switching.Dial(ctx, addr, "web", clientTLS(t, pool, f(pki.ClientFile), f(pki.ClientKeyFile)))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, "GET /index.html HTTP/1.0\r\n\r\n")
	page, _ := io.ReadAll(c)
	if !strings.Contains(string(page), "published from behind the NAT") {
		t.Fatalf("web through the reverse tunnel: %q", page)
	}
}

func clientTLS(t *testing.T, pool *x509.CertPool, cert, key string) *tls.Config {
	t.Helper()
	pair, err := tls.LoadX509KeyPair(cert, key)
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{pair}}
}

// TestExposeSilentPublisher: an agent that goes silent without a FIN (a
// stopped process: its kernel still ACKs) is noticed by the gateway's
// heartbeat; the route is then refused with UNAVAILABLE.
func TestExposeSilentPublisher(t *testing.T) {
	dir := t.TempDir()
	for _, args := range [][]string{{"cert", "--out", dir}, {"cert", "--out", dir, "--client", "agent-1"}} {
		if code, _, stderr := ctRun(args...); code != 0 {
			t.Fatalf("%v: %s", args, stderr)
		}
	}
	f := func(n string) string { return filepath.Join(dir, n) }
	gw, addr := startServe(t, "--tls-cert", f(pki.ServerFile), "--tls-key", f(pki.ServerKeyFile), "--client-ca", f(pki.CAFile),
		"--expose", "echo2=agent-1", "--heartbeat", "200ms", "--heartbeat-timeout", "300ms")
	agent := startProc(t, serveTestBinary(t), "expose", "--server", addr, "--route", "echo2="+startEchoBackend(t),
		"--ca", f(pki.CAFile), "--cert", f("agent-1.pem"), "--key", f("agent-1-key.pem"))
	if l := agent.line(t); !strings.HasPrefix(l, "exposing 1") {
		t.Fatalf("expose printed %q; stderr:\n%s", l, agent.stderr.String())
	}
	gw.stderr.waitFor(t, "route published")
	agent.cmd.Process.Signal(syscall.SIGSTOP)
	t.Cleanup(func() { agent.cmd.Process.Signal(syscall.SIGCONT) })
	gw.stderr.waitFor(t, "publisher gone")
	pool, _ := loadPool(f(pki.CAFile))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := switching.Dial(ctx, addr, "echo2", clientTLS(t, pool, f(pki.ClientFile), f(pki.ClientKeyFile))); !errors.Is(err, switching.ErrUnavailable) {
		t.Fatalf("with the publisher stopped: %v, want UNAVAILABLE", err)
	}
}
