package arith_test

import (
	"context"
	"io"
	"log/slog"
	"math"
	"math/big"
	"net"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/ampmux/ampmux/amp"
	"github.com/ampmux/ampmux/amp/conn"
	"github.com/ampmux/ampmux/examples/arith"
	"github.com/ampmux/ampmux/internal/interop"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// serve runs the example's responders on a loopback port.
func serve(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	m := amp.NewMux()
	arith.Register(m)
	// Logger: the undeclared errors below are logged, on purpose.
	srv := &conn.Server{Config: conn.Config{Handler: m, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}}
	served := make(chan struct{})
	go func() {
		defer close(served)
		srv.Serve(l)
	}()
	t.Cleanup(func() {
		srv.Close()
		<-served
	})
	return l.Addr().String()
}

func dial(t *testing.T, addr string) *conn.Conn {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := conn.Dial(ctx, "tcp", addr, nil)
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	return c
}

func num(t *testing.T, s string) *big.Int {
	n, ok := new(big.Int).SetString(s, 10)
	require.True(t, ok, s)
	return n
}

// label shortens a long number for a subtest name.
func label(s string) string {
	if len(s) <= 24 {
		return s
	}
	return strconv.Itoa(len(s)) + "_digits"
}

// Python's ints are unbounded, and so are the example's: the sums that
// overflow int64 come out as Twisted's do.
func TestSum(t *testing.T) {
	c := dial(t, serve(t))
	tests := []struct{ a, b, total string }{
		{"13", "81", "94"},
		{"4611686018427387904", "4611686018427387904", "9223372036854775808"}, // 2**62 + 2**62
		{"9223372036854775807", "1", "9223372036854775808"},
		{"-9223372036854775808", "-1", "-9223372036854775809"},
		{"1" + strings.Repeat("0", 100), "1" + strings.Repeat("0", 100), "2" + strings.Repeat("0", 100)},
		{"18446744073709551616", "-18446744073709551616", "0"},
	}
	for _, tt := range tests {
		t.Run(label(tt.a)+"+"+label(tt.b), func(t *testing.T) {
			r, err := arith.Sum.Call(context.Background(), c, arith.SumArgs{A: num(t, tt.a), B: num(t, tt.b)})
			require.NoError(t, err)
			require.Equal(t, tt.total, r.Total.String())
		})
	}
}

// pow2m is 2**a - 2**b - c, in decimal.
func pow2m(a, b uint, c int64) string {
	n := new(big.Int).Lsh(big.NewInt(1), a)
	n.Sub(n, new(big.Int).Lsh(big.NewInt(1), b))
	return n.Sub(n, big.NewInt(c)).String()
}

// Divide is Python's float(numerator) / denominator.
func TestDivide(t *testing.T) {
	addr := serve(t)
	tests := []struct {
		n, d   string
		result float64
		is     error
	}{
		{"1", "4", 0.25, nil},
		{"1234", "0", 0, arith.ErrZeroDivision},
		{"18446744073709551617", "3", 6.148914691236517e+18, nil}, // 2**64 + 1
		{"-7", "2", -3.5, nil},
		{"0", "-5", math.Copysign(0, -1), nil},
		{pow2m(1024, 970, 1), "1", math.MaxFloat64, nil}, // the largest int float() takes
		// float() of 2**1024 or more is an OverflowError, which the example
		// does not declare: UNKNOWN, then the connection is dropped.
		{pow2m(1024, 970, 0), "1", 0, amp.ErrUnknownRemote},
		{"1", "1" + strings.Repeat("0", 400), 0, amp.ErrUnknownRemote},
	}
	for _, tt := range tests {
		t.Run(label(tt.n)+"/"+label(tt.d), func(t *testing.T) {
			c := dial(t, addr)
			r, err := arith.Divide.Call(context.Background(), c, arith.DivideArgs{Numerator: num(t, tt.n), Denominator: num(t, tt.d)})
			if tt.is != nil {
				require.ErrorIs(t, err, tt.is)
				return
			}
			require.NoError(t, err)
			require.Equal(t, math.Float64bits(tt.result), math.Float64bits(r.Result), "%v", r.Result)
		})
	}
}

// Twisted's ampclient.py, extended past 64 bits, gets from the Go example
// exactly what it gets from Twisted's own ampserver.py.
func TestTwistedClient(t *testing.T) {
	script, err := filepath.Abs(filepath.Join("testdata", "twisted_ampclient.py"))
	require.NoError(t, err)
	want := strings.Join([]string{
		"Sum(13, 81) = 94",
		"Sum(4611686018427387904, 4611686018427387904) = 9223372036854775808",
		"Sum(-9223372036854775808, -1) = -9223372036854775809",
		"Sum(1000000000000000000000000000000, -1000000000000000000000000000001) = -1",
		"Divide(1234, 0): ZERO_DIVISION",
		"Divide(1, 4) = 0.25",
		"Divide(18446744073709551617, 3) = 6.148914691236517e+18",
	}, "\n") + "\n"
	tests := []struct {
		name string
		args func(t *testing.T) []string
	}{
		{"Go server", func(t *testing.T) []string {
			host, port, err := net.SplitHostPort(serve(t))
			require.NoError(t, err)
			return []string{"--host", host, "--port", port}
		}},
		{"Twisted server", func(*testing.T) []string { return []string{"--own-server"} }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out := interop.RunPython(t, script, tt.args(t)...)
			require.Equal(t, want, string(out))
		})
	}
}
