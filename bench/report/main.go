// Command report runs the comparison of issue 6 and writes it as
// Markdown: ampmux against Twisted AMP, grpc-go, net/rpc and a raw TCP
// floor, one connection at 1, 16 and 256 calls in flight, and 1,000
// connections with one call in flight each; every client and server a
// process of its own.
//
//	report run -callbench BIN -rpc BIN -twisted-dir DIR [-python /usr/bin/python3]
//	           [-inflight 1,16,256] [-runs 3] [-duration 2s] [-warmup 500ms] [-scale-conns 1000]
//	           [-contenders amp-raw,...] [-profile=true] [-profile-dir DIR] [-json FILE]
//	report assemble -json FILE -out BENCHMARKS.md [-mux FILE] [-tunnel FILE] [-tunnel-note TEXT]
//	           [-command TEXT] [-took 5m] [-idle-profile scripts/bench-mux]
//
// run prints its tables (the goals and, where one is missed, CPU profiles
// of ampmux) on stdout and progress on stderr; -json keeps every figure
// for assemble, which writes the whole BENCHMARKS.md: machine, goals (with
// the idle-memory one read from scripts/bench-mux's table), these tables,
// and the tunnel and port-sharing sections verbatim. bench/run.sh runs it
// all with one command.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/ampmux/ampmux/internal/benchkit"
)

var errUsage = benchkit.ErrUsage

const usageText = `usage: report <command> [flags]

commands:
  run       run every contender (servers and clients as processes), print Markdown
  assemble  write BENCHMARKS.md from run's -json and the other sections

"report <command> -h" lists the command's flags.
`

func main() {
	benchkit.Main("report", func(ctx context.Context) error {
		return dispatch(ctx, os.Args[1:], os.Stdout, os.Stderr)
	})
}

func dispatch(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usageText)
		return errUsage
	}
	switch args[0] {
	case "run":
		return runMain(ctx, args[1:], stdout, stderr)
	case "assemble":
		return assembleMain(ctx, args[1:], stdout, stderr)
	case "-h", "-help", "--help", "help":
		fmt.Fprint(stdout, usageText)
		return nil
	}
	fmt.Fprintf(stderr, "report: unknown command %q\n\n%s", args[0], usageText)
	return errUsage
}

func parseFlags(fs *flag.FlagSet, args []string) error {
	return benchkit.ParseFlags("report", fs, args)
}
