package main

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/ampmux/ampmux/amp/switching"
	"github.com/ampmux/ampmux/internal/tunnel"
)

func init() {
	c := &command{
		name:    "connect",
		summary: "Tunnel stdin and stdout to an inner protocol of an ampmux server (for ssh's ProxyCommand).",
		example: `  ssh -o ProxyCommand='ampmux connect --server gw.example.com:443 --protocol ssh' user@internal

  # or in ~/.ssh/config:
  Host internal
      ProxyCommand ampmux connect --server gw.example.com:443 --protocol ssh --cert ~/.ampmux/client.pem --key ~/.ampmux/client-key.pem

Exits 0 once both directions have ended cleanly, 1 if the tunnel cannot be
set up (the step that failed is on stderr) or breaks.`,
	}
	c.run = func(e *env, args []string) error { return runConnect(c, e, args) }
	register(c)
}

func runConnect(c *command, e *env, args []string) error {
	fs := c.newFlags(e)
	var target tunnelTarget
	target.register(fs)
	if err := parseQuiet(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usagef("unexpected argument %q", fs.Arg(0))
	}
	if err := target.check(); err != nil {
		return err
	}
	if target.plaintext {
		fmt.Fprintf(e.stderr, "ampmux connect: warning: --insecure-plaintext: the tunnel to %s is neither encrypted nor authenticated\n", target.server)
	}
	ctx := e.ctx
	if ctx == nil {
		ctx = context.Background()
	}
	remote, err := target.dial(ctx)
	if err != nil {
		return fmt.Errorf("tunnel to %s protocol %s: %s", target.server, target.protocol, dialFailure(err))
	}
	local := &tunnel.StdioConn{In: readCloser(e.stdin), Out: writeCloser(e.stdout)}
	if err := tunnel.Pipe(local, remote, nil); err != nil {
		var de *switching.DialError
		if errors.As(err, &de) { // an --optimistic switch refused
			return fmt.Errorf("tunnel to %s protocol %s: %s", target.server, target.protocol, dialFailure(err))
		}
		return fmt.Errorf("tunnel to %s: %v", target.server, err)
	}
	return nil
}

// readCloser and writeCloser let StdioConn close what can be closed.
func readCloser(r io.Reader) io.ReadCloser {
	if rc, ok := r.(io.ReadCloser); ok {
		return rc
	}
	return io.NopCloser(r)
}

func writeCloser(w io.Writer) io.WriteCloser {
	if wc, ok := w.(io.WriteCloser); ok {
		return wc
	}
	return nopWriteCloser{w}
}

type nopWriteCloser struct{ io.Writer }

func (nopWriteCloser) Close() error { return nil }
