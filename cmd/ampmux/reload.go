package main

import (
	"context"
	"reflect"
	"slices"

	"github.com/ampmux/ampmux/amp/switching"
)

// demoEcho is the status page's backend for --demo's echo route.
const demoEcho = "(built-in echo)"

// conf is the configuration in force.
func (s *server) conf() *serveConfig { return s.cfgp.Load() }

// exposure is the exposed route name's, or nil.
func (s *server) exposure(name string) *switching.Exposure {
	s.xmu.Lock()
	defer s.xmu.Unlock()
	return s.exposures[name]
}

// applyRoutes makes reg serve cfg's routes: each registered again (its
// new backend, names and timeouts; tunnels open go on as they were),
// those gone from old unregistered, an exposed route's publishing kept
// while its publishers are unchanged (its agent stays connected) and
// started again otherwise.
func (s *server) applyRoutes(ctx context.Context, reg *switching.Registry, old, cfg *serveConfig) {
	s.xmu.Lock()
	defer s.xmu.Unlock()
	before := map[string]routeConfig{}
	if old != nil {
		for _, r := range old.Routes {
			before[r.Name] = r
		}
	}
	next := map[string]*switching.Exposure{}
	for _, r := range cfg.Routes {
		if cfg.Demo && r.Backend == demoEcho {
			continue // registered once, at start
		}
		if len(r.Publishers) > 0 {
			x := s.exposures[r.Name]
			if was, ok := before[r.Name]; x == nil || !ok || !slices.Equal(was.Publishers, r.Publishers) {
				x = reg.AcceptPublishers(r.Name, r.Publishers) // closes the old one
				go s.watchPublisher(ctx, x)
			}
			next[r.Name] = x
		}
		reg.Register(r.Name, s.routeHandler(r), s.policy(r))
	}
	for name, x := range s.exposures {
		if next[name] == nil {
			x.Close()
		}
	}
	for name := range before {
		if !slices.ContainsFunc(cfg.Routes, func(r routeConfig) bool { return r.Name == name }) {
			reg.Unregister(name)
		}
	}
	s.exposures = next
}

// reload reads the configuration again (SIGHUP) and puts in force what
// can change without a restart: certificates and client CAs, routes and
// exposures, and the limits (the tunnels' at once; the mux's, the
// sniffing deadline and the AMP connections' for connections accepted
// from then on). Tunnels and calls in progress go on. A configuration that
// does not load or check is refused whole, and the old one stays; what
// only a restart can change is kept as it was, and named in the log.
func (s *server) reload(ctx context.Context, reg *switching.Registry) {
	old := s.conf()
	if old.reload == nil {
		s.log.Warn("SIGHUP: nothing to reload from")
		return
	}
	cfg, err := old.reload()
	if err == nil && (cfg.TLSCert == "") != (old.TLSCert == "") {
		err = usagef("turning TLS on or off takes a restart")
	}
	if err != nil {
		s.log.Error("reload refused; the configuration in force stays", "err", err)
		return
	}
	cur, err := tlsConfigFor(cfg)
	if err != nil {
		s.log.Error("reload refused; the configuration in force stays", "err", err)
		return
	}
	var kept []string
	keep := func(name string, now, was any, set func()) {
		if !reflect.DeepEqual(now, was) {
			kept = append(kept, name)
			set()
		}
	}
	keep("listen", cfg.Listen, old.Listen, func() { cfg.Listen = old.Listen })
	keep("admin", cfg.Admin, old.Admin, func() { cfg.Admin = old.Admin })
	keep("demo", cfg.Demo, old.Demo, func() { cfg.Demo, cfg.Routes = old.Demo, withoutDemo(cfg.Routes, old) })
	keep("log_format", cfg.LogFormat, old.LogFormat, func() { cfg.LogFormat = old.LogFormat })
	keep("http_backend", cfg.HTTPBackend, old.HTTPBackend, func() { cfg.HTTPBackend = old.HTTPBackend })
	keep("http_dir", cfg.HTTPDir, old.HTTPDir, func() { cfg.HTTPDir = old.HTTPDir })
	keep("public_status", cfg.PublicStatus, old.PublicStatus, func() { cfg.PublicStatus = old.PublicStatus })
	keep("proxy_from", cfg.ProxyFrom, old.ProxyFrom, func() { cfg.ProxyFrom = old.ProxyFrom })
	keep("no_access_log", cfg.NoAccessLog, old.NoAccessLog, func() { cfg.NoAccessLog = old.NoAccessLog })
	cfg.reload = old.reload

	if cur != nil {
		s.tlsCur.Store(cur)
	}
	s.limits.setCaps(cfg.Limits.MaxTunnelsPerRoute, cfg.Limits.MaxTunnelsPerClient)
	s.cfgp.Store(cfg)
	if s.setLimits != nil {
		s.setLimits(cfg) // for connections from now on
	}
	s.applyRoutes(ctx, reg, old, cfg)
	if s.metrics != nil {
		s.metrics.setRoutes(cfg)
	}
	attrs := []any{"routes", reg.Names()}
	if len(kept) > 0 {
		attrs = append(attrs, "need_restart", kept)
	}
	s.log.Info("configuration reloaded", attrs...)
}

// withoutDemo is routes with the demo's echo as old has it (--demo
// stays as it was at start).
func withoutDemo(routes []routeConfig, old *serveConfig) []routeConfig {
	routes = slices.DeleteFunc(slices.Clone(routes), func(r routeConfig) bool { return r.Backend == demoEcho })
	if old.Demo {
		routes = append(routes, routeConfig{Name: "echo", Backend: demoEcho})
	}
	return routes
}
