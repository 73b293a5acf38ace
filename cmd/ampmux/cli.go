package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
)

// Exit codes shared by the subcommands.
const (
	exitOK        = 0
	exitFailure   = 1 // connection failure, runtime error
	exitUsage     = 2 // bad flags or arguments
	exitRemoteErr = 3 // the peer answered with an AMP error (call)
)

// usageError is bad usage: printed as one line, exit status 2.
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

func usagef(format string, a ...any) error { return usageError{fmt.Sprintf(format, a...)} }

// exitError carries an exit status other than 1.
type exitError struct {
	code int
	err  error
}

func (e exitError) Error() string { return e.err.Error() }
func (e exitError) Unwrap() error { return e.err }

// command is one subcommand.
type command struct {
	name    string
	summary string
	usage   string // arguments after the flags, e.g. "COMMAND key=value..."
	example string
	run     func(env *env, args []string) error
}

// env is what a subcommand may touch, so that tests can run them in
// process.
type env struct {
	ctx    context.Context // nil: context.Background(); ending it stops servers
	stdin  io.Reader
	stdout io.Writer
	stderr io.Writer
}

// newFlags makes a FlagSet whose -h/--help prints the summary, the flags
// and an example, and whose errors are one line.
func (c *command) newFlags(e *env) *flag.FlagSet {
	fs := flag.NewFlagSet("ampmux "+c.name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {
		w := e.stdout
		fmt.Fprintf(w, "Usage: ampmux %s [flags] %s\n\n%s\n\nFlags:\n", c.name, c.usage, c.summary)
		fs.SetOutput(w)
		fs.PrintDefaults()
		fs.SetOutput(io.Discard)
		if c.example != "" {
			fmt.Fprintf(w, "\nExample:\n%s\n", c.example)
		}
	}
	return fs
}

// parse parses flags; --help is not an error (exit 0).
func parse(fs *flag.FlagSet, args []string) error {
	// The flag package calls Usage on every error: keep it quiet and print
	// the usage only for --help (errors are one line).
	usage := fs.Usage
	fs.Usage = func() {}
	err := fs.Parse(args)
	fs.Usage = usage
	if errors.Is(err, flag.ErrHelp) {
		usage()
		return errHelp
	}
	if err != nil {
		return usageError{strings.TrimSpace(err.Error())}
	}
	return nil
}

var errHelp = errors.New("help shown")

// multiFlag is a repeatable string flag.
type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, ",") }
func (m *multiFlag) Set(v string) error { *m = append(*m, v); return nil }

// tlsFlags are the client-side TLS flags of forward, connect, call and
// bench.
type tlsFlags struct {
	ca, cert, key, serverName string
	insecureSkipVerify        bool
}

func (t *tlsFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&t.ca, "ca", "", "PEM `file` of the CA that signed the server's certificate (default: the system roots)")
	fs.StringVar(&t.cert, "cert", "", "PEM `file` of a client certificate, for servers that ask for one")
	fs.StringVar(&t.key, "key", "", "PEM `file` of the client certificate's key")
	fs.StringVar(&t.serverName, "server-name", "", "`name` to verify the server's certificate against (default: the host of --server)")
	fs.BoolVar(&t.insecureSkipVerify, "insecure-skip-verify", false, "do not verify the server's certificate (testing only: anyone can impersonate the server)")
}

// given reports whether any TLS flag was set.
func (t *tlsFlags) given() bool {
	return t.ca != "" || t.cert != "" || t.key != "" || t.serverName != "" || t.insecureSkipVerify
}

// config builds the client TLS config for server (HOST:PORT).
func (t *tlsFlags) config(server string) (*tls.Config, error) {
	cfg := &tls.Config{ServerName: t.serverName, InsecureSkipVerify: t.insecureSkipVerify, MinVersion: tls.VersionTLS12,
		// forward's tunnels, and expose's standbys, resume the session.
		ClientSessionCache: tls.NewLRUClientSessionCache(16)}
	if t.ca != "" {
		pool, err := loadPool(t.ca)
		if err != nil {
			return nil, err
		}
		cfg.RootCAs = pool
	}
	if (t.cert == "") != (t.key == "") {
		return nil, usagef("--cert and --key go together")
	}
	if t.cert != "" {
		pair, err := tls.LoadX509KeyPair(t.cert, t.key)
		if err != nil {
			return nil, fmt.Errorf("loading client certificate: %w", err)
		}
		cfg.Certificates = []tls.Certificate{pair}
	}
	if cfg.ServerName == "" {
		host := server
		if i := strings.LastIndex(server, ":"); i >= 0 {
			host = server[:i]
		}
		cfg.ServerName = strings.Trim(host, "[]")
	}
	return cfg, nil
}

func loadPool(file string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("%s holds no PEM certificate", file)
	}
	return pool, nil
}
