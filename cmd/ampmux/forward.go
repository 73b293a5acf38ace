package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/ampmux/ampmux/amp/switching"
	"github.com/ampmux/ampmux/internal/tunnel"
)

func init() {
	c := &command{
		name:    "forward",
		summary: "Forward a local port to an inner protocol of an ampmux server: each connection gets its own TLS tunnel.",
		example: `  # Reach the "ssh" service behind gw.example.com:443 on local port 2222:
  ampmux forward --server gw.example.com:443 --protocol ssh --listen 127.0.0.1:2222 \
      --cert client.pem --key client-key.pem
  ssh -p 2222 user@127.0.0.1

Prints "forwarding ADDR -> SERVER protocol NAME" once listening (ADDR is the
bound address, useful with port 0). A connection whose tunnel cannot be set up
is closed, and the step that failed is logged to stderr. SIGINT or SIGTERM
stops accepting and lets open tunnels finish for up to --grace.`,
	}
	c.run = func(e *env, args []string) error { return runForward(c, e, args) }
	register(c)
}

func runForward(c *command, e *env, args []string) error {
	fs := c.newFlags(e)
	var target tunnelTarget
	target.register(fs)
	listen := fs.String("listen", "", "local `ADDR` to accept connections on, e.g. 127.0.0.1:2222 (required; port 0 picks a free port)")
	grace := fs.Duration("grace", 5*time.Second, "on SIGINT/SIGTERM, how long open tunnels may go on before they are closed")
	if err := parseQuiet(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usagef("unexpected argument %q", fs.Arg(0))
	}
	if *listen == "" {
		return usagef("--listen is required (for example --listen 127.0.0.1:2222)")
	}
	if *grace < 0 {
		return usagef("--grace must not be negative")
	}
	if err := target.check(); err != nil {
		return err
	}

	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return err
	}
	ctx, stop := interruptContext(e)
	defer stop()
	log := &lineWriter{w: e.stderr}
	if target.plaintext {
		log.printf("ampmux forward: warning: --insecure-plaintext: tunnels to %s are neither encrypted nor authenticated", target.server)
	}
	fmt.Fprintf(e.stdout, "forwarding %s -> %s protocol %s\n", ln.Addr(), target.server, target.protocol)

	f := &forwarder{target: &target, log: log, open: make(map[net.Conn]struct{})}
	f.dialCtx, f.cancelDials = context.WithCancel(context.Background())
	defer f.cancelDials()
	go func() {
		<-ctx.Done()
		stop() // a second signal is not caught: it kills, as usual
		ln.Close()
	}()
	err = f.serve(ctx, ln)
	ln.Close()
	f.drain(*grace)
	return err
}

// interruptContext is e.ctx (tests end it to stop a command), also ended by
// SIGINT or SIGTERM.
func interruptContext(e *env) (context.Context, context.CancelFunc) {
	ctx := e.ctx
	if ctx == nil {
		ctx = context.Background()
	}
	return signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
}

// forwarder carries each accepted connection through its own tunnel.
type forwarder struct {
	target      *tunnelTarget
	log         *lineWriter
	dialCtx     context.Context // ends when the grace period does
	cancelDials context.CancelFunc

	wg      sync.WaitGroup // one per accepted connection
	mu      sync.Mutex
	open    map[net.Conn]struct{} // local and tunnel connections, to close when time is up
	closing bool
}

// serve accepts until the listener is closed; it returns nil when ctx
// ended, the Accept error otherwise.
func (f *forwarder) serve(ctx context.Context, ln net.Listener) error {
	var delay time.Duration
	for {
		local, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			var te interface{ Temporary() bool }
			if errors.As(err, &te) && te.Temporary() { // out of descriptors, say
				delay = min(max(2*delay, 5*time.Millisecond), time.Second)
				f.log.printf("ampmux forward: accept: %v; retrying in %v", err, delay)
				time.Sleep(delay)
				continue
			}
			return fmt.Errorf("accept: %w", err)
		}
		delay = 0
		if !f.track(local) {
			local.Close()
			continue
		}
		f.wg.Add(1)
		go f.carry(local)
	}
}

func (f *forwarder) carry(local net.Conn) {
	defer f.wg.Done()
	defer f.untrack(local)
	from := local.RemoteAddr()
	remote, err := f.target.dial(f.dialCtx)
	if err != nil {
		local.Close()
		if f.dialCtx.Err() != nil {
			return // shut down while dialing: not the server's fault
		}
		f.log.printf("ampmux forward: %s: tunnel to %s protocol %s: %s", from, f.target.server, f.target.protocol, dialFailure(err))
		return
	}
	if !f.track(remote) {
		local.Close()
		remote.Close()
		return
	}
	defer f.untrack(remote)
	if err := tunnel.Pipe(local, remote, nil); err != nil {
		var de *switching.DialError
		if errors.As(err, &de) { // an --optimistic switch refused
			f.log.printf("ampmux forward: %s: tunnel to %s protocol %s: %s", from, f.target.server, f.target.protocol, dialFailure(err))
			return
		}
		f.log.printf("ampmux forward: %s: tunnel ended: %v", from, err)
	}
}

// track registers an open connection; false once drain has closed the
// stragglers.
func (f *forwarder) track(c net.Conn) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closing {
		return false
	}
	f.open[c] = struct{}{}
	return true
}

func (f *forwarder) untrack(c net.Conn) {
	f.mu.Lock()
	delete(f.open, c)
	f.mu.Unlock()
}

// drain waits up to grace for the tunnels to end, then closes what is
// left and waits for their goroutines.
func (f *forwarder) drain(grace time.Duration) {
	done := make(chan struct{})
	go func() {
		f.wg.Wait()
		close(done)
	}()
	f.mu.Lock()
	n := len(f.open)
	f.mu.Unlock()
	if n > 0 {
		f.log.printf("ampmux forward: stopping; waiting up to %v for open tunnels", grace)
	}
	t := time.NewTimer(grace)
	defer t.Stop()
	select {
	case <-done:
		return
	case <-t.C:
	}
	f.cancelDials()
	f.mu.Lock()
	f.closing = true
	left := make([]net.Conn, 0, len(f.open))
	for c := range f.open {
		left = append(left, c)
	}
	f.mu.Unlock()
	for _, c := range left {
		c.Close()
	}
	<-done
	if len(left) > 0 {
		f.log.printf("ampmux forward: closed the tunnels still open after %v", grace)
	}
}
