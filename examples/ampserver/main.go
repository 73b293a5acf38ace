// Command ampserver serves the Sum and Divide commands of Twisted's AMP
// example; Twisted's ampclient.py and examples/ampclient both talk to it.
// Its integers have no size limit, as Python's: Sum(2**62, 2**62) is
// 2**63.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/ampmux/ampmux/amp"
	"github.com/ampmux/ampmux/amp/conn"
	"github.com/ampmux/ampmux/examples/arith"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:1234", "address to listen on (\":1234\" for all interfaces)")
	flag.Parse()
	if err := run(*addr); err != nil {
		fmt.Fprintln(os.Stderr, "ampserver:", err)
		os.Exit(1)
	}
}

func run(addr string) error {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	m := amp.NewMux()
	arith.Register(m)
	srv := &conn.Server{Config: conn.Config{Handler: m}}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if srv.Shutdown(sctx) != nil {
			srv.Close()
		}
	}()
	slog.Info("ampserver listening", "addr", l.Addr().String(), "commands", m.Names())
	if err := srv.Serve(l); !errors.Is(err, conn.ErrServerClosed) {
		return err
	}
	return nil
}
