package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/ampmux/ampmux/amp"
	"github.com/ampmux/ampmux/amp/conn"
	"github.com/ampmux/ampmux/amp/switching"
	"github.com/ampmux/ampmux/httpfallback"
	"github.com/ampmux/ampmux/internal/demo"
	"github.com/ampmux/ampmux/internal/tunnel"
	"github.com/ampmux/ampmux/mux"
)

func init() {
	register(&command{
		name:    "serve",
		summary: "Serve one port: HTTP for browsers, and for AMP clients StartTLS and tunnels to inner services.",
		example: `  ampmux cert --out ./pki
  ampmux serve --listen 0.0.0.0:7443 --tls-cert pki/server.pem --tls-key pki/server-key.pem \
      --client-ca pki/ca.pem --route ssh=127.0.0.1:22 --http-dir ./site
  ampmux serve --demo      # Sum, Divide, Echo and an "echo" tunnel, status page at /

The default --listen is 127.0.0.1:7443 (this machine only); use 0.0.0.0:7443 or
[::]:7443 to listen on all interfaces.`,
		run: runServe,
	})
}

func runServe(e *env, args []string) error {
	c := commands["serve"]
	fs := c.newFlags(e)
	cfg := defaultServeConfig()
	var routes multiFlag
	configFile := fs.String("config", "", "YAML `file` with any of the settings below (flags override it), plus per-route allowed client names")
	fs.StringVar(&cfg.Listen, "listen", cfg.Listen, "`address` to listen on; 0.0.0.0:7443 for all interfaces")
	fs.StringVar(&cfg.TLSCert, "tls-cert", "", "PEM `file` of the server certificate: enables StartTLS")
	fs.StringVar(&cfg.TLSKey, "tls-key", "", "PEM `file` of its private key")
	fs.StringVar(&cfg.ClientCA, "client-ca", "", "PEM `file` of a CA: clients need a certificate it signed to switch to any route")
	fs.Var(&routes, "route", "inner protocol `NAME=HOST:PORT` piped to a TCP backend (repeatable)")
	fs.BoolVar(&cfg.AllowPlaintext, "allow-plaintext", false, "let clients switch to routes without TLS (insecure: tunnel traffic in the clear)")
	fs.StringVar(&cfg.HTTPBackend, "http-backend", "", "`URL` of an HTTP server to reverse-proxy browsers to")
	fs.StringVar(&cfg.HTTPDir, "http-dir", "", "`directory` of static files to serve to browsers")
	fs.BoolVar(&cfg.Demo, "demo", false, "offer the AMP commands Sum, Divide, Echo and an \"echo\" tunnel, for interop checks")
	fs.StringVar(&cfg.LogFormat, "log-format", cfg.LogFormat, "log `format`: text or json")
	fs.DurationVar(&cfg.Grace, "grace", cfg.Grace, "on SIGINT/SIGTERM, how long calls and tunnels may drain")
	fs.DurationVar(&cfg.SniffTimeout, "sniff-timeout", cfg.SniffTimeout, "how long a new connection may take to show its protocol")
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usagef("unexpected argument %q", fs.Arg(0))
	}
	if *configFile != "" {
		fileCfg := defaultServeConfig()
		if err := loadConfigFile(*configFile, &fileCfg); err != nil {
			return err
		}
		// Flags given on the command line win over the file.
		set := map[string]bool{}
		fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
		merged := fileCfg
		overlay(&merged, &cfg, set)
		cfg = merged
	}
	for _, r := range routes {
		rc, err := parseRouteFlag(r)
		if err != nil {
			return err
		}
		cfg.Routes = append(cfg.Routes, rc)
	}
	if err := checkServeConfig(&cfg); err != nil {
		return err
	}
	log, err := newLogger(e.stderr, cfg.LogFormat)
	if err != nil {
		return err
	}
	ctx := e.ctx
	if ctx == nil {
		ctx = context.Background()
	}
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	return serve(ctx, &cfg, log, e.stdout)
}

// overlay copies the flags that were set from src into dst.
func overlay(dst, src *serveConfig, set map[string]bool) {
	pick := map[string]func(){
		"listen":          func() { dst.Listen = src.Listen },
		"tls-cert":        func() { dst.TLSCert = src.TLSCert },
		"tls-key":         func() { dst.TLSKey = src.TLSKey },
		"client-ca":       func() { dst.ClientCA = src.ClientCA },
		"allow-plaintext": func() { dst.AllowPlaintext = src.AllowPlaintext },
		"http-backend":    func() { dst.HTTPBackend = src.HTTPBackend },
		"http-dir":        func() { dst.HTTPDir = src.HTTPDir },
		"demo":            func() { dst.Demo = src.Demo },
		"log-format":      func() { dst.LogFormat = src.LogFormat },
		"grace":           func() { dst.Grace = src.Grace },
		"sniff-timeout":   func() { dst.SniffTimeout = src.SniffTimeout },
	}
	for name, f := range pick {
		if set[name] {
			f()
		}
	}
}

