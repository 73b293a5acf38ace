// Command callbench measures AMP calls per second on one loopback TCP
// connection, client and server in separate processes, next to a raw TCP
// "floor" that moves messages of the same sizes with no protocol work;
// with -conns, over many connections with one call in flight on each.
//
// Subcommands:
//
//	callbench serve-amp   -addr 127.0.0.1:0 [-api raw|typed] [-cpuprofile F]
//	callbench serve-floor -addr 127.0.0.1:0 [-cpuprofile F]
//	callbench amp   -addr A -inflight N -duration 3s [-api raw|typed|async] [-warmup 500ms] [-cpuprofile F]
//	callbench floor -addr A -inflight N -duration 3s [-floor-mode batched|perwrite] [-warmup 500ms] [-cpuprofile F]
//	callbench amp|floor -addr A -conns 1000 [-parallel 64] ...
//
// The floor client comes in two modes: batched (the default) writes all
// the refills one Read calls for in one Write; perwrite makes one Write
// per 44-byte request, as a client whose callers each send their own
// message does, and is the floor other AMP implementations are usually
// measured against.
//
// With -conns N above 1, amp and floor open N connections, -parallel at a
// time, each making one call before the clock starts, then run one caller
// per connection (call, wait, call again); amp dials with conn.Dial, floor
// writes the 44 bytes of a Sum call box and reads the 29 of its answer on
// each raw TCP connection. Their RESULT kind is scale-amp or scale-floor.
//
// Servers print "LISTENING <addr>" on stdout and serve until stdin closes
// or SIGTERM/SIGINT. Clients print one "RESULT key=value ..." line and exit
// non-zero if any call failed or got a wrong answer. bench/report runs
// them (bench/run.sh, scripts/bench-conn).
package main

import (
	"context"
	"flag"
	"io"
	"os"

	"github.com/ampmux/ampmux/internal/benchkit"
)

const usageText = `usage: callbench <command> [flags]

commands:
  serve-amp    AMP server answering Sum(a, b) -> total
  serve-floor  raw TCP floor server: 44-byte requests, 29-byte responses
  amp          AMP client: -inflight goroutines calling Sum on one connection,
               or -conns connections with one caller each
  floor        pipelined raw TCP client against serve-floor (-floor-mode batched or perwrite),
               or -conns connections with one request then one answer at a time on each

"callbench <command> -h" lists the command's flags.
`

var errUsage = benchkit.ErrUsage

func main() {
	benchkit.Main("callbench", func(ctx context.Context) error {
		return dispatch(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	})
}

func dispatch(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	serve := func(cmd string) func([]string) error {
		return func(rest []string) error { return serveMain(ctx, cmd, rest, stdin, stdout, stderr) }
	}
	client := func(cmd string) func([]string) error {
		return func(rest []string) error { return clientMain(ctx, cmd, rest, stdout, stderr) }
	}
	return benchkit.Dispatch("callbench", usageText, args, stdout, stderr, map[string]func([]string) error{
		"serve-amp":   serve("serve-amp"),
		"serve-floor": serve("serve-floor"),
		"amp":         client("amp"),
		"floor":       client("floor"),
	})
}

// parseFlags parses fs and maps errors to errUsage (the FlagSet has
// already printed them).
func parseFlags(fs *flag.FlagSet, args []string) error {
	return benchkit.ParseFlags("callbench", fs, args)
}
