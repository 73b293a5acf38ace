package amp_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"

	"github.com/ampmux/ampmux/amp"
	"github.com/ampmux/ampmux/amp/conn"
)

type DivideArgs struct {
	Numerator   int64 `amp:"numerator"`
	Denominator int64 `amp:"denominator"`
}

type DivideReply struct {
	Result float64 `amp:"result"`
}

var ErrZeroDivision = errors.New("division by zero")

var Divide = amp.NewCommand[DivideArgs, DivideReply]("Divide", amp.Spec{
	Errors: map[string]error{"ZERO_DIVISION": ErrZeroDivision},
})

func divide(_ context.Context, a DivideArgs) (DivideReply, error) {
	if a.Denominator == 0 {
		return DivideReply{}, ErrZeroDivision
	}
	return DivideReply{Result: float64(a.Numerator) / float64(a.Denominator)}, nil
}

func Example() {
	m := amp.NewMux()
	amp.HandleInline(m, Divide, divide)
	a, b := net.Pipe()
	server := conn.New(a, &conn.Config{Handler: m})
	defer server.Close()
	client := conn.New(b, nil)
	defer client.Close()

	ctx := context.Background()
	r, err := Divide.Call(ctx, client, DivideArgs{Numerator: 1, Denominator: 4})
	fmt.Println(r.Result, err)
	_, err = Divide.Call(ctx, client, DivideArgs{Numerator: 1, Denominator: 0})
	fmt.Println(errors.Is(err, ErrZeroDivision), err)
	// Output:
	// 0.25 <nil>
	// true amp: remote error ZERO_DIVISION: division by zero
}

// Go keeps many calls in flight from one goroutine, as Twisted's
// callRemote does; each done runs when its answer arrives (on the
// connection's reader goroutine, so it must not block).
func ExampleCommand_Go() {
	m := amp.NewMux()
	amp.HandleInline(m, Divide, divide)
	a, b := net.Pipe()
	server := conn.New(a, &conn.Config{Handler: m})
	defer server.Close()
	client := conn.New(b, nil)
	defer client.Close()

	denominators := []int64{4, 0, 8}
	results := make([]string, len(denominators))
	var wg sync.WaitGroup
	for i, d := range denominators {
		wg.Add(1)
		err := Divide.Go(context.Background(), client, DivideArgs{Numerator: 1, Denominator: d},
			func(_ context.Context, r DivideReply, err error) {
				defer wg.Done()
				if errors.Is(err, ErrZeroDivision) {
					results[i] = "ZERO_DIVISION"
					return
				}
				results[i] = fmt.Sprint(r.Result, err)
			})
		if err != nil {
			wg.Done()
			fmt.Println("not sent:", err)
		}
	}
	wg.Wait()
	for i, d := range denominators {
		fmt.Printf("1/%d: %s\n", d, results[i])
	}
	// Output:
	// 1/4: 0.25 <nil>
	// 1/0: ZERO_DIVISION
	// 1/8: 0.125 <nil>
}
