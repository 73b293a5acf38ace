package main

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"os/signal"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/ampmux/ampmux/amp"
	"github.com/ampmux/ampmux/amp/box"
	"github.com/ampmux/ampmux/amp/conn"
	"github.com/ampmux/ampmux/amp/switching"
	"github.com/ampmux/ampmux/httpfallback"
	"github.com/ampmux/ampmux/internal/demo"
	"github.com/ampmux/ampmux/internal/tunnel"
	"github.com/ampmux/ampmux/mux"
	"github.com/pires/go-proxyproto"
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
	cfg, err := loadServeConfig(e, args)
	if err != nil {
		return err
	}
	// SIGHUP reads the file again, under the same command line.
	cfg.reload = func() (*serveConfig, error) { return loadServeConfig(e, args) }
	log, q := newQueuedLogger(e.stderr, cfg.LogFormat)
	defer q.Close()
	ctx := e.ctx
	if ctx == nil {
		ctx = context.Background()
	}
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	return serve(ctx, cfg, log, e.stdout)
}

// loadServeConfig builds serve's configuration: the defaults, the file
// (--config), then the command line over them, checked.
func loadServeConfig(e *env, args []string) (*serveConfig, error) {
	c := commands["serve"]
	cfg := defaultServeConfig()
	var routes, exposes multiFlag
	var configFile string
	fs := c.newFlags(e)
	serveFlags(fs, &cfg, &routes, &exposes, &configFile)
	if err := parse(fs, args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, usagef("unexpected argument %q", fs.Arg(0))
	}
	if configFile != "" {
		// The file over the defaults, then the command line over the file.
		cfg, routes, exposes = defaultServeConfig(), nil, nil
		if err := loadConfigFile(configFile, &cfg); err != nil {
			return nil, err
		}
		fs = c.newFlags(e)
		serveFlags(fs, &cfg, &routes, &exposes, &configFile)
		if err := parse(fs, args); err != nil {
			return nil, err
		}
	}
	for _, r := range routes {
		rc, err := parseRouteFlag(r)
		if err != nil {
			return nil, err
		}
		cfg.Routes = append(cfg.Routes, rc)
	}
	for _, x := range exposes {
		xc, err := parseExposeFlag(x)
		if err != nil {
			return nil, err
		}
		cfg.Expose = append(cfg.Expose, xc)
	}
	exposed, err := exposedRoutes(cfg.Expose)
	if err != nil {
		return nil, usagef("%v", err)
	}
	if len(exposed) > 0 && cfg.ClientCA == "" {
		return nil, usagef("--expose needs --client-ca: publishers are known by their certificates")
	}
	cfg.Routes = append(cfg.Routes, exposed...)
	for _, name := range cfg.SendProxy {
		i := slices.IndexFunc(cfg.Routes, func(r routeConfig) bool { return r.Name == name })
		if i < 0 {
			return nil, usagef("--send-proxy %q: no such route", name)
		}
		cfg.Routes[i].SendProxy = "v2"
	}
	if err := checkServeConfig(&cfg); err != nil {
		return nil, err
	}
	if cfg.Demo {
		// Listed on the status page like the others.
		cfg.Routes = append(cfg.Routes, routeConfig{Name: "echo", Backend: demoEcho})
	}
	return &cfg, nil
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
	if len(cfg.Routes) > 0 && cfg.ClientCA == "" && !cfg.AllowAnonymous {
		return usagef("routes need client identities: give --client-ca FILE (clients then need a certificate it signed), or --allow-anonymous to let anyone who reaches the port use them")
	}
	if cfg.Admin != "" {
		if _, _, err := net.SplitHostPort(cfg.Admin); err != nil {
			return usagef("--admin %q is not HOST:PORT", cfg.Admin)
		}
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
		if len(r.AllowedNames) > 0 && cfg.ClientCA == "" {
			return usagef("route %q has allowed_names, which need --client-ca to verify the names", r.Name)
		}
		if r.IdleTimeout < 0 {
			return usagef("route %q: idle_timeout may not be negative", r.Name)
		}
		switch {
		case r.SendProxy != "" && r.SendProxy != "v1" && r.SendProxy != "v2":
			return usagef("route %q: send_proxy must be v1 or v2, not %q", r.Name, r.SendProxy)
		case r.SendProxy != "" && r.Backend == "":
			return usagef("route %q: send_proxy needs a backend the gateway dials (an exposed route's agent dials its own)", r.Name)
		}
	}
	if _, err := proxyPrefixes(cfg.ProxyFrom); err != nil {
		return err
	}
	return checkLimits(&cfg.Limits)
}

