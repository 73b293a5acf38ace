package load

import (
	"context"
	"fmt"

	"github.com/ampmux/ampmux/amp/box"
	"github.com/ampmux/ampmux/amp/conn"
	"github.com/ampmux/ampmux/internal/benchkit"
)

// AMP is a load of AMP calls on open connections, as callbench's client
// and ampmux bench make it: caller (or slot) i calls on
// Conns[i%len(Conns)], with boxes of its own, so that the raw and async
// APIs allocate nothing per call.
type AMP struct {
	Conns   []*conn.Conn
	Command string
	// Args fills one caller's arguments, once (nil: none); Check, if set,
	// checks each answer.
	Args  func(*box.Box)
	Check func(*box.Box) error
	// API: raw (Conn.CallBox), typed (benchkit.Sum's Call; Command Sum
	// only) or async (Conn.Go: slots, no goroutine per caller, each
	// slot's next call sent from its done callback, as a pipelining
	// client does).
	API string
}

// SumLoad is Sum(13, 81) on conns, checked.
func SumLoad(conns []*conn.Conn, api string) AMP {
	return AMP{Conns: conns, Command: "Sum", API: api, Check: benchkit.CheckSum, Args: func(b *box.Box) {
		b.SetString("a", "13")
		b.SetString("b", "81")
	}}
}

// Config returns the load of callers callers (Call or Start set, and
// Abort, which closes the connections' sockets); the caller sets the
// rest.
func (a AMP) Config(callers int) (Config, error) {
	if len(a.Conns) == 0 || callers < 1 {
		return Config{}, fmt.Errorf("load: %d callers on %d connections", callers, len(a.Conns))
	}
	args := make([]box.Box, callers)
	replies := make([]box.Box, callers)
	for i := range args {
		if a.Args != nil {
			a.Args(&args[i])
		}
	}
	check := func(reply *box.Box, err error) error {
		switch {
		case err != nil:
			return fmt.Errorf("%s call: %w", a.Command, err)
		case a.Check != nil:
			return a.Check(reply)
		}
		return nil
	}
	on := func(i int) *conn.Conn { return a.Conns[i%len(a.Conns)] }
	bg := context.Background() // no per-call timeout: the watchdog closes the sockets
	cfg := Config{Callers: callers, Abort: func() {
		for _, c := range a.Conns {
			c.NetConn().Close()
		}
	}}
	switch a.API {
	case "raw":
		cfg.Call = func(i int) error {
			err := on(i).CallBox(bg, a.Command, &args[i], &replies[i])
			return check(&replies[i], err)
		}
	case "typed":
		if a.Command != "Sum" {
			return Config{}, fmt.Errorf("load: the typed API calls Sum only, not %s", a.Command)
		}
		cfg.Call = func(i int) error {
			r, err := benchkit.Sum.Call(bg, on(i), benchkit.SumArgs{A: 13, B: 81})
			switch {
			case err != nil:
				return fmt.Errorf("Sum call: %w", err)
			case r.Total != 94:
				return fmt.Errorf("%w: Sum(13, 81) answered total %d, want 94", benchkit.ErrWrongAnswer, r.Total)
			}
			return nil
		}
	case "async":
		// One done callback per slot, made once. A slot has one call at a
		// time: its done callback writes slotCtx[i] and outcome[i] is set
		// before the slot's next Go, which orders them before the next
		// callback (on whatever goroutine: the reader, or the one failing
		// the pending calls). So nothing is written after outcome returns:
		// the next callback may already run (review finding).
		dones := make([]func(context.Context, *box.Box, error), callers)
		outcome := make([]func(error), callers)
		slotCtx := make([]context.Context, callers)
		for i := range dones {
			slotCtx[i] = bg
			dones[i] = func(ctx context.Context, reply *box.Box, err error) {
				slotCtx[i] = ctx // the next call goes out from this callback, with its context
				outcome[i](check(reply, err))
			}
		}
		cfg.Start = func(i int, done func(error)) error {
			outcome[i] = done
			if err := on(i).Go(slotCtx[i], a.Command, &args[i], dones[i]); err != nil {
				return fmt.Errorf("%s call: %w", a.Command, err)
			}
			return nil
		}
	default:
		return Config{}, fmt.Errorf("load: API %q is none of raw, typed, async", a.API)
	}
	return cfg, nil
}
