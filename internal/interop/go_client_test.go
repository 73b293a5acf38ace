package interop

import (
	"context"
	"errors"
	"math"
	"math/big"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ampmux/ampmux/amp"
	"github.com/ampmux/ampmux/amp/box"
	"github.com/ampmux/ampmux/amp/conn"
	"github.com/ampmux/ampmux/internal/demo"
)

func dialTwisted(t *testing.T, addr string) *conn.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := conn.Dial(ctx, "tcp", addr, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func bigInt(s string) *big.Int {
	n, ok := new(big.Int).SetString(s, 10)
	if !ok {
		panic(s)
	}
	return n
}

func ptr[T any](v T) *T { return &v }

func echoCases() map[string]demo.EchoValues {
	allBytes := make([]byte, 65535)
	for i := range allBytes {
		allBytes[i] = byte(i)
	}
	zones := []*time.Location{time.UTC, time.FixedZone("", -(5*3600 + 30*60)), time.FixedZone("", 14*3600)}
	cases := map[string]demo.EchoValues{
		"empty":            {},
		"int zero":         {Integer: big.NewInt(0)},
		"int64 max":        {Integer: big.NewInt(math.MaxInt64)},
		"int64 max+1":      {Integer: bigInt("9223372036854775808")},
		"int64 min-1":      {Integer: bigInt("-9223372036854775809")},
		"googol":           {Integer: new(big.Int).Exp(big.NewInt(10), big.NewInt(100), nil)},
		"minus googol":     {Integer: new(big.Int).Neg(new(big.Int).Exp(big.NewInt(10), big.NewInt(100), nil))},
		"bytes empty":      {Bytes: []byte{}},
		"bytes 65535":      {Bytes: allBytes},
		"text empty":       {Text: ptr("")},
		"text non-ascii":   {Text: ptr("héllo wörld ✓ 𝄞 日本")},
		"text 60000 bytes": {Text: ptr(strings.Repeat("é", 30000))},
		"bool true":        {Boolean: ptr(true)},
		"bool false":       {Boolean: ptr(false)},
		"path":             {Path: ptr("/tmp/ü x")},
		"list empty":       {List: []*big.Int{}},
		"list":             {List: []*big.Int{big.NewInt(0), big.NewInt(-1), bigInt("123456789012345678901234567890")}},
		"texts":            {Texts: []string{"", "a", "ü"}},
		"texts empty":      {Texts: []string{}},
		"items":            {Items: []demo.Item{{Name: "a", Value: big.NewInt(1)}, {Name: "ü", Value: bigInt("-1000000000000000000000000000000")}}},
		"items empty":      {Items: []demo.Item{}},
		"floats":           {Floats: []float64{math.NaN(), math.Inf(1), math.Inf(-1), 0, math.Copysign(0, -1), 1e16, 1e-5}},
		"blobs":            {Blobs: [][]byte{{}, make([]byte, 10)}},
		"datetimes": {DateTimes: []time.Time{
			time.Date(2012, 1, 23, 12, 34, 56, 54321000, time.UTC),
			time.Date(1, 1, 1, 0, 0, 0, 0, zones[1]),
		}},
	}
	for i, f := range []float64{0, math.Copysign(0, -1), 1.5, 1e16, 1e-5, 5e-324, math.MaxFloat64, math.NaN(), math.Inf(1), math.Inf(-1), 0.1, 1.0 / 3} {
		cases["float "+big.NewInt(int64(i)).String()] = demo.EchoValues{Float: ptr(f)}
	}
	var decs []amp.Decimal
	for _, s := range []string{"0", "-0", "1.50", "1E+2", "-1.234567890123456789012345678901234567890E-30", "Infinity", "-Infinity", "NaN", "-NaN", "sNaN", "0.000001", "1E-7"} {
		d := amp.MustParseDecimal(s)
		decs = append(decs, d)
		cases["decimal "+s] = demo.EchoValues{Decimal: &d}
	}
	cases["decimals"] = demo.EchoValues{Decimals: decs}
	for _, z := range zones {
		for _, tm := range []time.Time{
			time.Date(2026, 11, 26, 2, 23, 0, 999999000, z),
			time.Date(1, 1, 1, 0, 0, 0, 0, z),
			time.Date(9999, 12, 31, 23, 59, 59, 0, z),
		} {
			cases["datetime "+tm.Format(time.RFC3339Nano)] = demo.EchoValues{DateTime: ptr(tm)}
		}
	}
	all := demo.EchoValues{}
	for _, c := range cases {
		mergeEcho(&all, c)
	}
	cases["all at once"] = all
	return cases
}

func mergeEcho(dst *demo.EchoValues, src demo.EchoValues) {
	if src.Integer != nil {
		dst.Integer = src.Integer
	}
	if src.Text != nil && len(*src.Text) < 100 {
		dst.Text = src.Text
	}
	if src.Float != nil {
		dst.Float = src.Float
	}
	if src.Boolean != nil {
		dst.Boolean = src.Boolean
	}
	if src.Decimal != nil {
		dst.Decimal = src.Decimal
	}
	if src.DateTime != nil {
		dst.DateTime = src.DateTime
	}
	if src.List != nil {
		dst.List = src.List
	}
	if src.Texts != nil {
		dst.Texts = src.Texts
	}
	if src.Items != nil {
		dst.Items = src.Items
	}
	if src.Path != nil {
		dst.Path = src.Path
	}
	if src.Floats != nil {
		dst.Floats = src.Floats
	}
	if src.Blobs != nil {
		dst.Blobs = src.Blobs
	}
	if src.DateTimes != nil {
		dst.DateTimes = src.DateTimes
	}
}

func wire(t *testing.T, v demo.EchoValues) map[string]string {
	var b box.Box
	if err := demo.Echo.EncodeArgs(&b, &v, nil); err != nil {
		t.Fatal(err)
	}
	return b.Map()
}

// TestGoClientAgainstTwistedServer calls a Twisted server from Go with
// every argument type and checks the values come back equal: on the wire
// (Twisted re-encodes what it decoded) and as Go values.
func TestGoClientAgainstTwistedServer(t *testing.T) {
	addr := StartTwistedServer(t)
	c := dialTwisted(t, addr)
	ctx := testCtx(t)

	t.Run("echo", func(t *testing.T) {
		for name, sent := range echoCases() {
			got, err := demo.Echo.Call(ctx, c, sent)
			if err != nil {
				t.Errorf("%s: %v", name, err)
				continue
			}
			ws, wg := wire(t, sent), wire(t, got)
			if len(ws) != len(wg) {
				t.Errorf("%s: sent keys %d, got %d", name, len(ws), len(wg))
			}
			for k, v := range ws {
				if wg[k] != v {
					t.Errorf("%s: %s sent %.60q, got back %.60q", name, k, v, wg[k])
				}
			}
			if sent.Integer != nil && sent.Integer.Cmp(got.Integer) != 0 {
				t.Errorf("%s: integer %v != %v", name, sent.Integer, got.Integer)
			}
			if sent.DateTime != nil {
				_, so := sent.DateTime.Zone()
				_, goff := got.DateTime.Zone()
				if !sent.DateTime.Equal(*got.DateTime) || so != goff {
					t.Errorf("%s: datetime %v != %v", name, sent.DateTime, got.DateTime)
				}
			}
			if sent.Float != nil && !(math.IsNaN(*sent.Float) && math.IsNaN(*got.Float)) &&
				math.Float64bits(*sent.Float) != math.Float64bits(*got.Float) {
				t.Errorf("%s: float %v != %v", name, *sent.Float, *got.Float)
			}
		}
	})

	t.Run("sum", func(t *testing.T) {
		r, err := demo.Sum.Call(ctx, c, demo.SumArgs{A: big.NewInt(13), B: big.NewInt(81)})
		if err != nil || r.Total.Int64() != 94 {
			t.Fatalf("Sum(13, 81) = %v, %v", r.Total, err)
		}
	})

	t.Run("pipelined 5000", func(t *testing.T) {
		var wg sync.WaitGroup
		errs := make(chan error, 5000)
		for i := range 5000 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				r, err := demo.Sum.Call(ctx, c, demo.SumArgs{A: big.NewInt(int64(i)), B: big.NewInt(1)})
				if err == nil && r.Total.Int64() != int64(i+1) {
					err = errors.New("wrong total")
				}
				if err != nil {
					errs <- err
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
	})

	// Conn.Go: 5,000 calls in flight from one goroutine, the next ones
	// sent from the callbacks of the first, all answered by Twisted.
	t.Run("Go pipelined 5000", func(t *testing.T) {
		const n = 5000
		totals := make([]string, n)
		var wg sync.WaitGroup
		wg.Add(n)
		send := func(i int) error {
			var args box.Box
			args.SetString("a", strconv.Itoa(i))
			args.SetString("b", "1")
			return c.Go(ctx, "Sum", &args, func(_ context.Context, reply *box.Box, err error) {
				defer wg.Done()
				if err != nil {
					t.Errorf("Sum(%d, 1): %v", i, err)
					return
				}
				totals[i] = reply.GetString("total")
			})
		}
		for i := range n / 2 {
			if err := send(i); err != nil {
				t.Fatal(err)
			}
		}
		// The second half from a callback, on the reader goroutine.
		var args box.Box
		args.SetString("a", "0")
		args.SetString("b", "0")
		wg.Add(1)
		if err := c.Go(ctx, "Sum", &args, func(context.Context, *box.Box, error) {
			defer wg.Done()
			for i := n / 2; i < n; i++ {
				if err := send(i); err != nil {
					t.Errorf("Go from a callback: %v", err)
					wg.Done()
				}
			}
		}); err != nil {
			t.Fatal(err)
		}
		wg.Wait()
		for i, got := range totals {
			if got != strconv.Itoa(i+1) {
				t.Fatalf("Sum(%d, 1) = %q", i, got)
			}
		}
	})

	t.Run("declared error", func(t *testing.T) {
		_, err := demo.Divide.Call(ctx, c, demo.DivideArgs{Numerator: 1234, Denominator: 0})
		if !errors.Is(err, demo.ErrZeroDivision) {
			t.Fatalf("Divide by zero: %v", err)
		}
		_, err = demo.Fail.Call(ctx, c, demo.FailArgs{Kind: "declared"})
		var re *amp.RemoteError
		if !errors.Is(err, demo.ErrDeclared) || !errors.As(err, &re) || re.Description != "declared: declared" {
			t.Fatalf("Fail(declared): %v", err)
		}
	})

	t.Run("unknown command", func(t *testing.T) {
		_, err := c.Call(ctx, "NoSuchCommand", &box.Box{})
		var re *amp.RemoteError
		if !errors.Is(err, amp.ErrUnhandledCommand) || !errors.As(err, &re) || re.Description != "Unhandled Command: b'NoSuchCommand'" {
			t.Fatalf("unknown command: %v", err)
		}
	})

	t.Run("no answer", func(t *testing.T) {
		for i := range 100 {
			if _, err := demo.Notify.Call(ctx, c, demo.NotifyArgs{Message: "n" + big.NewInt(int64(i)).String()}); err != nil {
				t.Fatal(err)
			}
		}
		notes, err := demo.GetNotes.Call(ctx, c, struct{}{})
		if err != nil || len(notes.Notes) != 100 || notes.Notes[99] != "n99" {
			t.Fatalf("GetNotes = %v, %v", notes.Notes, err)
		}
	})

	t.Run("out of order", func(t *testing.T) {
		// Go queues in call order, so Slow(0.3) is on the wire first.
		order := make(chan float64, 2)
		for _, d := range []float64{0.3, 0} {
			err := demo.Slow.Go(ctx, c, demo.SlowArgs{Delay: d}, func(_ context.Context, r demo.SlowReply, err error) {
				if err != nil {
					r.Slept = -1
				}
				order <- r.Slept
			})
			if err != nil {
				t.Fatal(err)
			}
		}
		if first, second := <-order, <-order; first != 0 || second != 0.3 {
			t.Fatalf("answers came as Slow(%v), Slow(%v); want Slow(0) first", first, second)
		}
	})

	t.Run("cancel", func(t *testing.T) {
		short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
		defer cancel()
		if _, err := demo.Slow.Call(short, c, demo.SlowArgs{Delay: 0.2}); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("cancelled call: %v", err)
		}
		// Twisted fires its timers in order, so this answer comes after
		// the abandoned call's late one: the late answer must be dropped
		// without harm to the connection or to this call.
		if r, err := demo.Slow.Call(ctx, c, demo.SlowArgs{Delay: 0.2}); err != nil || r.Slept != 0.2 {
			t.Fatalf("after a late answer: %v, %v", r, err)
		}
		if _, err := demo.Sum.Call(ctx, c, demo.SumArgs{A: big.NewInt(1), B: big.NewInt(1)}); err != nil {
			t.Fatalf("after a late answer: %v", err)
		}
	})

	for _, tc := range []struct {
		kind string
		is   error
	}{{"fatal", demo.ErrFatal}, {"undeclared", amp.ErrUnknownRemote}} {
		t.Run(tc.kind+" closes", func(t *testing.T) {
			c2 := dialTwisted(t, addr)
			_, err := demo.Fail.Call(ctx, c2, demo.FailArgs{Kind: tc.kind})
			if !errors.Is(err, tc.is) {
				t.Fatalf("Fail(%s): %v", tc.kind, err)
			}
			select {
			case <-c2.Done():
			case <-time.After(5 * time.Second):
				t.Fatal("Twisted did not close the connection")
			}
		})
	}

	t.Run("bad argument fails before sending", func(t *testing.T) {
		_, err := demo.Echo.Call(ctx, c, demo.EchoValues{Text: ptr("\xff")})
		var ae *amp.ArgumentError
		if !errors.As(err, &ae) || ae.Argument != "text" || !errors.Is(err, amp.ErrInvalidValue) {
			t.Fatalf("invalid UTF-8: %v", err)
		}
		_, err = demo.Echo.Call(ctx, c, demo.EchoValues{Bytes: make([]byte, 65536)})
		var tl *box.TooLongError
		if !errors.As(err, &tl) {
			t.Fatalf("65536-byte value: %v", err)
		}
		if _, err := demo.Sum.Call(ctx, c, demo.SumArgs{A: big.NewInt(1), B: big.NewInt(1)}); err != nil {
			t.Fatalf("connection broken by a local error: %v", err)
		}
	})
}
