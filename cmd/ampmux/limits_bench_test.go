package main

import (
	"context"
	"crypto/tls"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"testing"

	"github.com/ampmux/ampmux/amp/box"
	"github.com/ampmux/ampmux/amp/conn"
	"github.com/ampmux/ampmux/amp/switching"
	"github.com/ampmux/ampmux/internal/pki"
)

// limitsOff loosens every limit serve has, as far as it goes: the other
// side of "limits on vs off".
func limitsOff() limitsConfig {
	return limitsConfig{
		MaxConns: -1, MaxConnsPerSource: -1, MaxSniffingPerSource: -1,
		MaxTunnelsPerRoute: 0, MaxTunnelsPerClient: 0, // 0: no limit
		MaxCallsPerConn: 1 << 20, MaxBoxSize: 1 << 30, MaxFields: math.MaxInt32,
		UnauthBuffer: 1 << 40, WriteBuffer: 1 << 30, WriteTimeout: -1,
		Heartbeat: 0, HalfCloseTimeout: -1,
	}
}

// startBenchServe runs serve --demo in process with TLS and the given
// limits, and returns its address and a client TLS config.
func startBenchServe(b *testing.B, limits limitsConfig) (string, *tls.Config) {
	b.Helper()
	return startBenchServeWith(b, func(cfg *serveConfig) { cfg.Limits = limits })
}

// startBenchServeWith is startBenchServe with the configuration set by
// set (over --demo, TLS and a loopback port).
func startBenchServeWith(b *testing.B, set func(*serveConfig)) (string, *tls.Config) {
	b.Helper()
	bundle, err := pki.NewBundle()
	if err != nil {
		b.Fatal(err)
	}
	d := b.TempDir()
	if err := bundle.Write(d); err != nil {
		b.Fatal(err)
	}
	cfg := defaultServeConfig()
	cfg.Listen, cfg.Demo = "127.0.0.1:0", true
	cfg.Routes = append(cfg.Routes, routeConfig{Name: "echo", Backend: demoEcho})
	cfg.TLSCert, cfg.TLSKey = filepath.Join(d, "server.pem"), filepath.Join(d, "server-key.pem")
	set(&cfg)
	ctx, cancel := context.WithCancel(context.Background())
	out := &logBuf{}
	done := make(chan error, 1)
	// The log goes to a file, as serve's stderr would to journald: a
	// write per line is part of what the access log costs.
	logf, err := os.Create(filepath.Join(d, "serve.log"))
	if err != nil {
		b.Fatal(err)
	}
	log, q := newQueuedLogger(logf, "text")
	b.Cleanup(func() { q.Close(); logf.Close() })
	go func() { done <- serve(ctx, &cfg, log, out) }()
	b.Cleanup(func() { cancel(); <-done })
	m := out.waitMatchB(b, regexp.MustCompile(`listening on (\S+)`))
	return m, &tls.Config{RootCAs: bundle.CA.Pool(), ServerName: "127.0.0.1"}
}

var limitModes = []struct {
	name   string
	limits func() limitsConfig
}{{"limits=on", defaultLimits}, {"limits=off", limitsOff}}

// BenchmarkServeCalls: Sum calls from 16 goroutines on one connection to
// serve, with serve's default limits and with them all loosened.
func BenchmarkServeCalls(b *testing.B) {
	for _, mode := range limitModes {
		b.Run(mode.name, func(b *testing.B) {
			addr, _ := startBenchServe(b, mode.limits())
			c, err := conn.Dial(context.Background(), "tcp", addr, nil)
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			sumCalls(b, c)
		})
	}
}

// BenchmarkServeTunnel: bytes through the demo's echo route over TLS,
// 64 KiB writes, limits on and off.
func BenchmarkServeTunnel(b *testing.B) {
	for _, mode := range limitModes {
		b.Run(mode.name, func(b *testing.B) {
			addr, tcfg := startBenchServe(b, mode.limits())
			tc, err := switching.Dial(context.Background(), addr, "echo", tcfg)
			if err != nil {
				b.Fatal(err)
			}
			defer tc.Close()
			echoBench(b, tc)
		})
	}
}

// sumCalls makes b.N Sum calls on c from 16 goroutines (2 cores).
func sumCalls(b *testing.B, c *conn.Conn) {
	b.SetParallelism(8)
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		var args, reply box.Box
		args.SetString("a", "13")
		args.SetString("b", "81")
		for pb.Next() {
			if err := c.CallBox(context.Background(), "Sum", &args, &reply); err != nil {
				b.Error(err)
				return
			}
		}
	})
}
