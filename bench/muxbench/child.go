package main

import (
	"context"
	"io"
	"time"

	"github.com/ampmux/ampmux/internal/benchkit"
)

// startChild runs a muxbench serve or idle process. Its tagged stdout
// lines (LISTENING, STATS, READY, DONE) are for Expect; every other line
// goes to stderr after its name.
func startChild(ctx context.Context, self, name string, args []string, stderr io.Writer) (*benchkit.Proc, error) {
	return benchkit.Start(ctx, benchkit.Spec{Name: name, Argv: append([]string{self}, args...),
		Tags: []string{"LISTENING", "STATS", "READY", "DONE"}, Log: benchkit.PrefixWriter(stderr, name+": ")})
}

// stats asks a server for its STATS line.
func stats(ctx context.Context, p *benchkit.Proc) (serverStats, error) {
	if err := p.Send("stats"); err != nil {
		return serverStats{}, err
	}
	line, err := p.Expect(ctx, "STATS", 10*time.Second)
	if err != nil {
		return serverStats{}, err
	}
	return parseStats(line)
}

// heapProfile makes a server write a heap profile to path.
func heapProfile(ctx context.Context, p *benchkit.Proc, path string) error {
	if err := p.Send("heap " + path); err != nil {
		return err
	}
	_, err := p.Expect(ctx, "DONE", 30*time.Second)
	return err
}
