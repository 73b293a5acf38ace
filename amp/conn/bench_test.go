package conn_test

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/ampmux/ampmux/amp"
	"github.com/ampmux/ampmux/amp/box"
	"github.com/ampmux/ampmux/amp/conn"
	"github.com/ampmux/ampmux/internal/benchkit"
)

// rawSum answers Sum without allocating.
func rawSum(_ context.Context, req, resp *box.Box) error {
	a, _ := req.Get("a")
	b, _ := req.Get("b")
	x, err := strconv.ParseInt(string(a), 10, 64)
	if err != nil {
		return err
	}
	y, err := strconv.ParseInt(string(b), 10, 64)
	if err != nil {
		return err
	}
	var tmp [24]byte
	resp.Set("total", strconv.AppendInt(tmp[:0], x+y, 10))
	return nil
}

func benchPair(b *testing.B) *conn.Conn {
	m := amp.NewMux()
	m.HandleBoxInline("Sum", rawSum)
	amp.HandleInline(m, benchkit.Sum, func(_ context.Context, a benchkit.SumArgs) (benchkit.SumReply, error) {
		return benchkit.SumReply{Total: a.A + a.B}, nil
	}) // typed Sum replaces the raw one under its name...
	m.HandleBoxInline("RawSum", rawSum)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	srv := &conn.Server{Config: conn.Config{Handler: m}}
	go srv.Serve(l)
	c, err := conn.Dial(context.Background(), "tcp", l.Addr().String(), nil)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		c.Close()
		srv.Close()
	})
	return c
}

// BenchmarkCall measures call-then-wait callers on one loopback
// connection, client and server in this process. See bench/callbench for
// the same with separate processes beside a raw TCP floor.
func BenchmarkCall(b *testing.B) {
	for _, api := range []string{"raw", "typed"} {
		for _, inflight := range []int{1, 16, 256} {
			b.Run(fmt.Sprintf("%s/inflight=%d", api, inflight), func(b *testing.B) {
				c := benchPair(b)
				ctx := context.Background()
				var left atomic.Int64
				left.Store(int64(b.N))
				var wg sync.WaitGroup
				errs := make(chan error, inflight)
				b.ReportAllocs()
				b.ResetTimer()
				for range inflight {
					wg.Add(1)
					go func() {
						defer wg.Done()
						var args, reply box.Box
						args.SetString("a", "13")
						args.SetString("b", "81")
						for left.Add(-1) >= 0 {
							if api == "raw" {
								if err := c.CallBox(ctx, "RawSum", &args, &reply); err != nil {
									errs <- err
									return
								}
								if v, _ := reply.Get("total"); string(v) != "94" {
									errs <- fmt.Errorf("total %q", v)
									return
								}
							} else {
								r, err := benchkit.Sum.Call(ctx, c, benchkit.SumArgs{A: 13, B: 81})
								if err != nil || r.Total != 94 {
									errs <- fmt.Errorf("typed: %v %v", r, err)
									return
								}
							}
						}
					}()
				}
				wg.Wait()
				b.StopTimer()
				close(errs)
				for err := range errs {
					b.Fatal(err)
				}
				b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "calls/s")
			})
		}
	}
}
