package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"strconv"
	"time"

	"github.com/ampmux/ampmux/amp"
	"github.com/ampmux/ampmux/amp/box"
	"github.com/ampmux/ampmux/internal/benchkit"
)

// openIdle opens n connections to addr, parallel at a time, and makes one
// Sum call on each (a whole box, so that the mux classifies the connection
// as AMP and the AMP server takes it), checking its answer. The
// connections stay open; on error, those opened are closed.
func openIdle(ctx context.Context, addr string, n, parallel int) ([]net.Conn, error) {
	if n < 1 || parallel < 1 {
		return nil, errors.New("-conns and -parallel must be at least 1")
	}
	return benchkit.OpenAll(ctx, n, parallel, func(ctx context.Context, i int) (net.Conn, error) {
		return openOne(ctx, addr, uint64(i)+1)
	})
}

func closeAll(conns []net.Conn) {
	for _, nc := range conns {
		if nc != nil {
			nc.Close()
		}
	}
}

// openOne dials addr and makes the Sum(13, 81) call tagged tag on the
// connection by hand, with no AMP connection machinery in this process.
func openOne(ctx context.Context, addr string, tag uint64) (net.Conn, error) {
	var d net.Dialer
	dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	nc, err := d.DialContext(dctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	stop := context.AfterFunc(dctx, func() { nc.SetDeadline(time.Now()) })
	err = sumOnce(nc, tag)
	if !stop() { // the deadline fired or ctx ended meanwhile
		err = errors.Join(err, dctx.Err())
	}
	if err != nil {
		nc.Close()
		return nil, err
	}
	nc.SetDeadline(time.Time{})
	return nc, nil
}

func sumOnce(nc net.Conn, tag uint64) error {
	ask := strconv.FormatUint(tag, 16)
	var req, resp box.Box
	req.SetString(amp.KeyAsk, ask)
	req.SetString(amp.KeyCommand, "Sum")
	req.SetString("a", "13")
	req.SetString("b", "81")
	out, err := box.Append(nil, &req)
	if err != nil {
		return err
	}
	if _, err := nc.Write(out); err != nil {
		return err
	}
	if err := box.NewDecoder(nc).Decode(&resp); err != nil {
		if err == io.EOF {
			err = errors.New("server closed the connection before answering")
		}
		return err
	}
	if resp.GetString(amp.KeyAnswer) != ask || resp.GetString("total") != "94" {
		return fmt.Errorf("Sum(13, 81) tagged %s answered %s", ask, resp.String())
	}
	return nil
}

// idleMain opens the connections, prints READY and holds them until stdin
// closes or ctx ends.
func idleMain(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("idle", flag.ContinueOnError)
	fs.SetOutput(stderr)
	addr := fs.String("addr", "", "AMP server address (required)")
	n := fs.Int("conns", 10000, "connections to open and hold")
	parallel := fs.Int("parallel", 64, "connections being opened at once")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *addr == "" || *n < 1 || *parallel < 1 {
		fmt.Fprintln(stderr, "muxbench idle: -addr is required, -conns and -parallel must be positive")
		return errUsage
	}
	if limit := benchkit.RaiseFileLimit(1 << 16); limit != 0 && uint64(*n)+64 > limit {
		return fmt.Errorf("%d connections need more open files than the limit of %d (ulimit -n)", *n, limit)
	}
	t0 := time.Now()
	conns, err := openIdle(ctx, *addr, *n, *parallel)
	if err != nil {
		return err
	}
	defer closeAll(conns)
	if _, err := fmt.Fprintf(stdout, "READY conns=%d seconds=%.3f\n", len(conns), time.Since(t0).Seconds()); err != nil {
		return err
	}
	done := make(chan struct{})
	go func() {
		io.Copy(io.Discard, bufio.NewReader(stdin))
		close(done)
	}()
	select {
	case <-done:
	case <-ctx.Done():
	}
	return nil
}
