package main

import (
	"context"
	"io"
	"testing"

	"github.com/ampmux/ampmux/amp/box"
	"github.com/ampmux/ampmux/amp/conn"
	"github.com/ampmux/ampmux/amp/switching"
)

// opsModes: metrics (--admin, so /metrics and its counters) and the
// access log on, against both off.
var opsModes = []struct {
	name string
	set  func(*serveConfig)
}{
	{"ops=on", func(c *serveConfig) { c.Admin = "127.0.0.1:0" }},
	{"ops=off", func(c *serveConfig) { c.NoAccessLog = true }},
}

// BenchmarkOpsCalls: Sum calls from 16 goroutines on one connection, with
// metrics and the access log on and off.
func BenchmarkOpsCalls(b *testing.B) {
	for _, mode := range opsModes {
		b.Run(mode.name, func(b *testing.B) {
			addr, _ := startBenchServeWith(b, mode.set)
			c, err := conn.Dial(context.Background(), "tcp", addr, nil)
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			sumCalls(b, c)
		})
	}
}

// BenchmarkOpsConns: a new connection per Sum (dial, call, close), 4 at a
// time: the access log writes a line per connection.
func BenchmarkOpsConns(b *testing.B) {
	for _, mode := range opsModes {
		b.Run(mode.name, func(b *testing.B) {
			addr, _ := startBenchServeWith(b, mode.set)
			b.SetParallelism(2)
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				var args, reply box.Box
				args.SetString("a", "13")
				args.SetString("b", "81")
				for pb.Next() {
					c, err := conn.Dial(context.Background(), "tcp", addr, nil)
					if err != nil {
						b.Error(err)
						return
					}
					if err := c.CallBox(context.Background(), "Sum", &args, &reply); err != nil {
						b.Error(err)
					}
					c.Close()
				}
			})
		})
	}
}

// BenchmarkOpsTunnel: bytes through the echo route over TLS, 64 KiB
// writes, metrics and the access log on and off.
func BenchmarkOpsTunnel(b *testing.B) {
	for _, mode := range opsModes {
		b.Run(mode.name, func(b *testing.B) {
			addr, tcfg := startBenchServeWith(b, mode.set)
			tc, err := switching.Dial(context.Background(), addr, "echo", tcfg)
			if err != nil {
				b.Fatal(err)
			}
			defer tc.Close()
			echoBench(b, tc)
		})
	}
}

// echoBench writes b.N chunks of 64 KiB to c and reads them back.
func echoBench(b *testing.B, c io.ReadWriter) {
	chunk := make([]byte, 64<<10)
	back := make([]byte, len(chunk))
	b.SetBytes(int64(len(chunk)))
	b.ResetTimer()
	errc := make(chan error, 1)
	go func() {
		for range b.N {
			if _, err := io.ReadFull(c, back); err != nil {
				errc <- err
				return
			}
		}
		errc <- nil
	}()
	for range b.N {
		if _, err := c.Write(chunk); err != nil {
			b.Fatal(err)
		}
	}
	if err := <-errc; err != nil {
		b.Fatal(err)
	}
}
