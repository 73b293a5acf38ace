package main

// The standard library's net/rpc contender: the same Sum, gob-encoded
// (net/rpc's default codec) over plain TCP, with the same callers as the
// grpc client: -inflight goroutines, each calling and waiting, spread over
// -conns connections (one *rpc.Client each).

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/rpc"

	"github.com/ampmux/ampmux/internal/benchkit"
	"github.com/ampmux/ampmux/internal/benchkit/load"
)

// netRPCMethod is the one method, as net/rpc names it.
const netRPCMethod = "Calc.Sum"

// SumArgs and SumReply are the gob-encoded messages.
type SumArgs struct{ A, B int64 }

type SumReply struct{ Total int64 }

// Calc is the net/rpc service.
type Calc struct{}

// Sum answers a + b.
func (Calc) Sum(args SumArgs, reply *SumReply) error {
	reply.Total = args.A + args.B
	return nil
}

// startNetRPCServer serves net/rpc on every connection l accepts, each
// with rpc.Server.ServeConn (gob codec; a goroutine per request, as net/rpc
// does), until Close.
func startNetRPCServer(l net.Listener) (*benchkit.ConnServer, error) {
	srv := rpc.NewServer()
	if err := srv.RegisterName("Calc", Calc{}); err != nil {
		return nil, err
	}
	return benchkit.ServeConns(l, func(nc net.Conn) { srv.ServeConn(nc) }), nil
}

// serveNetRPC runs the net/rpc server until stdin closes or ctx ends.
func serveNetRPC(ctx context.Context, addr string, stdin io.Reader, stdout io.Writer) error {
	load.RaiseFileLimit(1 << 16)
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	s, err := startNetRPCServer(l)
	if err != nil {
		l.Close()
		return err
	}
	err = benchkit.Announce(ctx, stdout, stdin, l.Addr(), nil)
	return errors.Join(err, s.Close())
}

func netRPCCall(c *rpc.Client, args *SumArgs, reply *SumReply) error {
	*reply = SumReply{}
	if err := c.Call(netRPCMethod, args, reply); err != nil {
		return fmt.Errorf("Sum call: %w", err)
	}
	if reply.Total != 94 {
		return fmt.Errorf("Sum(13, 81) answered total %d, want 94", reply.Total)
	}
	return nil
}

// dialNetRPC opens n connections to addr, 64 at a time, and makes one
// call on each, so that the measure holds no dialing (nor gob's first
// exchange of type descriptions).
func dialNetRPC(ctx context.Context, addr string, n int) ([]*rpc.Client, error) {
	return benchkit.OpenAll(ctx, n, 64, func(ctx context.Context, _ int) (*rpc.Client, error) {
		var d net.Dialer
		nc, err := d.DialContext(ctx, "tcp", addr)
		if err != nil {
			return nil, err
		}
		c := rpc.NewClient(nc)
		stop := context.AfterFunc(ctx, func() { nc.Close() }) // a stuck first call
		err = netRPCCall(c, &SumArgs{A: 13, B: 81}, new(SumReply))
		if !stop() && err == nil {
			err = ctx.Err()
		}
		if err != nil {
			c.Close()
			return nil, err
		}
		return c, nil
	})
}

// runNetRPCClient runs cfg.Inflight callers over cfg.Conns connections
// (caller i on connection i mod Conns), as runClient does for grpc.
func runNetRPCClient(ctx context.Context, cfg clientConfig) (load.Result, error) {
	res := load.Result{Kind: "netrpc", Inflight: cfg.Inflight, Conns: cfg.Conns}
	if cfg.Inflight < 1 || cfg.Conns < 1 {
		return res, errors.New("-inflight and -conns must be at least 1")
	}
	load.RaiseFileLimit(uint64(cfg.Conns) + 256)
	conns, err := dialNetRPC(ctx, cfg.Addr, cfg.Conns)
	if err != nil {
		return res, err
	}
	defer benchkit.CloseAll(conns)
	args := make([]SumArgs, cfg.Inflight)
	replies := make([]SumReply, cfg.Inflight)
	for i := range args {
		args[i] = SumArgs{A: 13, B: 81}
	}
	r, err := load.Run(ctx, load.Config{
		Callers:  cfg.Inflight,
		Warmup:   cfg.Warmup,
		Duration: cfg.Duration,
		Call: func(i int) error {
			return netRPCCall(conns[i%len(conns)], &args[i], &replies[i])
		},
		Abort: func() { benchkit.CloseAll(conns) },
	})
	r.Kind, r.Conns = res.Kind, res.Conns
	return r, err
}