func checkServeConfig(cfg *serveConfig) error {
	if (cfg.TLSCert == "") != (cfg.TLSKey == "") {
		return usagef("--tls-cert and --tls-key go together")
	}
	if cfg.ClientCA != "" && cfg.TLSCert == "" {
		return usagef("--client-ca needs --tls-cert and --tls-key")
	}
	if cfg.HTTPBackend != "" && cfg.HTTPDir != "" {
		return usagef("give --http-backend or --http-dir, not both")
	}
	if cfg.LogFormat != "text" && cfg.LogFormat != "json" {
		return usagef("--log-format must be text or json, not %q", cfg.LogFormat)
	}
	seen := map[string]bool{}
	for _, r := range cfg.Routes {
		if seen[r.Name] {
			return usagef("route %q given twice", r.Name)
		}
		seen[r.Name] = true
		if cfg.Demo && r.Name == "echo" {
			return usagef("route \"echo\" clashes with --demo's echo protocol")
		}
	}
	return nil
}

func newLogger(w io.Writer, format string) (*slog.Logger, error) {
	if format == "json" {
		return slog.New(slog.NewJSONHandler(w, nil)), nil
	}
	return slog.New(slog.NewTextHandler(w, nil)), nil
}

// server is a running serve.
type server struct {
	cfg     *serveConfig
	log     *slog.Logger
	stats   *stats
	tunnels sync.WaitGroup
	mu      sync.Mutex
	open    map[net.Conn]struct{} // tunnel ends to close when the grace period is over
}

func serve(ctx context.Context, cfg *serveConfig, log *slog.Logger, stdout io.Writer) error {
	s := &server{cfg: cfg, log: log, stats: newStats(), open: map[net.Conn]struct{}{}}
	tlsCfg, err := s.tlsConfig()
	if err != nil {
		return err
	}
	reg := switching.NewRegistry()
	for _, r := range cfg.Routes {
		reg.Register(r.Name, s.routeHandler(r), s.policy(r))
	}
	ampMux := amp.NewMux()
	if cfg.Demo {
		demo.RegisterPublic(ampMux)
		reg.Register("echo", s.echoHandler, s.policy(routeConfig{Name: "echo"}))
		// Listed on the status page like the others.
		cfg.Routes = append(cfg.Routes, routeConfig{Name: "echo", Backend: "(built-in echo)"})
	}
	reg.Install(ampMux)
	if len(reg.Names()) > 0 && tlsCfg == nil && !cfg.AllowPlaintext {
		log.Warn("no --tls-cert: clients cannot StartTLS, so routes that require TLS are unreachable")
	}
	l, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return err
	}
	listen := l.Addr().String()
	handler, err := s.httpHandler(listen)
	if err != nil {
		l.Close()
		return err
	}
	hs := httpfallback.Server(handler)
	hs.ErrorLog = slog.NewLogLogger(log.Handler(), slog.LevelDebug)
	m := mux.New(l, mux.Config{
		SniffTimeout: cfg.SniffTimeout,
		Logger:       log,
		OnMatch:      s.stats.onMatch,
		HTTP:         hs,
		AMP: &conn.Server{Config: conn.Config{Handler: countingLocator{ampMux, s.stats},
			TLS: tlsCfg, Logger: log,
		}},
	})
	served := make(chan error, 1)
	go func() { served <- m.Serve() }()
	log.Info("ampmux serving", "listen", listen, "version", versionString(), "tls", tlsCfg != nil,
		"client_ca", cfg.ClientCA != "", "routes", reg.Names(), "http", httpMode(cfg))
	fmt.Fprintf(stdout, "listening on %s\n", listen)

	select {
	case err := <-served:
		return err
	case <-ctx.Done():
	}
	log.Info("shutting down", "grace", cfg.Grace.String())
	deadline := time.Now().Add(cfg.Grace)
	sctx, cancel := context.WithDeadline(context.Background(), deadline)
	defer cancel()
	if err := m.Shutdown(sctx); err != nil {
		log.Warn("calls still running at the end of the grace period; closing", "err", err)
		m.Close()
	}
	<-served
	drained := make(chan struct{})
	go func() { s.tunnels.Wait(); close(drained) }()
	select {
	case <-drained:
	case <-sctx.Done():
		s.mu.Lock()
		n := len(s.open)
		for c := range s.open {
			c.Close()
		}
		s.mu.Unlock()
		log.Warn("tunnels still open at the end of the grace period; closed", "count", n/2)
		<-drained
	}
	log.Info("stopped")
	return nil
}

func httpMode(cfg *serveConfig) string {
	switch {
	case cfg.HTTPBackend != "":
		return "proxy " + cfg.HTTPBackend
	case cfg.HTTPDir != "":
		return "static " + cfg.HTTPDir
	}
	return "status page"
}

