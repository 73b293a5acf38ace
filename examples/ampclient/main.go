// Command ampclient calls Sum(13, 81) and Divide(1234, 0) on an AMP server,
// as Twisted's ampclient.py does, and exits 0 when both behaved: the total
// is 94 and the division failed with ZERO_DIVISION.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"math/big"
	"os"
	"time"

	"github.com/ampmux/ampmux/amp/conn"
	"github.com/ampmux/ampmux/examples/arith"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:1234", "address of the AMP server")
	flag.Parse()
	if err := run(*addr); err != nil {
		fmt.Fprintln(os.Stderr, "ampclient:", err)
		os.Exit(1)
	}
}

func run(addr string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := conn.Dial(ctx, "tcp", addr, nil)
	if err != nil {
		return err
	}
	defer c.Close()
	sum, err := arith.Sum.Call(ctx, c, arith.SumArgs{A: big.NewInt(13), B: big.NewInt(81)})
	if err != nil {
		return fmt.Errorf("Sum: %w", err)
	}
	fmt.Println("Done with math:", sum.Total)
	if sum.Total.Cmp(big.NewInt(94)) != 0 {
		return fmt.Errorf("Sum(13, 81) = %d", sum.Total)
	}
	_, err = arith.Divide.Call(ctx, c, arith.DivideArgs{Numerator: big.NewInt(1234), Denominator: big.NewInt(0)})
	if !errors.Is(err, arith.ErrZeroDivision) {
		return fmt.Errorf("Divide(1234, 0) did not fail with ZERO_DIVISION: %v", err)
	}
	fmt.Println("Divided by zero: returning INF")
	return nil
}
