// Command rpc holds two contenders of the comparison, a server and a
// client each, of the same unary Sum. grpc-go runs over HTTP/2 without TLS
// (insecure credentials, loopback), with a raw-bytes codec instead of
// protobuf, so that no generated code is needed and the messages are as
// small as they get (two varints in, one varint out). The standard
// library's net/rpc runs gob-encoded (its default codec) over plain TCP:
// Calc.Sum(SumArgs{A, B}) → SumReply{Total} (netrpc.go).
//
//	rpc serve        -addr 127.0.0.1:0 [-cpuprofile F]
//	rpc grpc         -addr A [-inflight 16] [-conns 1] [-duration 3s] [-warmup 500ms] [-cpuprofile F]
//	rpc serve-netrpc -addr 127.0.0.1:0 [-cpuprofile F]
//	rpc netrpc       -addr A [-inflight 16] [-conns 1] [-duration 3s] [-warmup 500ms] [-cpuprofile F]
//	rpc version
//
// serve and serve-netrpc print "LISTENING <addr>" and serve until stdin
// closes or SIGTERM/SIGINT. grpc and netrpc run -inflight callers (call,
// wait, call again) spread over -conns client connections (one HTTP/2
// connection, or one *rpc.Client, each) and print a RESULT line like
// callbench's. version prints the grpc-go version this binary was built
// with.
package main

import (
	"context"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"runtime/debug"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/encoding"

	"github.com/ampmux/ampmux/internal/benchkit"
	"github.com/ampmux/ampmux/internal/benchkit/load"
)

// codecName is the content-subtype of the raw codec
// (application/grpc+sumraw on the wire).
const codecName = "sumraw"

// sumMethod is the full method name of the one RPC.
const sumMethod = "/bench.Calc/Sum"

// rawCodec marshals *[]byte as itself: messages are bytes the handler
// and the caller encode by hand.
type rawCodec struct{}

func (rawCodec) Name() string { return codecName }

func (rawCodec) Marshal(v any) ([]byte, error) {
	p, ok := v.(*[]byte)
	if !ok {
		return nil, fmt.Errorf("sumraw codec: cannot marshal %T", v)
	}
	return *p, nil
}

func (rawCodec) Unmarshal(data []byte, v any) error {
	p, ok := v.(*[]byte)
	if !ok {
		return fmt.Errorf("sumraw codec: cannot unmarshal into %T", v)
	}
	*p = append((*p)[:0], data...)
	return nil
}

func init() { encoding.RegisterCodec(rawCodec{}) }

// encodeArgs writes Sum's arguments as two unsigned varints.
func encodeArgs(dst []byte, a, b uint64) []byte {
	return binary.AppendUvarint(binary.AppendUvarint(dst, a), b)
}

// sum decodes two varints and returns their sum as one varint.
func sum(req []byte) ([]byte, error) {
	a, n := binary.Uvarint(req)
	if n <= 0 {
		return nil, errors.New("bad a")
	}
	b, m := binary.Uvarint(req[n:])
	if m <= 0 || n+m != len(req) {
		return nil, errors.New("bad b")
	}
	return binary.AppendUvarint(make([]byte, 0, binary.MaxVarintLen64), a+b), nil
}

// calcServer is the service's (empty) implementation type.
type calcServer interface{}

var serviceDesc = grpc.ServiceDesc{
	ServiceName: "bench.Calc",
	HandlerType: (*calcServer)(nil),
	Methods: []grpc.MethodDesc{{
		MethodName: "Sum",
		Handler: func(_ any, ctx context.Context, dec func(any) error, _ grpc.UnaryServerInterceptor) (any, error) {
			var req []byte
			if err := dec(&req); err != nil {
				return nil, err
			}
			out, err := sum(req)
			if err != nil {
				return nil, err
			}
			return &out, nil
		},
	}},
	Metadata: "bench/rpc/main.go",
}

// newServer returns a gRPC server with the Sum service and default
// options. (Static 1 MiB flow-control windows, which stop BDP pings, and
// shared write buffers were tried: no faster here, slower at 256 in
// flight.)
func newServer() *grpc.Server {
	s := grpc.NewServer()
	s.RegisterService(&serviceDesc, struct{}{})
	return s
}