func (s *server) tlsConfig() (*tls.Config, error) {
	if s.cfg.TLSCert == "" {
		return nil, nil
	}
	pair, err := tls.LoadX509KeyPair(s.cfg.TLSCert, s.cfg.TLSKey)
	if err != nil {
		return nil, fmt.Errorf("loading --tls-cert/--tls-key: %w", err)
	}
	cfg := &tls.Config{Certificates: []tls.Certificate{pair}, MinVersion: tls.VersionTLS12}
	if s.cfg.ClientCA != "" {
		pool, err := loadPool(s.cfg.ClientCA)
		if err != nil {
			return nil, fmt.Errorf("loading --client-ca: %w", err)
		}
		cfg.ClientCAs = pool
		// Verified if given; switching then insists on one (policy), so
		// that plain AMP calls still work for clients without one.
		cfg.ClientAuth = tls.VerifyClientCertIfGiven
	}
	return cfg, nil
}

func (s *server) policy(r routeConfig) switching.Policy {
	p := switching.Policy{
		AllowPlaintext: s.cfg.AllowPlaintext || r.AllowPlaintext,
		AllowedNames:   r.AllowedNames,
	}
	if s.cfg.ClientCA != "" {
		p.Authorize = func(info switching.Info) error {
			if info.PeerCertificate() == nil {
				return errors.New("a client certificate signed by the --client-ca is required")
			}
			return nil
		}
	}
	if r.Backend != "" {
		p.Prepare = func(ctx context.Context, info switching.Info) (any, error) {
			var d net.Dialer
			bc, err := d.DialContext(ctx, "tcp", r.Backend)
			if err != nil {
				s.stats.tunnels.failed.Add(1)
				s.log.Warn("tunnel refused: backend unavailable", "route", r.Name, "peer", info.RemoteAddr.String(), "backend", r.Backend, "err", err)
				return nil, err
			}
			return bc, nil
		}
	}
	return p
}

// routeHandler pipes a switched connection to the backend Prepare dialed.
func (s *server) routeHandler(r routeConfig) switching.Handler {
	return func(c net.Conn, info switching.Info) {
		backend := info.State.(net.Conn)
		s.pipe(r.Name, c, backend, info)
	}
}

// echoHandler is --demo's inner protocol: it echoes bytes until the
// client half-closes, then closes.
func (s *server) echoHandler(c net.Conn, info switching.Info) {
	s.pipe("echo", c, nil, info)
}

func (s *server) pipe(route string, client, backend net.Conn, info switching.Info) {
	s.tunnels.Add(1)
	defer s.tunnels.Done()
	s.mu.Lock()
	s.open[client] = struct{}{}
	if backend != nil {
		s.open[backend] = struct{}{}
	}
	s.mu.Unlock()
	rs := s.stats.route(route)
	rs.open.Add(1)
	rs.total.Add(1)
	s.stats.tunnels.open.Add(1)
	s.stats.tunnels.total.Add(1)
	peer := info.RemoteAddr.String()
	who := ""
	if cert := info.PeerCertificate(); cert != nil {
		who = cert.Subject.CommonName
	}
	s.log.Info("tunnel opened", "route", route, "peer", peer, "client", who, "tls", info.TLS != nil)
	start := time.Now()
	st := &tunnel.Stats{}
	s.stats.track(st, route, true)
	var err error
	if backend == nil {
		err = tunnel.Echo(client, st)
	} else {
		err = tunnel.Pipe(client, backend, st)
	}
	s.stats.track(st, route, false)
	up, down := st.AToB.Load(), st.BToA.Load()
	rs.open.Add(-1)
	rs.up.Add(up)
	rs.down.Add(down)
	s.stats.tunnels.open.Add(-1)
	s.stats.tunnels.up.Add(up)
	s.stats.tunnels.down.Add(down)
	s.mu.Lock()
	delete(s.open, client)
	if backend != nil {
		delete(s.open, backend)
	}
	s.mu.Unlock()
	attrs := []any{"route", route, "peer", peer, "client", who, "bytes_up", up, "bytes_down", down,
		"duration", time.Since(start).Round(time.Millisecond).String()}
	if err != nil {
		attrs = append(attrs, "err", err)
	}
	s.log.Info("tunnel closed", attrs...)
}

func (s *server) httpHandler(listen string) (http.Handler, error) {
	switch {
	case s.cfg.HTTPBackend != "":
		u, err := url.Parse(s.cfg.HTTPBackend)
		if err != nil {
			return nil, usagef("--http-backend: %v", err)
		}
		h, err := httpfallback.Proxy(u)
		if err != nil {
			return nil, usagef("--http-backend: %v", err)
		}
		return h, nil
	case s.cfg.HTTPDir != "":
		h, err := httpfallback.Static(s.cfg.HTTPDir)
		if err != nil {
			return nil, usagef("--http-dir: %v", err)
		}
		return h, nil
	}
	return statusHandler(s.stats, s.cfg, listen), nil
}
