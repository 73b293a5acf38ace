// Command tunnel measures ampmux's tunnels against a plain Go TLS proxy,
// sslh and a direct connection, each piece a process of its own on
// loopback:
//
//	cd bench && go run ./tunnel [--quick] [--runs 3]
//
// It builds the ampmux binary from the repository (go build ./cmd/ampmux
// in the repository root, with the root module's go.mod), makes a PKI
// with `ampmux cert`, starts a backend (a sink, a source and an echo, on
// one port), `ampmux serve` routing to it, `ampmux forward` in front of
// that, the two halves of a plain TLS proxy (this same program in another
// role), sslh (installed with apt-get when missing and run as root), an
// `ampmux expose` agent and ssh -R (the reverse paths); then it measures,
// in every run and interleaved:
//
//   - bulk throughput, one way (upload to the sink) and request/response
//     (download from the source), through forward → serve, the TLS proxy
//     pair, sslh (plain TCP: no TLS inside) and directly, with the CPU
//     time the processes in between spent per GB;
//   - connection setup: connect until a 1-byte echo is back, p50/p99 over
//     sequential connections, on the same four paths, and the library path
//     alone: switching.Dial (connect + StartTLS + ProtocolSwitch) against
//     crypto/tls (connect + handshake), with the same certificates.
//
// It prints medians over the runs as a Markdown section (AMP calls are
// bench/report's: ampmux bench against serve --demo is a contender there). Every process it starts is killed when it ends,
// on error too; a wrong byte count or a corrupted byte fails the run.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
)

type config struct {
	quick       bool
	runs        int
	size        int64           // bytes per bulk transfer
	conns       int             // sequential connections per run, per path
	sslh        string          // "select", "fork" or "none"
	installSSLH bool            // apt-get install sslh when missing (as root)
	keep        bool            // keep the temporary directory (logs)
	paths       map[string]bool // path keys to measure (a, b, c, d)
	parts       map[string]bool // measurements to take (see allParts)
	progress    io.Writer       // progress lines; nil: none
	command     string          // how the run was started, for the report

	// self and selfArgs start this program in a role (the backend, the
	// TLS proxy halves); roleEnv=ROLE is added to the environment.
	self     string
	selfArgs []string
}

func main() {
	if role := os.Getenv(roleEnv); role != "" {
		os.Exit(roleMain(role, os.Args[1:]))
	}
	cfg, err := parseFlags(os.Args[1:])
	if errors.Is(err, flag.ErrHelp) {
		return
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "tunnel:", err)
		os.Exit(2)
	}
	self, err := os.Executable()
	if err != nil {
		fmt.Fprintln(os.Stderr, "tunnel:", err)
		os.Exit(1)
	}
	cfg.self = self
	cfg.progress = os.Stderr
	cfg.installSSLH = true
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err = run(ctx, cfg, os.Stdout)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "tunnel: FAILED:", err)
		os.Exit(1)
	}
}

func parseFlags(args []string) (config, error) {
	fs := flag.NewFlagSet("tunnel", flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: cd bench && go run ./tunnel [flags]\n\nTunnel throughput and setup time: ampmux forward → serve against a plain Go TLS\nproxy, sslh, a direct connection, and ssh -R for the reverse tunnels.\nWrap long runs in: flock /tmp/ampmux-bench.lock go run ./tunnel ...\n\nFlags:\n")
		fs.PrintDefaults()
	}
	quick := fs.Bool("quick", false, "one run, 64 MiB transfers, 1 s of connections/s")
	runs := fs.Int("runs", 3, "runs to take the median of (1 with --quick unless given)")
	sizeMiB := fs.Int("size-mib", 256, "MiB per bulk transfer (64 with --quick unless given)")
	conns := fs.Int("conns", 200, "sequential connections per path and run, for setup times")
	sslh := fs.String("sslh", "select", "sslh flavour: select (sslh-select), fork (sslh, i.e. sslh-fork) or none")
	keep := fs.Bool("keep", false, "keep the temporary directory with the processes' logs")
	paths := fs.String("paths", "a,b,c,d,e,f", "paths to measure: a (forward → serve), b (TLS proxy), c (sslh), d (direct), e (reverse: forward → serve → expose), f (ssh -N -R)")
	parts := fs.String("parts", strings.Join(allParts, ","), "measurements to take")
	if err := fs.Parse(args); err != nil {
		return config{}, err
	}
	if fs.NArg() > 0 {
		return config{}, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	cfg := config{quick: *quick, runs: *runs, size: int64(*sizeMiB) << 20, conns: *conns, sslh: *sslh, keep: *keep}
	if *quick {
		if !set["runs"] {
			cfg.runs = 1
		}
		if !set["size-mib"] {
			cfg.size = 64 << 20
		}
	}
	var err error
	if cfg.paths, err = keySet("--paths", *paths, []string{"a", "b", "c", "d", "e", "f"}); err != nil {
		return config{}, err
	}
	if cfg.parts, err = keySet("--parts", *parts, allParts); err != nil {
		return config{}, err
	}
	switch {
	case cfg.runs < 1:
		return config{}, errors.New("--runs must be at least 1")
	case cfg.size < 1:
		return config{}, errors.New("--size-mib must be at least 1")
	case cfg.conns < 1:
		return config{}, errors.New("--conns must be at least 1")
	case cfg.sslh != "select" && cfg.sslh != "fork" && cfg.sslh != "none":
		return config{}, fmt.Errorf("--sslh must be select, fork or none, not %q", cfg.sslh)
	}
	cfg.command = "go run ./tunnel"
	if len(args) > 0 {
		cfg.command += " " + strings.Join(args, " ")
	}
	return cfg, nil
}

// The measurements --parts chooses from.
var allParts = []string{"upload", "download", "setup", "rate", "library"}

// keySet parses a comma-separated subset of known.
func keySet(flagName, list string, known []string) (map[string]bool, error) {
	set := map[string]bool{}
	for _, k := range strings.Split(list, ",") {
		k = strings.TrimSpace(k)
		if !slices.Contains(known, k) {
			return nil, fmt.Errorf("%s: %q is not one of %s", flagName, k, strings.Join(known, ", "))
		}
		set[k] = true
	}
	return set, nil
}

func (cfg *config) logf(format string, a ...any) {
	if cfg.progress != nil {
		fmt.Fprintf(cfg.progress, format+"\n", a...)
	}
}
