package main

import "flag"

// serveFlags binds serve's flags to cfg and routes. runServe binds them
// twice: once to find --config, then over what the file set, so that the
// command line wins.
func serveFlags(fs *flag.FlagSet, cfg *serveConfig, routes, exposes *multiFlag, configFile *string) {
	fs.StringVar(configFile, "config", "", "YAML `file` with any of the settings below (flags override it; limits go under limits:), plus per-route allowed_names and idle_timeout")
	fs.Var(&listenFlag{v: &cfg.Listen}, "listen", "`address` to listen on (repeatable, or comma-separated); 0.0.0.0:7443 for all interfaces; \"systemd\" for the sockets of systemd socket activation")
	fs.StringVar(&cfg.TLSCert, "tls-cert", cfg.TLSCert, "PEM `file` of the server certificate: enables StartTLS")
	fs.StringVar(&cfg.TLSKey, "tls-key", cfg.TLSKey, "PEM `file` of its private key")
	fs.StringVar(&cfg.ClientCA, "client-ca", cfg.ClientCA, "PEM `file` of a CA: clients need a certificate it signed to switch to any route (required for routes, unless --allow-anonymous)")
	fs.Var(routes, "route", "inner protocol `NAME=HOST:PORT` piped to a TCP backend (repeatable)")
	fs.Var(exposes, "expose", "route `NAME=PUBLISHER` published by an agent (ampmux expose) whose certificate is named PUBLISHER (repeatable; needs --client-ca)")
	fs.BoolVar(&cfg.AllowAnonymous, "allow-anonymous", cfg.AllowAnonymous, "let clients without a certificate use the routes (insecure: anyone who reaches the port reaches the backends)")
	fs.BoolVar(&cfg.AllowPlaintext, "allow-plaintext", cfg.AllowPlaintext, "let clients switch to routes without TLS (insecure: tunnel traffic in the clear)")
	fs.StringVar(&cfg.HTTPBackend, "http-backend", cfg.HTTPBackend, "`URL` of an HTTP server to reverse-proxy browsers to")
	fs.StringVar(&cfg.HTTPDir, "http-dir", cfg.HTTPDir, "`directory` of static files to serve to browsers")
	fs.StringVar(&cfg.Admin, "admin", cfg.Admin, "`address` of the operator listener (status page, /status.json), such as 127.0.0.1:7444 (default: none)")
	fs.Var((*multiFlag)(&cfg.ProxyFrom), "proxy-from", "`CIDR` (or address) of a load balancer whose PROXY protocol v1/v2 headers name the client (repeatable); from anyone else a PROXY header closes the connection")
	fs.Var((*multiFlag)(&cfg.SendProxy), "send-proxy", "route `NAME` whose backend connections start with a PROXY protocol v2 header naming the client (repeatable; in YAML a route's send_proxy: v1 or v2)")
	fs.BoolVar(&cfg.PublicStatus, "public-status", cfg.PublicStatus, "also show the status page to browsers on the shared port (it names routes, backends and counts)")
	fs.BoolVar(&cfg.Demo, "demo", cfg.Demo, "offer the AMP commands Sum, Divide, Echo, an anonymous \"echo\" tunnel and the status page, for local interop checks")
	fs.BoolVar(&cfg.NoAccessLog, "no-access-log", cfg.NoAccessLog, "do not log a line per tunnel and per AMP connection (client, identity, route, bytes, duration, result)")
	fs.StringVar(&cfg.LogFormat, "log-format", cfg.LogFormat, "log `format`: text or json")
	fs.DurationVar(&cfg.Grace, "grace", cfg.Grace, "on SIGINT/SIGTERM, how long calls and tunnels may drain")
	fs.DurationVar(&cfg.SniffTimeout, "sniff-timeout", cfg.SniffTimeout, "how long a new connection may take to show its protocol (shorter when many connections are sniffing)")

	l := &cfg.Limits
	fs.IntVar(&l.MaxConns, "max-conns", l.MaxConns, "`connections` open at once, all clients (0: half the descriptor limit); past it the oldest connection still sniffing is dropped, else the new one")
	fs.IntVar(&l.MaxConnsPerSource, "max-conns-per-source", l.MaxConnsPerSource, "`connections` open at once from one client address (IPv6: one /64)")
	fs.IntVar(&l.MaxSniffingPerSource, "max-sniffing-per-source", l.MaxSniffingPerSource, "new `connections` from one address that have not shown their protocol yet; past it that address's oldest is dropped")
	fs.IntVar(&l.MaxTunnelsPerRoute, "max-tunnels-per-route", l.MaxTunnelsPerRoute, "open `tunnels` per route; past it a switch is refused with UNAVAILABLE (0: no limit)")
	fs.IntVar(&l.MaxTunnelsPerClient, "max-tunnels-per-client", l.MaxTunnelsPerClient, "open `tunnels` per client identity (certificate name, or address if anonymous; 0: no limit)")
	fs.IntVar(&l.MaxCallsPerConn, "max-calls-per-conn", l.MaxCallsPerConn, "AMP `calls` a connection may have in flight; past it calls are answered OVERLOADED")
	fs.Var(&l.MaxBoxSize, "max-box-size", "`size` of the largest AMP box accepted (AMP values are at most 64KiB each)")
	fs.IntVar(&l.MaxFields, "max-fields", l.MaxFields, "`fields` per AMP box; more is a protocol error that closes the connection")
	fs.Var(&l.UnauthBuffer, "unauthenticated-buffer", "`size` of memory shared by all connections without a verified client certificate, past 256KiB each, for boxes arriving, requests waiting for a handler and answers waiting for the network; past it a box closes its connection, a request is answered OVERLOADED, an answer waits")
	fs.Var(&l.WriteBuffer, "write-buffer", "`size` of boxes queued for a client, answers included; past it the connection reads no more until the client reads, and --write-timeout closes it")
	fs.DurationVar(&l.WriteTimeout, "write-timeout", l.WriteTimeout, "how long a write to a client may make no progress before the connection is closed (0: never)")
	fs.DurationVar(&l.Heartbeat, "heartbeat", l.Heartbeat, "probe an AMP connection idle this long (0: never)")
	fs.DurationVar(&l.HeartbeatTimeout, "heartbeat-timeout", l.HeartbeatTimeout, "close an AMP connection whose peer sends nothing this long after a probe")
	fs.DurationVar(&l.HalfCloseTimeout, "half-close-timeout", l.HalfCloseTimeout, "once one side of a tunnel has finished sending, how long the other may go without a byte (0: never)")
	fs.DurationVar(&l.TunnelIdleTimeout, "tunnel-idle-timeout", l.TunnelIdleTimeout, "close tunnels with no bytes either way for this long (0: never; per route: idle_timeout)")
}