// proxyPrefixes parses --proxy-from: CIDRs, or single addresses.
func proxyPrefixes(from []string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, f := range from {
		p, err := netip.ParsePrefix(f)
		if err != nil {
			a, aerr := netip.ParseAddr(f)
			if aerr != nil {
				return nil, usagef("--proxy-from %q is not a CIDR (10.0.0.0/8) or an address", f)
			}
			p = netip.PrefixFrom(a, a.BitLen())
		}
		out = append(out, p.Masked())
	}
	return out, nil
}

// checkLimits refuses negative limits; zero means the default.
func checkLimits(l *limitsConfig) error {
	for _, v := range []struct {
		name string
		n    int64
	}{
		{"max-conns", int64(l.MaxConns)}, {"max-conns-per-source", int64(l.MaxConnsPerSource)},
		{"max-sniffing-per-source", int64(l.MaxSniffingPerSource)}, {"max-tunnels-per-route", int64(l.MaxTunnelsPerRoute)},
		{"max-tunnels-per-client", int64(l.MaxTunnelsPerClient)}, {"max-calls-per-conn", int64(l.MaxCallsPerConn)},
		{"max-box-size", int64(l.MaxBoxSize)}, {"max-fields", int64(l.MaxFields)},
		{"unauthenticated-buffer", int64(l.UnauthBuffer)}, {"write-buffer", int64(l.WriteBuffer)},
		{"write-timeout", int64(l.WriteTimeout)}, {"heartbeat", int64(l.Heartbeat)},
		{"heartbeat-timeout", int64(l.HeartbeatTimeout)}, {"half-close-timeout", int64(l.HalfCloseTimeout)},
		{"tunnel-idle-timeout", int64(l.TunnelIdleTimeout)},
	} {
		if v.n < 0 {
			return usagef("--%s may not be negative", v.name)
		}
	}
	return nil
}

// server is a running serve.
type server struct {
	cfgp    atomic.Pointer[serveConfig] // replaced whole on SIGHUP
	tlsCur  atomic.Pointer[tls.Config]  // the certificates and client CAs in force
	log     *slog.Logger
	stats   *stats
	warn    *rateLog
	limits  *tunnelLimits
	tunnels sync.WaitGroup
	mu      sync.Mutex
	open    map[net.Conn]struct{} // tunnel ends to close when the grace period is over
	// adminAddr is where --admin listens, once it does.
	adminAddr string
	// exposures are the routes agents publish, by name (under xmu: a
	// reload replaces the map).
	xmu       sync.Mutex
	exposures map[string]*switching.Exposure
	// metrics, with --admin (nil without), and whether to write the
	// access log (a line per tunnel and per AMP connection).
	metrics   *metrics
	accessLog bool
	// setLimits puts a reloaded configuration's connection limits in
	// force, and budget is the unauthenticated buffers' (budgetSize's),
	// both the serve goroutine's.
	setLimits  func(*serveConfig)
	budget     *conn.Budget
	budgetSize byteSize
}

// muxLimits is the part of the mux's configuration a reload changes.
func muxLimits(cfg *serveConfig) mux.Config {
	return mux.Config{
		SniffTimeout:         cfg.SniffTimeout,
		MaxConns:             cfg.Limits.MaxConns,
		MaxConnsPerSource:    cfg.Limits.MaxConnsPerSource,
		MaxSniffingPerSource: cfg.Limits.MaxSniffingPerSource,
	}
}

// unauthBudget is the budget all AMP connections share, made again only
// when its size changes.
func (s *server) unauthBudget(n byteSize) *conn.Budget {
	if s.budget == nil || n != s.budgetSize {
		s.budget, s.budgetSize = conn.NewBudget(int64(n)), n
	}
	return s.budget
}