// dial opens n client connections to addr, each one HTTP/2 connection,
// and waits until each is ready (one call on each).
func dial(ctx context.Context, addr string, n int) ([]*grpc.ClientConn, error) {
	opts := []grpc.DialOption{
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.CallContentSubtype(codecName)),
	}
	conns := make([]*grpc.ClientConn, n)
	closeAll := func() {
		for _, c := range conns {
			if c != nil {
				c.Close()
			}
		}
	}
	for i := range conns {
		c, err := grpc.NewClient("passthrough:///"+addr, opts...)
		if err != nil {
			closeAll()
			return nil, err
		}
		conns[i] = c
	}
	// One call on each, 64 at a time, so that the measure holds no dialing.
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		first error
		sem   = make(chan struct{}, 64)
	)
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for _, c := range conns {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			if err := callOnce(cctx, c, encodeArgs(nil, 13, 81), new([]byte)); err != nil {
				mu.Lock()
				if first == nil {
					first = err
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if first != nil {
		closeAll()
		return nil, first
	}
	return conns, nil
}

func callOnce(ctx context.Context, c *grpc.ClientConn, args []byte, reply *[]byte) error {
	if err := c.Invoke(ctx, sumMethod, &args, reply); err != nil {
		return fmt.Errorf("Sum call: %w", err)
	}
	if len(*reply) != 1 || (*reply)[0] != 94 {
		return fmt.Errorf("Sum(13, 81) answered %x, want 5e", *reply)
	}
	return nil
}

type clientConfig struct {
	Addr     string
	Inflight int
	Conns    int
	Duration time.Duration
	Warmup   time.Duration
}

// runClient runs cfg.Inflight callers over cfg.Conns connections (caller i
// on connection i mod Conns).
func runClient(ctx context.Context, cfg clientConfig) (load.Result, error) {
	res := load.Result{Kind: "grpc", Inflight: cfg.Inflight, Conns: cfg.Conns}
	if cfg.Inflight < 1 || cfg.Conns < 1 {
		return res, errors.New("-inflight and -conns must be at least 1")
	}
	load.RaiseFileLimit(uint64(cfg.Conns) + 256)
	conns, err := dial(ctx, cfg.Addr, cfg.Conns)
	if err != nil {
		return res, err
	}
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	args := encodeArgs(nil, 13, 81)
	replies := make([][]byte, cfg.Inflight)
	bg := context.Background()
	r, err := load.Run(ctx, load.Config{
		Callers:  cfg.Inflight,
		Warmup:   cfg.Warmup,
		Duration: cfg.Duration,
		Call: func(i int) error {
			return callOnce(bg, conns[i%len(conns)], args, &replies[i])
		},
		Abort: func() {
			for _, c := range conns {
				c.Close()
			}
		},
	})
	r.Kind, r.Conns = res.Kind, res.Conns
	return r, err
}

var errUsage = benchkit.ErrUsage

func main() {
	benchkit.Main("rpc", func(ctx context.Context) error {
		return dispatch(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	})
}

const usageText = `usage: rpc <command> [flags]

commands:
  serve         gRPC server (grpc-go, h2c, raw codec) answering /bench.Calc/Sum
  grpc          gRPC client: -inflight callers over -conns connections
  serve-netrpc  net/rpc server (gob over TCP) answering Calc.Sum
  netrpc        net/rpc client: -inflight callers over -conns connections
  version       print the grpc-go version
`

func dispatch(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usageText)
		return errUsage
	}
	cmd, rest := args[0], args[1:]
	fs := flag.NewFlagSet(cmd, flag.ContinueOnError)
	fs.SetOutput(stderr)
	cpuprofile := fs.String("cpuprofile", "", "write a CPU profile to `file`")
	switch cmd {
	case "serve", "serve-netrpc":
		addr := fs.String("addr", "127.0.0.1:0", "address to listen on")
		if err := parse(fs, rest); err != nil {
			return err
		}
		stopProfile, err := benchkit.StartCPUProfile(*cpuprofile)
		if err != nil {
			return err
		}
		defer stopProfile()
		if cmd == "serve-netrpc" {
			return serveNetRPC(ctx, *addr, stdin, stdout)
		}
		return serve(ctx, *addr, stdin, stdout)
	case "grpc", "netrpc":
		var cfg clientConfig
		fs.StringVar(&cfg.Addr, "addr", "", "server address (required)")
		fs.IntVar(&cfg.Inflight, "inflight", 1, "callers at once (over all connections)")
		fs.IntVar(&cfg.Conns, "conns", 1, "client connections")
		fs.DurationVar(&cfg.Duration, "duration", 3*time.Second, "length of the measured window")
		fs.DurationVar(&cfg.Warmup, "warmup", 500*time.Millisecond, "unmeasured run before the window")
		if err := parse(fs, rest); err != nil {
			return err
		}
		if cfg.Addr == "" || cfg.Duration <= 0 || cfg.Warmup < 0 {
			fmt.Fprintf(stderr, "rpc %s: -addr is required, -duration must be positive\n", cmd)
			return errUsage
		}
		stopProfile, err := benchkit.StartCPUProfile(*cpuprofile)
		if err != nil {
			return err
		}
		run := runClient
		if cmd == "netrpc" {
			run = runNetRPCClient
		}
		res, err := run(ctx, cfg)
		stopProfile()
		if err == nil || res.Calls > 0 || res.Errors > 0 {
			fmt.Fprintln(stdout, res)
		}
		return err
	case "version":
		fmt.Fprintln(stdout, grpcVersion())
		return nil
	case "-h", "-help", "--help", "help":
		fmt.Fprint(stdout, usageText)
		return nil
	}
	fmt.Fprintf(stderr, "rpc: unknown command %q\n\n%s", cmd, usageText)
	return errUsage
}

func parse(fs *flag.FlagSet, args []string) error {
	return benchkit.ParseFlags("rpc", fs, args)
}

// serve runs the server until stdin closes or ctx ends.
func serve(ctx context.Context, addr string, stdin io.Reader, stdout io.Writer) error {
	load.RaiseFileLimit(1 << 16)
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	s := newServer()
	done := make(chan error, 1)
	go func() { done <- s.Serve(l) }()
	err = benchkit.Announce(ctx, stdout, stdin, l.Addr(), done)
	s.Stop()
	return err
}

func grpcVersion() string {
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, d := range bi.Deps {
			if d.Path == "google.golang.org/grpc" {
				return "grpc-go " + d.Version
			}
		}
	}
	return "grpc-go " + grpc.Version
}
