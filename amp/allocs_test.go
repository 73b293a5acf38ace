//go:build !race

// The race detector drops sync.Pool items at random, so allocation counts
// mean something only without it (scripts/test runs -run Allocs apart).

package amp_test

import (
	"context"
	"testing"

	"github.com/ampmux/ampmux/amp"
)

// Steady-state Command.Go calls allocate nothing, on either side (both
// are in this process), over a real TCP connection.
func TestGoAllocs(t *testing.T) {
	e := newGoEnv(t)
	c := e.dial(t)
	ctx := context.Background()
	res := make(chan error, 1)
	done := func(_ context.Context, r addReply, err error) {
		if err == nil && r.Total != 94 {
			err = errAddOverflow // any error: the test reports it
		}
		res <- err
	}
	call := func() {
		if err := add.Go(ctx, c, addArgs{A: 13, B: 81}, done); err != nil {
			t.Fatal(err)
		}
		if err := <-res; err != nil {
			t.Fatal(err)
		}
	}
	for range 100 {
		call() // warm the pools and buffers
	}
	n := testing.AllocsPerRun(2000, call)
	t.Logf("%.3f allocations per call", n)
	if n > 0.05 {
		t.Fatalf("%.2f allocations per Command.Go", n)
	}
	var _ amp.AsyncCaller = c
}