func serve(ctx context.Context, cfg *serveConfig, log *slog.Logger, stdout io.Writer) error {
	warn := newRateLog(log)
	s := &server{log: log, stats: newStats(), warn: warn, open: map[net.Conn]struct{}{},
		limits: newTunnelLimits(cfg.Limits.MaxTunnelsPerRoute, cfg.Limits.MaxTunnelsPerClient, warn)}
	s.cfgp.Store(cfg)
	s.stats.limits = s.limits
	cur, err := tlsConfigFor(cfg)
	if err != nil {
		return err
	}
	var tlsCfg *tls.Config
	if cur != nil {
		s.tlsCur.Store(cur)
		// Each handshake takes the configuration in force (SIGHUP).
		tlsCfg = &tls.Config{MinVersion: tls.VersionTLS12, GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			return s.tlsCur.Load(), nil
		}}
	}
	reg := switching.NewRegistry()
	watchCtx, stopWatch := context.WithCancel(ctx)
	defer stopWatch()
	s.applyRoutes(watchCtx, reg, nil, cfg)
	s.stats.exposure = func(route string) (string, int) {
		x := s.exposure(route)
		if x == nil {
			return "", 0
		}
		name, _ := x.Publisher()
		return name, x.Standby()
	}
	ampMux := amp.NewMux()
	if cfg.Demo {
		demo.RegisterPublic(ampMux)
		reg.Register("echo", s.routeHandler(routeConfig{Name: "echo"}), s.policy(routeConfig{Name: "echo"}))
	}
	reg.Install(ampMux)
	l, addrs, err := listenAll(cfg.Listen)
	if err != nil {
		return err
	}
	listen := l.Addr().String()
	if cfg.Admin != "" {
		s.metrics = newMetrics(s, listen)
	}
	s.accessLog = !cfg.NoAccessLog
	s.warnInsecure(reg, tlsCfg, listen)
	handler, err := s.httpHandler(listen)
	if err != nil {
		l.Close()
		return err
	}
	admin, err := s.startAdmin(listen)
	if err != nil {
		l.Close()
		return err
	}
	defer admin.Close()
	hs := httpfallback.Server(handler)
	hs.ErrorLog = slog.NewLogLogger(log.Handler(), slog.LevelDebug)
	proxyFrom, _ := proxyPrefixes(cfg.ProxyFrom) // checked by checkServeConfig
	amps := &conn.Server{Config: s.connConfig(ampMux, tlsCfg), ConnState: s.ampConnState()}
	mc := muxLimits(cfg)
	mc.ProxyFrom, mc.Logger, mc.OnMatch, mc.OnSniffed = proxyFrom, log, s.stats.onMatch, s.onSniffed()
	mc.HTTP, mc.AMP = hs, amps
	m := mux.New(l, mc)
	s.setLimits = func(cfg *serveConfig) {
		m.SetLimits(muxLimits(cfg))
		amps.SetConfig(s.connConfig(ampMux, tlsCfg))
	}
	s.stats.refusals = func(r map[string]int64) {
		ms := m.Stats()
		r["max_sniffing_per_source"] = ms.EvictedPerSource
		r["max_sniffing"] = ms.EvictedGlobal
		r["max_conns_per_source"] = ms.RefusedPerSource
		r["max_conns"] = ms.RefusedTotal
		r["sniff_deadline_shortened"] = ms.DeadlinesShortened
		r["proxy_header"] = ms.ProxyRefused
	}
	go s.stats.history.record(watchCtx, s.stats, s.conf)
	served := make(chan error, 1)
	go func() { served <- m.Serve() }()
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	log.Info("ampmux serving", "listen", addrs, "version", versionString(), "tls", tlsCfg != nil,
		"client_ca", cfg.ClientCA != "", "routes", reg.Names(), "http", httpMode(cfg))
	for _, a := range addrs {
		fmt.Fprintf(stdout, "listening on %s\n", a)
	}
	if s.adminAddr != "" {
		fmt.Fprintf(stdout, "admin on %s\n", s.adminAddr)
	}

	for waiting := true; waiting; {
		select {
		case err := <-served:
			return err
		case <-hup:
			s.reload(watchCtx, reg)
		case <-ctx.Done():
			waiting = false
		}
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

// watchPublisher logs each change of an exposed route's publisher.
func (s *server) watchPublisher(ctx context.Context, x *switching.Exposure) {
	was := ""
	for {
		ch := x.Changed()
		name, ok := x.Publisher()
		switch {
		case ok && name != was:
			s.log.Info("route published", "route", x.Name(), "publisher", name)
			s.stats.publishes.Add(1)
			s.stats.route(x.Name()).publishes.Add(1)
		case !ok && was != "":
			s.log.Warn("publisher gone: route unavailable until it reconnects", "route", x.Name(), "publisher", was)
			s.stats.route(x.Name()).losses.Add(1)
		}
		was = name
		select {
		case <-ch:
		case <-ctx.Done():
			return
		}
	}
}

// connConfig is the AMP side of the shared port, with serve's limits.
func (s *server) connConfig(h *amp.Mux, tlsCfg *tls.Config) conn.Config {
	l := &s.conf().Limits
	var onTLS func(*conn.Conn, error)
	if s.metrics != nil {
		onTLS = s.metrics.onTLS
	}
	return conn.Config{
		OnTLS:             onTLS,
		Handler:           newLocator(h, s.stats, s.metrics),
		TLS:               tlsCfg,
		Logger:            s.log,
		MaxBoxSize:        int(l.MaxBoxSize),
		MaxFields:         l.MaxFields,
		Budget:            s.unauthBudget(l.UnauthBuffer),
		MaxHandlers:       l.MaxCallsPerConn,
		MaxQueuedCommands: l.MaxCallsPerConn,
		MaxWriteQueue:     int(l.WriteBuffer),
		MaxWriteBuffer:    max(int(l.WriteBuffer)/4, 64<<10),
		WriteTimeout:      zeroIsNever(l.WriteTimeout),
		Heartbeat:         l.Heartbeat,
		HeartbeatTimeout:  l.HeartbeatTimeout,
		OnError:           s.connEnded,
	}
}

// zeroIsNever maps serve's "0: never" onto conn's "negative: no limit".
func zeroIsNever(d time.Duration) time.Duration {
	if d == 0 {
		return -1
	}
	return d
}

// connLimits are the limits whose hit ends an AMP connection, by the
// name status.json counts them under.
var connLimits = [...]struct {
	name string
	err  error
}{
	{"max_box_size", box.ErrBoxTooLarge},
	{"max_fields", box.ErrTooManyFields},
	{"unauthenticated_buffer", conn.ErrBufferBudget},
	{"write_buffer", conn.ErrWriteQueueFull},
	{"write_timeout", conn.ErrWriteTimeout},
	{"heartbeat_timeout", conn.ErrHeartbeatTimeout},
}

// connEnded counts the AMP connections a limit closed (conn logs each).
func (s *server) connEnded(_ *conn.Conn, err error) {
	if err == nil {
		return
	}
	for i, l := range connLimits {
		if errors.Is(err, l.err) {
			s.stats.connLimits[i].Add(1)
			return
		}
	}
}

// warnInsecure says at start what an operator opted out of.
func (s *server) warnInsecure(reg *switching.Registry, tlsCfg *tls.Config, listen string) {
	cfg := s.conf()
	if cfg.Demo {
		s.log.Warn("demo mode: the echo route is anonymous and the status page is on the shared port; meant for local checks", "listen", listen)
		if ap, err := netip.ParseAddrPort(listen); err == nil && !ap.Addr().IsLoopback() {
			s.log.Warn("demo mode on a non-loopback address: anyone who reaches it sees the status page and may use the echo route", "listen", listen)
		}
	}
	if cfg.AllowAnonymous && len(reg.Names()) > 0 {
		s.log.Warn("routes are open to clients without a certificate (--allow-anonymous): anyone who reaches the port reaches their backends", "routes", reg.Names())
	}
	if cfg.AllowPlaintext {
		s.log.Warn("tunnels may run without TLS (--allow-plaintext): their traffic crosses the network in the clear")
	}
	for _, r := range cfg.Routes {
		if r.AllowPlaintext && !cfg.AllowPlaintext {
			s.log.Warn("route allows tunnels without TLS (allow_plaintext): its traffic crosses the network in the clear", "route", r.Name)
		}
	}
	if len(reg.Names()) > 0 && tlsCfg == nil && !cfg.AllowPlaintext {
		s.log.Warn("no --tls-cert: clients cannot StartTLS, so routes that require TLS are unreachable")
	}
	if cfg.PublicStatus && !cfg.Demo {
		s.log.Warn("the status page is public (--public-status): browsers on the shared port see routes, backends and counts")
	}
}

// startAdmin serves the operator endpoints on --admin, if given.
func (s *server) startAdmin(listen string) (io.Closer, error) {
	if s.conf().Admin == "" {
		return io.NopCloser(nil), nil
	}
	l, err := net.Listen("tcp", s.conf().Admin)
	if err != nil {
		return nil, fmt.Errorf("--admin: %w", err)
	}
	h := http.NewServeMux()
	h.Handle("/", statusHandler(s.stats, s.conf, listen))
	h.Handle("GET /metrics", s.metrics.handler())
	hs := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second,
		ErrorLog: slog.NewLogLogger(s.log.Handler(), slog.LevelDebug)}
	go hs.Serve(l)
	addr := l.Addr().String()
	if ap, err := netip.ParseAddrPort(addr); err == nil && !ap.Addr().IsLoopback() {
		s.log.Warn("the admin listener is not on loopback: whoever reaches it sees routes, backends and counts", "admin", addr)
	}
	s.log.Info("admin listening", "admin", addr)
	s.adminAddr = addr
	return hs, nil
}

