// Package arith declares the commands of Twisted's AMP example
// (docs/core/examples/ampserver.py and ampclient.py), shared by the Go
// example server and client.
//
// Twisted's Integer is a Python int, which has no size limit, so the
// arguments are *big.Int: Sum(2**62, 2**62) is 2**63 here too, not an
// int64 overflow.
package arith

import (
	"context"
	"errors"
	"math"
	"math/big"

	"github.com/ampmux/ampmux/amp"
)

type SumArgs struct {
	A *big.Int `amp:"a"`
	B *big.Int `amp:"b"`
}

type SumReply struct {
	Total *big.Int `amp:"total"`
}

// Sum is `class Sum(amp.Command)`: arguments a, b (Integer), response
// total (Integer).
var Sum = amp.NewCommand[SumArgs, SumReply]("Sum", amp.Spec{})

type DivideArgs struct {
	Numerator   *big.Int `amp:"numerator"`
	Denominator *big.Int `amp:"denominator"`
}

type DivideReply struct {
	Result float64 `amp:"result"`
}

// ErrZeroDivision travels as ZERO_DIVISION, as Python's ZeroDivisionError
// does in the Twisted example.
var ErrZeroDivision = errors.New("division by zero")

// Divide is `class Divide(amp.Command)`: numerator, denominator (Integer),
// response result (Float), error ZERO_DIVISION.
var Divide = amp.NewCommand[DivideArgs, DivideReply]("Divide", amp.Spec{
	Errors: map[string]error{"ZERO_DIVISION": ErrZeroDivision},
})

// Register adds the responders. Both are pure computations, so they run
// inline on the connection's reader goroutine.
func Register(m *amp.Mux) {
	amp.HandleInline(m, Sum, func(_ context.Context, a SumArgs) (SumReply, error) {
		return SumReply{Total: new(big.Int).Add(a.A, a.B)}, nil
	})
	amp.HandleInline(m, Divide, func(_ context.Context, a DivideArgs) (DivideReply, error) {
		return divide(a.Numerator, a.Denominator)
	})
}

// divide is Twisted's float(numerator) / denominator: both ints rounded to
// the nearest float first, as Python converts them, then one division.
func divide(n, d *big.Int) (DivideReply, error) {
	fn, _ := new(big.Float).SetInt(n).Float64()
	fd, _ := new(big.Float).SetInt(d).Float64()
	if math.IsInf(fn, 0) || math.IsInf(fd, 0) {
		// Python's OverflowError, which the example does not declare: it
		// answers UNKNOWN and drops the connection, as Twisted does.
		return DivideReply{}, errors.New("arith: int too large to convert to float")
	}
	if fd == 0 {
		return DivideReply{}, ErrZeroDivision
	}
	return DivideReply{Result: fn / fd}, nil
}
