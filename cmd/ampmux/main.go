// Command ampmux serves one port to browsers (HTTP) and to AMP clients
// (TLS, then tunnels to inner services), and has the client tools to use
// it: forward, connect, call, cert and bench.
package main

import (
	"errors"
	"fmt"
	"os"
	"runtime/debug"
	"sort"
)

// version is set at build time (-ldflags "-X main.version=v1.2.3");
// otherwise the module version, or "dev".
var version = ""

func versionString() string {
	if version != "" {
		return version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return "dev"
}

var commands = map[string]*command{}

func register(c *command) { commands[c.name] = c }

func init() {
	register(&command{name: "version", summary: "Print the version.", run: func(e *env, args []string) error {
		fmt.Fprintln(e.stdout, "ampmux", versionString())
		return nil
	}})
}

func main() {
	os.Exit(run(&env{stdin: os.Stdin, stdout: os.Stdout, stderr: os.Stderr}, os.Args[1:]))
}

func topUsage(e *env) {
	fmt.Fprintln(e.stdout, "Usage: ampmux COMMAND [flags]\n\nOne port for a web site and TLS tunnels over AMP.\n\nCommands:")
	names := make([]string, 0, len(commands))
	for n := range commands {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(e.stdout, "  %-8s %s\n", n, commands[n].summary)
	}
	fmt.Fprintln(e.stdout, "\nRun 'ampmux COMMAND --help' for a command's flags and an example.")
}

// run executes a command line and returns the exit status.
func run(e *env, args []string) int {
	if len(args) == 0 {
		topUsage(e)
		return exitUsage
	}
	switch args[0] {
	case "-h", "--help", "help":
		topUsage(e)
		return exitOK
	case "-v", "--version":
		args[0] = "version"
	}
	c, ok := commands[args[0]]
	if !ok {
		fmt.Fprintf(e.stderr, "ampmux: unknown command %q (run 'ampmux --help')\n", args[0])
		return exitUsage
	}
	err := c.run(e, args[1:])
	var ue usageError
	var ee exitError
	switch {
	case err == nil, errors.Is(err, errHelp):
		return exitOK
	case errors.As(err, &ue):
		fmt.Fprintf(e.stderr, "ampmux %s: %s (see 'ampmux %s --help')\n", c.name, ue.msg, c.name)
		return exitUsage
	case errors.As(err, &ee):
		if ee.err != nil && ee.err.Error() != "" {
			fmt.Fprintf(e.stderr, "ampmux %s: %v\n", c.name, ee.err)
		}
		return ee.code
	default:
		fmt.Fprintf(e.stderr, "ampmux %s: %v\n", c.name, err)
		return exitFailure
	}
}