func httpMode(cfg *serveConfig) string {
	switch {
	case cfg.HTTPBackend != "":
		return "proxy " + cfg.HTTPBackend
	case cfg.HTTPDir != "":
		return "static " + cfg.HTTPDir
	}
	if cfg.PublicStatus || cfg.Demo {
		return "status page"
	}
	return "blank page"
}

// tlsConfigFor loads cfg's certificate and client CAs (nil: no TLS). Its
// session tickets are its own: after a reload, a client resumes nothing
// the old client CAs verified.
func tlsConfigFor(c *serveConfig) (*tls.Config, error) {
	if c.TLSCert == "" {
		return nil, nil
	}
	pair, err := tls.LoadX509KeyPair(c.TLSCert, c.TLSKey)
	if err != nil {
		return nil, fmt.Errorf("loading --tls-cert/--tls-key: %w", err)
	}
	cfg := &tls.Config{Certificates: []tls.Certificate{pair}, MinVersion: tls.VersionTLS12}
	var key [32]byte
	rand.Read(key[:])
	cfg.SetSessionTicketKeys([][32]byte{key})
	if c.ClientCA != "" {
		pool, err := loadPool(c.ClientCA)
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
	cfg := s.conf()
	p := switching.Policy{
		AllowPlaintext: cfg.AllowPlaintext || r.AllowPlaintext,
		AllowedNames:   r.AllowedNames,
	}
	anonymous := cfg.ClientCA == "" || cfg.AllowAnonymous
	p.Authorize = func(info switching.Info) error {
		cert := info.PeerCertificate()
		if cert == nil {
			if anonymous {
				return nil
			}
			return errors.New("a client certificate signed by the --client-ca is required")
		}
		// A certificate whose name is ambiguous (several CNs) names no one.
		_, err := switching.PeerName(cert)
		return err
	}
	p.Prepare = func(ctx context.Context, info switching.Info) (any, error) {
		release, err := s.limits.acquire(r.Name, clientKey(info))
		if err != nil {
			s.stats.tunnels.failed.Add(1)
			return nil, err
		}
		// The slot joins s.tunnels here, on the connection's reader, so
		// that it is counted before m.Shutdown returns and the drain waits.
		s.tunnels.Add(1)
		var once sync.Once
		slot := &tunnelSlot{release: func() { once.Do(func() { release(); s.tunnels.Done() }) }}
		if x := s.exposure(r.Name); x != nil {
			bc, err := x.DialFor(ctx, info)
			if err != nil {
				slot.release()
				s.stats.tunnels.failed.Add(1)
				s.warn.warn("publisher:"+r.Name, "tunnel refused: no publisher", "route", r.Name, "peer", info.RemoteAddr.String(), "err", err)
				return nil, err
			}
			slot.backend = bc
			return slot, nil
		}
		if r.Backend == "" {
			return slot, nil
		}
		bc, err := dialBackend(ctx, r, info)
		if err != nil {
			slot.release()
			s.stats.tunnels.failed.Add(1)
			s.warn.warn("backend:"+r.Name, "tunnel refused: backend unavailable", "route", r.Name, "peer", info.RemoteAddr.String(), "backend", r.Backend, "err", err)
			return nil, err
		}
		slot.backend = bc
		return slot, nil
	}
	return p
}

// dialBackend connects to r's backend and, if the route says so, sends
// the PROXY header that names the client (the address the mux reports:
// a load balancer's PROXY header's, if it sent one).
func dialBackend(ctx context.Context, r routeConfig, info switching.Info) (net.Conn, error) {
	var d net.Dialer
	bc, err := d.DialContext(ctx, "tcp", r.Backend)
	if err != nil || r.SendProxy == "" {
		return bc, err
	}
	version := byte(2)
	if r.SendProxy == "v1" {
		version = 1
	}
	h := proxyproto.HeaderProxyFromAddrs(version, info.RemoteAddr, info.LocalAddr)
	if dl, ok := ctx.Deadline(); ok {
		bc.SetWriteDeadline(dl)
	}
	if _, err := h.WriteTo(bc); err != nil {
		bc.Close()
		return nil, fmt.Errorf("sending the PROXY header: %w", err)
	}
	bc.SetWriteDeadline(time.Time{})
	return bc, nil
}

// tunnelSlot is what Prepare hands the route's handler: the dialled
// backend (nil for the built-in echo) and the tunnel's place under the
// limits. Close is for a switch abandoned after Prepare.
type tunnelSlot struct {
	backend net.Conn
	release func()
}

func (t *tunnelSlot) Close() error {
	t.release()
	if t.backend != nil {
		return t.backend.Close()
	}
	return nil
}

// clientKey is who the per-client tunnel limit counts: the certificate's
// name, or the address of a client without one.
func clientKey(info switching.Info) string {
	if cert := info.PeerCertificate(); cert != nil {
		name, _ := switching.PeerName(cert) // Authorize refused those without
		return "cert:" + name
	}
	if ap, err := netip.ParseAddrPort(info.RemoteAddr.String()); err == nil {
		return "addr:" + ap.Addr().String()
	}
	return "addr:" + info.RemoteAddr.String()
}

// tunnelOptions are the route's timeouts; serve's 0 is "never", tunnel's
// is "the default".
func (s *server) tunnelOptions(route string) tunnel.Options {
	idle := s.conf().Limits.TunnelIdleTimeout
	if r := s.routeConfig(route); r != nil && r.IdleTimeout > 0 {
		idle = r.IdleTimeout
	}
	half := s.conf().Limits.HalfCloseTimeout
	if half == 0 {
		half = -1
	}
	return tunnel.Options{HalfCloseTimeout: half, IdleTimeout: idle}
}

func (s *server) routeConfig(name string) *routeConfig {
	for i := range s.conf().Routes {
		if s.conf().Routes[i].Name == name {
			return &s.conf().Routes[i]
		}
	}
	return nil
}

// routeHandler pipes a switched connection to the backend Prepare dialed
// (or echoes it, for --demo's echo).
func (s *server) routeHandler(r routeConfig) switching.Handler {
	return func(c net.Conn, info switching.Info) {
		slot := info.State.(*tunnelSlot)
		defer slot.release()
		s.pipe(r.Name, c, slot.backend, info)
	}
}

func (s *server) pipe(route string, client, backend net.Conn, info switching.Info) {
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
		who, _ = switching.PeerName(cert)
	}
	secured, start := info.TLS != nil, time.Now()
	postLog(s.log, func(h slog.Handler) {
		r := slog.NewRecord(start, slog.LevelInfo, "tunnel opened", 0)
		r.AddAttrs(slog.String("route", route), slog.String("peer", peer), slog.String("client", who), slog.Bool("tls", secured))
		h.Handle(context.Background(), r)
	})
	st := &tunnel.Stats{}
	open := openTunnel{route: route, peer: peer, client: who, since: start}
	s.stats.track(st, open, true)
	var err error
	if backend == nil {
		err = tunnel.EchoWith(client, st, s.tunnelOptions(route))
	} else {
		err = tunnel.PipeWith(client, backend, st, s.tunnelOptions(route))
	}
	s.stats.track(st, open, false)
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
	took := time.Since(start)
	if s.metrics != nil {
		s.metrics.tunnelDur.WithLabelValues(route).Observe(took.Seconds())
	}
	if !s.accessLog {
		return
	}
	result := "ok"
	if err != nil {
		result = err.Error()
	}
	at := time.Now()
	postLog(s.log, func(h slog.Handler) {
		r := slog.NewRecord(at, slog.LevelInfo, "tunnel closed", 0)
		r.AddAttrs(slog.String("route", route), slog.String("peer", peer), slog.String("client", who),
			slog.Int64("bytes_up", up), slog.Int64("bytes_down", down),
			slog.String("duration", took.Round(time.Millisecond).String()), slog.String("result", result))
		h.Handle(context.Background(), r)
	})
}

