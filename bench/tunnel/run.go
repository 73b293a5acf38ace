package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/ampmux/ampmux/internal/benchkit"
)

var (
	listeningRe  = regexp.MustCompile(`^listening on (\S+)$`)
	exposingRe   = regexp.MustCompile(`^exposing (\d+) route`)
	sshdRe       = regexp.MustCompile(`Server listening on 127\.0\.0\.1 port (\d+)`)
	sshRemoteRe  = regexp.MustCompile(`Allocated port (\d+) for remote forward`)
	forwardingRe = regexp.MustCompile(`^forwarding (\S+) -> `)
)

// path is one way to the backend.
type path struct {
	key   string // a, b, c, d
	name  string
	addr  string
	procs []*proc // the processes between client and backend, for their CPU time
}

// bed is the started test bed.
type bed struct {
	tmp     string
	ampmux  string
	pki     string
	backend string
	serve   string // ampmux serve, route "bench" to the backend
	tlsSrv  string // the TLS proxy's server half
	sslhVer string // e.g. "sslh-select 1.20-1+deb12u1"; "" without sslh
	source  string // the commit ampmux was built from, and whether the tree differs
	paths   []path
	cmds    []string // what was started, for the report
	clTLS   *tls.Config
}

const (
	routeName   = "bench"
	reverseName = "bench-reverse" // published by ampmux expose (path e)
)

func run(ctx context.Context, cfg config, stdout io.Writer) (err error) {
	start := time.Now()
	load0 := benchkit.LoadAvg()
	tmp, err := os.MkdirTemp("", "ampmux-tunnel-")
	if err != nil {
		return err
	}
	defer func() {
		if cfg.keep || err != nil {
			cfg.logf("logs kept in %s", tmp)
			return
		}
		os.RemoveAll(tmp)
	}()
	ps := &procs{dir: tmp, logf: cfg.logf}
	defer ps.KillAll()
	defer func() { // before killAll: say which process died and how
		switch {
		case err == nil:
		case ctx.Err() != nil:
			err = fmt.Errorf("interrupted (%v): %w", context.Cause(ctx), err)
		default:
			err = fmt.Errorf("%w\n\nprocesses:\n%s", err, ps.Report())
		}
	}()

	b, err := setUp(ctx, &cfg, tmp, ps)
	if err != nil {
		return err
	}
	res, err := measure(ctx, &cfg, b, ps)
	if err != nil {
		return err
	}
	res.elapsed = time.Since(start)
	res.load = [2]string{load0, benchkit.LoadAvg()}
	writeMarkdown(stdout, &cfg, b, res)
	return nil
}

// sourceState says which commit ampmux was built from and whether files
// outside bench/ differ from it (read-only git commands).
func sourceState(ctx context.Context, root string) string {
	head, err := runCmd(ctx, root, "git", "rev-parse", "--short", "HEAD")
	if err != nil {
		return "an unknown commit"
	}
	s := "commit " + strings.TrimSpace(string(head))
	if st, err := runCmd(ctx, root, "git", "status", "--porcelain", "--", ".", ":!bench"); err == nil {
		if n := len(strings.FieldsFunc(string(st), func(r rune) bool { return r == '\n' })); n > 0 {
			s += fmt.Sprintf(" plus uncommitted changes (%d files outside bench/)", n)
		}
	}
	return s
}

// repoRoot finds the ampmux repository: the parent of the bench module.
func repoRoot(ctx context.Context) (string, error) {
	out, err := runCmd(ctx, "", "go", "env", "GOMOD")
	if err != nil {
		return "", err
	}
	gomod := strings.TrimSpace(string(out))
	if filepath.Base(filepath.Dir(gomod)) != "bench" {
		return "", fmt.Errorf("run from inside the bench module (go env GOMOD is %q)", gomod)
	}
	root := filepath.Dir(filepath.Dir(gomod))
	if _, err := os.Stat(filepath.Join(root, "cmd", "ampmux")); err != nil {
		return "", fmt.Errorf("no cmd/ampmux beside the bench module: %w", err)
	}
	return root, nil
}

// findSSLH returns the sslh binary for the flavour, installing the Debian
// package when allowed, missing, and root.
func findSSLH(ctx context.Context, cfg *config) (string, error) {
	name := "sslh-select"
	if cfg.sslh == "fork" {
		name = "sslh" // Debian's sslh is sslh-fork
	}
	look := func() (string, error) {
		if p, err := exec.LookPath(name); err == nil {
			return p, nil
		}
		p := filepath.Join("/usr/sbin", name) // not on a user's PATH
		if _, err := os.Stat(p); err != nil {
			return "", err
		}
		return p, nil
	}
	if p, err := look(); err == nil {
		return p, nil
	}
	if !cfg.installSSLH || os.Geteuid() != 0 {
		return "", fmt.Errorf("%s not found: install Debian's sslh (apt-get install -y sslh) or pass --sslh none", name)
	}
	cfg.logf("installing sslh: apt-get install -y --no-install-recommends sslh")
	install := func() error {
		cmd := exec.CommandContext(ctx, "apt-get", "install", "-y", "--no-install-recommends", "sslh")
		cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
		out, err := cmd.CombinedOutput()
		if err != nil {
			return fmt.Errorf("apt-get install sslh: %v\n%s", err, indent(strings.TrimSpace(string(out))))
		}
		return nil
	}
	if err := install(); err != nil {
		if _, uerr := runCmd(ctx, "", "apt-get", "update"); uerr != nil {
			return "", err
		}
		if err := install(); err != nil {
			return "", err
		}
	}
	return look()
}

