//go:build !race

// The race detector drops sync.Pool items at random, so allocation counts
// mean something only without it; scripts/test runs these separately.

package conn_test

import (
	"context"
	"sync"
	"testing"

	"github.com/ampmux/ampmux/amp"
	"github.com/ampmux/ampmux/amp/box"
	"github.com/ampmux/ampmux/amp/conn"
)

type sum64Args struct {
	A int64 `amp:"a"`
	B int64 `amp:"b"`
}

type sum64Reply struct {
	Total int64 `amp:"total"`
}

// sum64 is Sum with int64 arguments: big.Int values would allocate.
var sum64 = amp.NewCommand[sum64Args, sum64Reply]("Sum", amp.Spec{})

// Steady-state calls allocate nothing, on either side (both are in this
// process): through the raw API, the typed API and Go.
func TestCallAllocs(t *testing.T) {
	m := amp.NewMux()
	amp.HandleInline(m, sum64, func(_ context.Context, a sum64Args) (sum64Reply, error) {
		return sum64Reply{Total: a.A + a.B}, nil
	})
	client, _ := pair(t, tcpPair, &conn.Config{Handler: m, Logger: quietLogger()})
	ctx := context.Background()
	args := sumArgs(13, 81)
	var reply box.Box
	typed := sum64Args{A: 13, B: 81}
	var wg sync.WaitGroup
	done := func(context.Context, *box.Box, error) { wg.Done() }
	tests := []struct {
		name string
		call func()
	}{
		{"raw", func() {
			if err := client.CallBox(ctx, "Sum", args, &reply); err != nil {
				t.Fatal(err)
			}
		}},
		{"typed", func() {
			if r, err := sum64.Call(ctx, client, typed); err != nil || r.Total != 94 {
				t.Fatal(r, err)
			}
		}},
		{"Go", func() {
			wg.Add(1)
			if err := client.Go(ctx, "Sum", args, done); err != nil {
				t.Fatal(err)
			}
			wg.Wait()
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for range 100 {
				tt.call() // warm the pools and buffers
			}
			if n := testing.AllocsPerRun(2000, tt.call); n > 0.05 {
				t.Fatalf("%.2f allocations per call", n)
			}
		})
	}
}