func (s *server) onSniffed() func(mux.Class, time.Duration) {
	if s.metrics == nil {
		return nil
	}
	return s.metrics.onSniffed
}

// ampConnState writes the access log's line for each AMP connection as it
// ends: who, for how long, the AMP bytes each way, and how it ended
// (switched: its tunnel has a line of its own).
func (s *server) ampConnState() func(*conn.Conn, bool) {
	if !s.accessLog {
		return nil
	}
	return func(c *conn.Conn, active bool) {
		if active {
			return
		}
		who := ""
		if cert := c.PeerCertificate(); cert != nil {
			who, _ = switching.PeerName(cert)
		}
		_, secured := c.ConnectionState()
		in, out := c.Bytes()
		result := "closed"
		switch err := c.Err(); {
		case errors.Is(err, conn.ErrSwitched):
			result = "switched"
		case err != nil && !errors.Is(err, net.ErrClosed) && !errors.Is(err, io.EOF) && !errors.Is(err, conn.ErrConnectionLost):
			result = err.Error()
		}
		peer, at := c.RemoteAddr().String(), time.Now()
		postLog(s.log, func(h slog.Handler) {
			r := slog.NewRecord(at, slog.LevelInfo, "amp connection closed", 0)
			r.AddAttrs(slog.String("peer", peer), slog.String("client", who), slog.Bool("tls", secured),
				slog.Int64("bytes_in", in), slog.Int64("bytes_out", out),
				slog.String("duration", at.Sub(c.Opened()).Round(time.Millisecond).String()), slog.String("result", result))
			h.Handle(context.Background(), r)
		})
	}
}

func (s *server) httpHandler(listen string) (http.Handler, error) {
	switch {
	case s.conf().HTTPBackend != "":
		u, err := url.Parse(s.conf().HTTPBackend)
		if err != nil {
			return nil, usagef("--http-backend: %v", err)
		}
		h, err := httpfallback.Proxy(u)
		if err != nil {
			return nil, usagef("--http-backend: %v", err)
		}
		return h, nil
	case s.conf().HTTPDir != "":
		h, err := httpfallback.Static(s.conf().HTTPDir)
		if err != nil {
			return nil, usagef("--http-dir: %v", err)
		}
		return h, nil
	}
	if s.conf().PublicStatus || s.conf().Demo {
		return statusHandler(s.stats, s.conf, listen), nil
	}
	return blankHandler(), nil
}