func setUp(ctx context.Context, cfg *config, tmp string, ps *procs) (*bed, error) {
	b := &bed{tmp: tmp, ampmux: filepath.Join(tmp, "ampmux"), pki: filepath.Join(tmp, "pki")}
	root, err := repoRoot(ctx)
	if err != nil {
		return nil, err
	}
	t0 := time.Now()
	if _, err := runCmd(ctx, root, "go", "build", "-o", b.ampmux, "./cmd/ampmux"); err != nil {
		return nil, err
	}
	cfg.logf("built ampmux from %s in %v", root, time.Since(t0).Round(time.Millisecond))
	b.source = sourceState(ctx, root)
	if _, err := runCmd(ctx, "", b.ampmux, "cert", "--out", b.pki); err != nil {
		return nil, err
	}
	pf := func(name string) string { return filepath.Join(b.pki, name) }
	ca, srvCert, srvKey, cliCert, cliKey := pf("ca.pem"), pf("server.pem"), pf("server-key.pem"), pf("client.pem"), pf("client-key.pem")

	var sslhBin string
	if cfg.sslh != "none" && cfg.paths["c"] {
		if sslhBin, err = findSSLH(ctx, cfg); err != nil {
			return nil, err
		}
		out, err := runCmd(ctx, "", sslhBin, "-V")
		if err != nil {
			return nil, err
		}
		b.sslhVer = strings.TrimSpace(string(out))
	}

	procOf := map[string]*proc{}
	self := func(name, role string, args ...string) (string, error) {
		p, addr, err := ps.start(ctx, name, listeningRe, []string{roleEnv + "=" + role}, cfg.self, append(append([]string{}, cfg.selfArgs...), args...)...)
		procOf[name] = p
		b.cmds = append(b.cmds, "tunnel "+role+" "+strings.Join(args, " "))
		return addr, err
	}
	amp := func(name string, re *regexp.Regexp, args ...string) (string, error) {
		p, addr, err := ps.start(ctx, name, re, nil, b.ampmux, args...)
		procOf[name] = p
		b.cmds = append(b.cmds, "ampmux "+strings.Join(args, " "))
		return addr, err
	}
	if b.backend, err = self("backend", "backend", "--listen", "127.0.0.1:0"); err != nil {
		return nil, err
	}
	if b.serve, err = amp("serve", listeningRe, "serve", "--listen", "127.0.0.1:0",
		"--tls-cert", srvCert, "--tls-key", srvKey, "--client-ca", ca, "--route", routeName+"="+b.backend,
		"--expose", reverseName+"=client"); err != nil {
		return nil, err
	}
	fwd, err := amp("forward", forwardingRe, "forward", "--server", b.serve, "--protocol", routeName,
		"--listen", "127.0.0.1:0", "--ca", ca, "--cert", cliCert, "--key", cliKey)
	if err != nil {
		return nil, err
	}
	if b.tlsSrv, err = self("tlsserver", "tlsserver", "--listen", "127.0.0.1:0", "--backend", b.backend,
		"--cert", srvCert, "--key", srvKey, "--client-ca", ca); err != nil {
		return nil, err
	}
	tlsCli, err := self("tlsclient", "tlsclient", "--listen", "127.0.0.1:0", "--server", b.tlsSrv,
		"--ca", ca, "--cert", cliCert, "--key", cliKey)
	if err != nil {
		return nil, err
	}
	b.paths = []path{
		{"a", "ampmux forward → ampmux serve (TLS, client cert)", fwd, []*proc{procOf["forward"], procOf["serve"]}},
		{"b", "Go TLS proxy pair, io.Copy (same TLS, same certs)", tlsCli, []*proc{procOf["tlsclient"], procOf["tlsserver"]}},
	}
	if sslhBin != "" {
		p, addr, err := startSSLH(ctx, ps, sslhBin, b.backend)
		if err != nil {
			return nil, err
		}
		b.cmds = append(b.cmds, filepath.Base(sslhBin)+" -f -n -p "+addr+" --anyprot "+b.backend)
		b.paths = append(b.paths, path{"c", b.sslhVer + " (plain TCP, no TLS: reference)", addr, []*proc{p}})
	}
	if cfg.paths["e"] {
		// The agent publishes the backend "from behind NAT" (the same
		// machine here); clients reach it through forward and the gateway.
		if _, err := amp("expose", exposingRe, "expose", "--server", b.serve, "--route", reverseName+"="+b.backend,
			"--ca", ca, "--cert", cliCert, "--key", cliKey); err != nil {
			return nil, err
		}
		fwdRev, err := amp("forward-rev", forwardingRe, "forward", "--server", b.serve, "--protocol", reverseName,
			"--listen", "127.0.0.1:0", "--ca", ca, "--cert", cliCert, "--key", cliKey)
		if err != nil {
			return nil, err
		}
		b.paths = append(b.paths, path{"e", "reverse: ampmux forward → serve → ampmux expose → backend (TLS, client certs)", fwdRev,
			[]*proc{procOf["forward-rev"], procOf["serve"], procOf["expose"]}})
	}
	if _, err := os.Stat("/usr/sbin/sshd"); cfg.paths["f"] && err != nil {
		cfg.logf("path f skipped: no /usr/sbin/sshd (apt-get install -y openssh-server)")
	} else if cfg.paths["f"] {
		addr, ps2, err := startSSHReverse(ctx, ps, tmp, b.backend)
		if err != nil {
			return nil, fmt.Errorf("ssh -R (path f; --paths without f skips it): %w", err)
		}
		b.cmds = append(b.cmds, "sshd -D -e -f sshd_config (loopback, generated keys)", "ssh -N -R 127.0.0.1:0:"+b.backend+" root@127.0.0.1")
		b.paths = append(b.paths, path{"f", "reverse: OpenSSH remote forwarding, ssh -N -R (reference contender)", addr, ps2})
	}
	b.paths = append(b.paths, path{"d", "direct to the backend (ceiling)", b.backend, nil})
	b.paths = slices.DeleteFunc(b.paths, func(p path) bool { return !cfg.paths[p.key] })
	if len(b.paths) == 0 {
		return nil, errors.New("no path to measure")
	}
	if b.clTLS, err = clientTLSConfig(ca, cliCert, cliKey, b.serve); err != nil {
		return nil, err
	}
	return b, nil
}

