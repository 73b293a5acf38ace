// Command muxbench measures what sharing one port between HTTP and AMP
// (package mux) costs, against the same servers on ports of their own, with
// servers and load generators in separate processes over loopback:
//
//   - HTTP requests/s through the shared port and on a plain port, with
//     wrk, keep-alive and with a new connection per request;
//   - AMP Sum calls/s through the shared port and on a plain port, with
//     the amp client of bench/callbench (16 in flight, raw API);
//   - the server's resident memory holding 10,000 idle AMP connections
//     that came in through the mux (and, for comparison, on a plain port).
//
// Subcommands:
//
//	muxbench serve -mode shared|direct [-addr 127.0.0.1:0] [-cpuprofile F]
//	muxbench idle  -addr A [-conns 10000] [-parallel 64]
//	muxbench run   -callbench BIN [-modes keepalive,close,amp,idle] [-runs 3] [-duration 5s] ...
//
// serve prints "LISTENING http=<addr> amp=<addr>" (one address twice when
// shared), answers a "stats" line on stdin with a STATS line (and "heap
// FILE" by writing a heap profile there, then "DONE heap FILE"), and serves
// until stdin closes or SIGTERM/SIGINT. idle opens its connections, makes
// one Sum call on each, prints "READY ...", and holds them until stdin
// closes. run starts all of these (and wrk, and callbench) as processes and
// prints a Markdown table; see scripts/bench-mux.
package main

import (
	"context"
	"flag"
	"io"
	"os"

	"github.com/ampmux/ampmux/internal/benchkit"
)

const usageText = `usage: muxbench <command> [flags]

commands:
  serve  an HTTP server (13-byte body) and an AMP server (Sum), on one
         shared port through mux.New (-mode shared) or on a port each
         (-mode direct)
  idle   open -conns AMP connections, make one Sum call on each, hold them
  run    start servers and clients as processes, print a Markdown table

"muxbench <command> -h" lists the command's flags.
`

var errUsage = benchkit.ErrUsage

func main() {
	benchkit.Main("muxbench", func(ctx context.Context) error {
		return dispatch(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	})
}

func dispatch(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	return benchkit.Dispatch("muxbench", usageText, args, stdout, stderr, map[string]func([]string) error{
		"serve": func(rest []string) error { return serveMain(ctx, rest, stdin, stdout, stderr) },
		"idle":  func(rest []string) error { return idleMain(ctx, rest, stdin, stdout, stderr) },
		"run":   func(rest []string) error { return runMain(ctx, rest, stdout, stderr) },
	})
}

// parseFlags parses fs and maps errors to errUsage (the FlagSet has
// already printed them).
func parseFlags(fs *flag.FlagSet, args []string) error {
	return benchkit.ParseFlags("muxbench", fs, args)
}
