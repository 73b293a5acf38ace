// Package demo holds the commands of the interoperability schema (the Go
// twin of internal/interop/testdata/schema.py): Sum, Divide and Echo, which
// the ampmux demo server offers to any AMP implementation, and Fail,
// Notify, GetNotes and Slow, which the interop tests use.
package demo

import (
	"context"
	"errors"
	"math/big"
	"sync"
	"time"

	"github.com/ampmux/ampmux/amp"
	"github.com/ampmux/ampmux/amp/conn"
)

type SumArgs struct {
	A *big.Int `amp:"a"`
	B *big.Int `amp:"b"`
}

type SumReply struct {
	Total *big.Int `amp:"total"`
}

// Sum adds two integers of any size.
var Sum = amp.NewCommand[SumArgs, SumReply]("Sum", amp.Spec{})

type DivideArgs struct {
	Numerator   int64 `amp:"numerator"`
	Denominator int64 `amp:"denominator"`
}

type DivideReply struct {
	Result float64 `amp:"result"`
}

// ErrZeroDivision is Python's ZeroDivisionError, declared as ZERO_DIVISION.
var ErrZeroDivision = errors.New("division by zero")

var Divide = amp.NewCommand[DivideArgs, DivideReply]("Divide", amp.Spec{
	Errors: map[string]error{"ZERO_DIVISION": ErrZeroDivision},
})

// Item is one AmpList element of Echo.
type Item struct {
	Name  string   `amp:"name"`
	Value *big.Int `amp:"value"`
}

// EchoValues is both the arguments and the response of Echo: every
// argument type, all optional, returned as received.
type EchoValues struct {
	Integer   *big.Int      `amp:"integer,optional"`
	Bytes     []byte        `amp:"bytes,optional"`
	Text      *string       `amp:"text,optional"`
	Float     *float64      `amp:"float,optional"`
	Boolean   *bool         `amp:"boolean,optional"`
	Decimal   *amp.Decimal  `amp:"decimal,optional"`
	DateTime  *time.Time    `amp:"datetime,optional"`
	List      []*big.Int    `amp:"list,optional"`
	Texts     []string      `amp:"texts,optional"`
	Items     []Item        `amp:"items,optional"`
	Path      *string       `amp:"path,optional,Path"`
	Floats    []float64     `amp:"floats,optional"`
	Decimals  []amp.Decimal `amp:"decimals,optional"`
	DateTimes []time.Time   `amp:"datetimes,optional"`
	Blobs     [][]byte      `amp:"blobs,optional"`
}

var Echo = amp.NewCommand[EchoValues, EchoValues]("Echo", amp.Spec{})

type FailArgs struct {
	Kind string `amp:"kind"`
}

var (
	ErrDeclared = errors.New("declared failure")
	ErrFatal    = errors.New("fatal failure")
)

// Fail fails as asked: "declared", "fatal" or "undeclared".
var Fail = amp.NewCommand[FailArgs, struct{}]("Fail", amp.Spec{
	Errors:      map[string]error{"DECLARED_FAILURE": ErrDeclared},
	FatalErrors: map[string]error{"FATAL_FAILURE": ErrFatal},
})

type NotifyArgs struct {
	Message string `amp:"message"`
}

// Notify asks for no answer; GetNotes returns the messages Notify brought
// on this connection.
var Notify = amp.NewCommand[NotifyArgs, struct{}]("Notify", amp.Spec{NoAnswer: true})

type Notes struct {
	Notes []string `amp:"notes"`
}

var GetNotes = amp.NewCommand[struct{}, Notes]("GetNotes", amp.Spec{})

type SlowArgs struct {
	Delay float64 `amp:"delay"`
}

type SlowReply struct {
	Slept float64 `amp:"slept"`
}

// Slow answers after Delay seconds, so answers can overtake each other.
var Slow = amp.NewCommand[SlowArgs, SlowReply]("Slow", amp.Spec{})

// Register adds responders for every command to m.
func Register(m *amp.Mux) {
	RegisterPublic(m)
	registerTesting(m)
}

// RegisterPublic adds Sum, Divide and Echo: what `ampmux serve --demo`
// offers anyone checking interoperability.
func RegisterPublic(m *amp.Mux) {
	amp.HandleInline(m, Sum, func(_ context.Context, a SumArgs) (SumReply, error) {
		return SumReply{Total: new(big.Int).Add(a.A, a.B)}, nil
	})
	amp.HandleInline(m, Divide, func(_ context.Context, a DivideArgs) (DivideReply, error) {
		if a.Denominator == 0 {
			return DivideReply{}, ErrZeroDivision
		}
		return DivideReply{Result: float64(a.Numerator) / float64(a.Denominator)}, nil
	})
	amp.HandleInline(m, Echo, func(_ context.Context, v EchoValues) (EchoValues, error) {
		return v, nil
	})
}

// registerTesting adds the commands only the interop tests need.
func registerTesting(m *amp.Mux) {
	amp.HandleInline(m, Fail, func(_ context.Context, a FailArgs) (struct{}, error) {
		switch a.Kind {
		case "declared":
			return struct{}{}, described{"declared: " + a.Kind, ErrDeclared}
		case "fatal":
			return struct{}{}, described{"fatal", ErrFatal}
		}
		return struct{}{}, errors.New("undeclared")
	})
	amp.HandleInline(m, Notify, func(ctx context.Context, a NotifyArgs) (struct{}, error) {
		n := notesOf(ctx)
		n.mu.Lock()
		n.msgs = append(n.msgs, a.Message)
		n.mu.Unlock()
		return struct{}{}, nil
	})
	amp.HandleInline(m, GetNotes, func(ctx context.Context, _ struct{}) (Notes, error) {
		n := notesOf(ctx)
		n.mu.Lock()
		defer n.mu.Unlock()
		return Notes{Notes: append([]string{}, n.msgs...)}, nil
	})
	amp.Handle(m, Slow, func(ctx context.Context, a SlowArgs) (SlowReply, error) {
		t := time.NewTimer(time.Duration(a.Delay * float64(time.Second)))
		defer t.Stop()
		select {
		case <-t.C:
			return SlowReply{Slept: a.Delay}, nil
		case <-ctx.Done():
			return SlowReply{}, ctx.Err()
		}
	})
}

type notes struct {
	mu   sync.Mutex
	msgs []string
}

// Per-connection notes, keyed by the connection serving the call.
var allNotes sync.Map // *conn.Conn -> *notes

func notesOf(ctx context.Context) *notes {
	c := conn.FromContext(ctx)
	n, loaded := allNotes.LoadOrStore(c, &notes{})
	if !loaded && c != nil {
		go func() { <-c.Done(); allNotes.Delete(c) }()
	}
	return n.(*notes)
}

// described is err with the text Twisted's responder would give it (the
// error answer's description is the error's text).
type described struct {
	msg string
	err error
}

func (d described) Error() string { return d.msg }
func (d described) Unwrap() error { return d.err }
