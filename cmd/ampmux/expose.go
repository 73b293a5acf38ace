package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/ampmux/ampmux/amp/switching"
	"github.com/ampmux/ampmux/internal/tunnel"
)

func init() {
	c := &command{
		name:    "expose",
		summary: "Publish local services through an ampmux gateway from a machine that can only dial out (a reverse tunnel).",
		example: `  # On the gateway:  ampmux serve ... --client-ca pki/ca.pem --expose web=agent-1
  # On the machine behind NAT, with the certificate named agent-1:
  ampmux expose --server gw.example.com:7443 --route web=127.0.0.1:8080 \
      --ca pki/ca.pem --cert pki/agent-1.pem --key pki/agent-1-key.pem

Clients then reach "web" like any route of the gateway (ampmux forward
--protocol web, switching.Dial). The agent keeps --standby connections ready
(TLS done) so a client never waits for a handshake, heartbeats the gateway,
reconnects with capped, jittered backoff when the connection drops, and logs
each change. A refusal (FORBIDDEN: the certificate is not a publisher of the
route; ALREADY_PUBLISHED: another agent publishes it) ends it with exit
status 1 and says which route and identity. SIGINT or SIGTERM stops it.`,
	}
	c.run = func(e *env, args []string) error { return runExpose(c, e, args) }
	register(c)
}

func runExpose(c *command, e *env, args []string) error {
	fs := c.newFlags(e)
	var tf tlsFlags
	tf.register(fs)
	server := fs.String("server", "", "gateway `HOST:PORT` (required)")
	var routes multiFlag
	fs.Var(&routes, "route", "publish route `NAME=HOST:PORT`: the gateway's clients of NAME reach HOST:PORT from here (repeatable; at least one)")
	standby := fs.Int("standby", 2, "connections per route kept ready for the gateway's clients")
	halfClose := fs.Duration("half-close-timeout", tunnel.DefaultHalfCloseTimeout, "once one side of a tunnel has finished sending, how long the other may go without a byte")
	if err := parseQuiet(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usagef("unexpected argument %q", fs.Arg(0))
	}
	if *server == "" {
		return usagef("--server is required")
	}
	if len(routes) == 0 {
		return usagef("give at least one --route NAME=HOST:PORT")
	}
	if *standby < 1 {
		return usagef("--standby must be at least 1")
	}
	if tf.cert == "" {
		return usagef("--cert and --key are required: the gateway knows publishers by their certificate")
	}
	var rcs []routeConfig
	for _, r := range routes {
		rc, err := parseRouteFlag(r)
		if err != nil {
			return err
		}
		rcs = append(rcs, rc)
	}
	tlsCfg, err := tf.config(*server)
	if err != nil {
		return err
	}
	ctx, stop := interruptContext(e)
	defer stop()
	log := &lineWriter{w: e.stderr}

	// Publish every route first: a refusal ends the command before it
	// serves anything.
	var listeners []*switching.RemoteListener
	defer func() {
		for _, l := range listeners {
			l.Close()
		}
	}()
	for _, rc := range rcs {
		name := rc.Name
		p := &switching.Publisher{TLSConfig: tlsCfg, Standby: *standby,
			OnPublish: func() { log.printf("ampmux expose: route %s published on %s", name, *server) },
			OnDisconnect: func(err error) {
				log.printf("ampmux expose: route %s: connection to %s lost: %v; reconnecting", name, *server, err)
			},
		}
		dctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		l, err := p.Listen(dctx, *server, name)
		cancel()
		if err != nil {
			return exposeFailure(err)
		}
		listeners = append(listeners, l)
	}
	fmt.Fprintf(e.stdout, "exposing %d route(s) through %s\n", len(rcs), *server)

	var wg sync.WaitGroup
	errs := make(chan error, len(rcs))
	for i, l := range listeners {
		wg.Go(func() { errs <- exposeRoute(l, rcs[i], *halfClose, log) })
	}
	go func() { <-ctx.Done(); stop(); closeAll(listeners) }()
	var first error
	for range listeners {
		if err := <-errs; err != nil && first == nil && ctx.Err() == nil {
			first = err
			closeAll(listeners) // one route refused for good: stop the others
		}
	}
	wg.Wait()
	return first
}

func closeAll(ls []*switching.RemoteListener) {
	for _, l := range ls {
		l.Close()
	}
}

// exposeFailure says what the gateway refused, and for whom.
func exposeFailure(err error) error {
	var pe *switching.PublishError
	if errors.As(err, &pe) {
		code := "REFUSED"
		switch {
		case errors.Is(err, switching.ErrForbidden):
			code = "FORBIDDEN"
		case errors.Is(err, switching.ErrAlreadyPublished):
			code = "ALREADY_PUBLISHED"
		case errors.Is(err, switching.ErrUnknownProtocol):
			code = "UNKNOWN_PROTOCOL"
		}
		return fmt.Errorf("%s: gateway %s will not let %q publish route %q: %v", code, pe.Gateway, pe.Identity, pe.Route, pe.Err)
	}
	return err
}

// exposeRoute pipes each of the gateway's clients of rc to its backend
// until the listener ends.
func exposeRoute(l *switching.RemoteListener, rc routeConfig, halfClose time.Duration, log *lineWriter) error {
	var tunnels sync.WaitGroup
	defer tunnels.Wait()
	for {
		c, err := l.Accept()
		if err != nil {
			var pe *switching.PublishError
			if errors.As(err, &pe) {
				return exposeFailure(err)
			}
			return nil // closed
		}
		tunnels.Go(func() {
			var d net.Dialer
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			b, err := d.DialContext(ctx, "tcp", rc.Backend)
			cancel()
			if err != nil {
				log.printf("ampmux expose: route %s: backend %s: %v", rc.Name, rc.Backend, err)
				c.Close()
				return
			}
			if err := tunnel.PipeWith(c, b, nil, tunnel.Options{HalfCloseTimeout: halfClose}); err != nil {
				log.printf("ampmux expose: route %s: tunnel ended: %v", rc.Name, err)
			}
		})
	}
}
