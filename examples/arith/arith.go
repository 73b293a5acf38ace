// Package arith declares the commands of Twisted's AMP example
// (doc/core/examples/ampserver.py and ampclient.py), shared by the Go
// example server and client.
package arith

import (
	"context"
	"errors"

	"github.com/ampmux/ampmux/amp"
)

type SumArgs struct {
	A int64 `amp:"a"`
	B int64 `amp:"b"`
}

type SumReply struct {
	Total int64 `amp:"total"`
}

// Sum is `class Sum(amp.Command)`: arguments a, b (Integer), response
// total (Integer).
var Sum = amp.NewCommand[SumArgs, SumReply]("Sum", amp.Spec{})

type DivideArgs struct {
	Numerator   int64 `amp:"numerator"`
	Denominator int64 `amp:"denominator"`
}

type DivideReply struct {
	Result float64 `amp:"result"`
}

// ErrZeroDivision travels as ZERO_DIVISION, as Python's ZeroDivisionError
// does in the Twisted example.
var ErrZeroDivision = errors.New("division by zero")

var Divide = amp.NewCommand[DivideArgs, DivideReply]("Divide", amp.Spec{
	Errors: map[string]error{"ZERO_DIVISION": ErrZeroDivision},
})

// Register adds the responders. Both are pure computations, so they run
// inline on the connection's reader goroutine.
func Register(m *amp.Mux) {
	amp.HandleInline(m, Sum, func(_ context.Context, a SumArgs) (SumReply, error) {
		return SumReply{Total: a.A + a.B}, nil
	})
	amp.HandleInline(m, Divide, func(_ context.Context, a DivideArgs) (DivideReply, error) {
		if a.Denominator == 0 {
			return DivideReply{}, ErrZeroDivision
		}
		return DivideReply{Result: float64(a.Numerator) / float64(a.Denominator)}, nil
	})
}