// startSSHReverse runs a loopback sshd with generated keys and an ssh -N
// -R that publishes backend on a port sshd picks; it returns that address
// and the processes that carry the bytes (sshd's session child is not
// among them: its CPU is not counted).
func startSSHReverse(ctx context.Context, ps *procs, tmp, backend string) (string, []*proc, error) {
	dir := filepath.Join(tmp, "ssh")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", nil, err
	}
	os.MkdirAll("/run/sshd", 0o755)
	for _, k := range []string{"host", "id"} {
		if _, err := runCmd(ctx, "", "ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", filepath.Join(dir, k)); err != nil {
			return "", nil, err
		}
	}
	pub, err := os.ReadFile(filepath.Join(dir, "id.pub"))
	if err != nil {
		return "", nil, err
	}
	os.WriteFile(filepath.Join(dir, "authorized_keys"), pub, 0o600)
	conf := fmt.Sprintf("Port 0\nListenAddress 127.0.0.1\nHostKey %s\nAuthorizedKeysFile %s\nPidFile %s\nUsePAM no\nStrictModes no\nPasswordAuthentication no\nPermitRootLogin prohibit-password\nAllowTcpForwarding yes\n",
		filepath.Join(dir, "host"), filepath.Join(dir, "authorized_keys"), filepath.Join(dir, "sshd.pid"))
	// Port 0 is refused by sshd: take a free port, as for sslh.
	port, err := freePort()
	if err != nil {
		return "", nil, err
	}
	_, p, _ := net.SplitHostPort(port)
	conf = strings.Replace(conf, "Port 0", "Port "+p, 1)
	cfgPath := filepath.Join(dir, "sshd_config")
	if err := os.WriteFile(cfgPath, []byte(conf), 0o600); err != nil {
		return "", nil, err
	}
	sshd, _, err := ps.start(ctx, "sshd", sshdRe, nil, "sh", "-c", "exec /usr/sbin/sshd -D -e -f "+cfgPath+" 2>&1")
	if err != nil {
		return "", nil, err
	}
	ssh, rport, err := ps.start(ctx, "ssh-R", sshRemoteRe, nil, "sh", "-c", "exec ssh -N -p "+p+" -i "+filepath.Join(dir, "id")+
		" -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o BatchMode=yes -o ExitOnForwardFailure=yes"+
		" -R 127.0.0.1:0:"+backend+" root@127.0.0.1 2>&1")
	if err != nil {
		return "", nil, err
	}
	return "127.0.0.1:" + rport, []*proc{ssh, sshd}, nil
}

// startSSLH runs sslh in the foreground (-f), numeric (-n), forwarding
// anything (--anyprot) to the backend. As root it runs as root: 1.20 needs
// no --user in the foreground. It cannot listen on port 0 and report the
// port, so it gets a port found free just before, and another if it loses
// that one to a race.
func startSSLH(ctx context.Context, ps *procs, bin, backend string) (*proc, string, error) {
	var lastErr error
	for attempt := range 3 {
		addr, err := freePort()
		if err != nil {
			return nil, "", err
		}
		p, _, err := ps.start(ctx, fmt.Sprintf("sslh-%d", attempt), nil, nil, bin, "-f", "-n", "-p", addr, "--anyprot", backend)
		if err != nil {
			return nil, "", err
		}
		if lastErr = waitListening(ctx, p, addr); lastErr == nil {
			return p, addr, nil
		}
		ps.Kill(p)
	}
	return nil, "", lastErr
}
