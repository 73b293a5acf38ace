package main

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"

	"github.com/ampmux/ampmux/internal/pki"
)

func init() {
	c := &command{
		name:    "cert",
		summary: "Make a development PKI: a CA, a server certificate and a client certificate (PEM).",
		example: `  ampmux cert --out ./pki --host gw.example.com --host 192.0.2.7

Writes ca.pem, ca-key.pem, server.pem, server-key.pem, client.pem and
client-key.pem (the keys with mode 0600). The server certificate is for
localhost, 127.0.0.1 and ::1, plus each --host; the client certificate's
name (common name and DNS name) is "client". Refuses to replace an existing
bundle unless --force. For development and tests: keep ca-key.pem private,
or better, delete it once you have what you need.

  ampmux cert --out ./pki --client alice --client agent-1

Adds a client certificate per --client NAME (common name and DNS name NAME),
signed by the CA already in --out: NAME.pem and NAME-key.pem (mode 0600).
Nothing else in --out changes. Policies (allowed_names, publishers, the
per-client limits) key on NAME.`,
	}
	c.run = func(e *env, args []string) error { return runCert(c, e, args) }
	register(c)
}

// certBundleFiles are what pki.Bundle.Write writes, keys marked.
var certBundleFiles = []struct {
	name  string
	key   bool
	about string
}{
	{pki.CAFile, false, "CA certificate: clients verify the server with it (--ca), the server verifies client certificates with it"},
	{pki.CAKeyFile, true, "CA key: signs certificates; keep it private"},
	{pki.ServerFile, false, "server certificate"},
	{pki.ServerKeyFile, true, "server key"},
	{pki.ClientFile, false, `client certificate, named "client" (--cert)`},
	{pki.ClientKeyFile, true, "client key (--key)"},
}

func runCert(c *command, e *env, args []string) error {
	flags := c.newFlags(e)
	out := flags.String("out", "", "`directory` to write the PEM files to (created if missing; required)")
	var hosts multiFlag
	flags.Var(&hosts, "host", "extra DNS `name` or IP address for the server certificate (repeatable)")
	var clients multiFlag
	flags.Var(&clients, "client", "add a client certificate `NAME`, signed by the CA already in --out (repeatable; nothing else is written)")
	force := flags.Bool("force", false, "replace an existing bundle in --out (the old CA, and everything it signed, stops being trusted by clients given the new ca.pem)")
	if err := parseQuiet(flags, args); err != nil {
		return err
	}
	if flags.NArg() > 0 {
		return usagef("unexpected argument %q (use --host NAME for each extra name)", flags.Arg(0))
	}
	if *out == "" {
		return usagef("--out is required")
	}
	if len(clients) > 0 {
		if len(hosts) > 0 {
			return usagef("--host is for a new bundle's server certificate, not with --client")
		}
		return addClients(e, *out, clients, *force)
	}
	var extra []string
	for _, h := range hosts {
		h = strings.TrimSpace(h)
		if h == "" {
			return usagef("--host needs a name")
		}
		if net.ParseIP(h) == nil && strings.ContainsAny(h, ":/ \t") {
			return usagef("--host %q is a name or an IP address, without port or scheme", h)
		}
		if !slices.Contains(pki.DefaultHosts, h) && !slices.Contains(extra, h) {
			extra = append(extra, h)
		}
	}

	if !*force {
		var existing []string
		for _, f := range certBundleFiles {
			p := filepath.Join(*out, f.name)
			if _, err := os.Lstat(p); err == nil {
				existing = append(existing, f.name)
			} else if !errors.Is(err, fs.ErrNotExist) {
				return err
			}
		}
		if len(existing) > 0 {
			return fmt.Errorf("%s already holds %s: not replacing them without --force", *out, strings.Join(existing, ", "))
		}
	}

	b, err := pki.NewBundle(extra...)
	if err != nil {
		return err
	}
	if err := b.Write(*out); err != nil {
		return err
	}
	for _, f := range certBundleFiles {
		p := filepath.Join(*out, f.name)
		st, err := os.Stat(p)
		if err != nil {
			return err
		}
		if f.key && runtime.GOOS != "windows" && st.Mode().Perm() != 0o600 {
			return fmt.Errorf("%s has mode %v, want 0600: the key may be readable by others", p, st.Mode().Perm())
		}
		fmt.Fprintf(e.stdout, "wrote %s  (%s)\n", p, f.about)
	}
	names := append(append([]string{}, pki.DefaultHosts...), extra...)
	d := *out
	fmt.Fprintf(e.stdout, `
The server certificate is valid for: %s.

Serve with them, then forward a local port through the server:

  ampmux serve --tls-cert %s --tls-key %s \
      --client-ca %s --route NAME=HOST:PORT
  ampmux forward --server localhost:PORT --protocol NAME --listen 127.0.0.1:2222 \
      --ca %s --cert %s --key %s
`, strings.Join(names, ", "),
		filepath.Join(d, pki.ServerFile), filepath.Join(d, pki.ServerKeyFile), filepath.Join(d, pki.CAFile),
		filepath.Join(d, pki.CAFile), filepath.Join(d, pki.ClientFile), filepath.Join(d, pki.ClientKeyFile))
	return nil
}

// validClientName is a DNS-like label sequence: a file name and a SAN.
func validClientName(n string) bool {
	if n == "" || len(n) > 253 || n[0] == '.' || n[0] == '-' {
		return false
	}
	for _, r := range n {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '.' || r == '_') {
			return false
		}
	}
	return true
}

// addClients issues a client certificate per name with the CA in dir.
func addClients(e *env, dir string, names []string, force bool) error {
	for _, n := range names {
		if !validClientName(n) {
			return usagef("--client %q: a name is letters, digits, '-', '_' and '.'", n)
		}
		for _, f := range []string{pki.CAFile, pki.CAKeyFile, pki.ServerFile, pki.ServerKeyFile} {
			if n+".pem" == f || n+"-key.pem" == f {
				return usagef("--client %q would replace %s", n, f)
			}
		}
		if !force {
			for _, f := range []string{n + ".pem", n + "-key.pem"} {
				if _, err := os.Lstat(filepath.Join(dir, f)); err == nil {
					return fmt.Errorf("%s already holds %s: not replacing it without --force", dir, f)
				} else if !errors.Is(err, fs.ErrNotExist) {
					return err
				}
			}
		}
	}
	ca, err := pki.LoadCA(dir)
	if err != nil {
		return fmt.Errorf("--client needs the CA in --out (run 'ampmux cert --out %s' first): %w", dir, err)
	}
	for _, n := range names {
		c, err := ca.Client(n)
		if err != nil {
			return err
		}
		if err := pki.WriteClient(dir, n, c); err != nil {
			return err
		}
		fmt.Fprintf(e.stdout, "wrote %s and %s  (client certificate %q, signed by %s)\n",
			filepath.Join(dir, n+".pem"), filepath.Join(dir, n+"-key.pem"), n, filepath.Join(dir, pki.CAFile))
	}
	return nil
}
