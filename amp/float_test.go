package amp

import (
	"errors"
	"math"
	"strconv"
	"strings"
	"testing"
)

func parseBits(t testing.TB, h string) uint64 {
	t.Helper()
	u, err := strconv.ParseUint(h, 16, 64)
	if err != nil {
		t.Fatalf("bad bits %q: %v", h, err)
	}
	return u
}

func TestFloatEncodeValues(t *testing.T) {
	v := loadValues(t)
	if len(v.Float.Encode) < 500 {
		t.Fatalf("only %d float encode cases", len(v.Float.Encode))
	}
	for _, c := range v.Float.Encode {
		bits := parseBits(t, c.Bits)
		f := math.Float64frombits(bits)
		if got := string(AppendFloat([]byte("x"), f)); got != "x"+c.Wire {
			t.Errorf("AppendFloat(%s) = %q, Python str() gives %q", c.Hex, got[1:], c.Wire)
		}
		back, err := ParseFloat([]byte(c.Wire))
		if err != nil {
			t.Errorf("ParseFloat(%q): %v", c.Wire, err)
			continue
		}
		if math.IsNaN(f) {
			if math.Float64bits(back) != pyNaNBits {
				t.Errorf("ParseFloat(%q) = %#x, want Python's NaN", c.Wire, math.Float64bits(back))
			}
		} else if math.Float64bits(back) != bits {
			t.Errorf("ParseFloat(%q) = %#x, want %#x (%s)", c.Wire, math.Float64bits(back), bits, c.Hex)
		}
	}
}

func TestFloatDecodeValues(t *testing.T) {
	v := loadValues(t)
	if len(v.Float.Decode) < 500 {
		t.Fatalf("only %d float decode cases", len(v.Float.Decode))
	}
	for _, c := range v.Float.Decode {
		b := c.bytes(t)
		got, err := ParseFloat(b)
		if c.Error != "" {
			if want := c.sentinel(t); !errors.Is(err, want) {
				t.Errorf("ParseFloat(%q) = %v, %v; Twisted rejects it (%v)", short(b), got, err, want)
			}
			continue
		}
		if err != nil {
			t.Errorf("ParseFloat(%q): %v; Twisted reads %s", short(b), err, c.Hex)
			continue
		}
		if want := parseBits(t, c.Bits); math.Float64bits(got) != want {
			t.Errorf("ParseFloat(%q) = %#x (%v), Twisted reads %#x (%s)", short(b), math.Float64bits(got), got, want, c.Hex)
		}
	}
}

func TestFloatLayout(t *testing.T) {
	// Hand-checked against /usr/bin/python3 str(float).
	for f, want := range map[float64]string{
		1: "1.0", -1: "-1.0", 1e16: "1e+16", 1e15: "1000000000000000.0", 1e-5: "1e-05",
		1e-4: "0.0001", 0.5: "0.5", 123.456: "123.456", 1.5e-7: "1.5e-07", 1e100: "1e+100",
		5e-324: "5e-324", math.MaxFloat64: "1.7976931348623157e+308", 123456789012345680: "1.2345678901234568e+17",
		9999999999999998: "9999999999999998.0", 1.0 / 3: "0.3333333333333333", 0.00012345: "0.00012345",
		math.Copysign(0, -1): "-0.0", 0: "0.0", math.Inf(1): "inf", math.Inf(-1): "-inf",
	} {
		if got := string(AppendFloat(nil, f)); got != want {
			t.Errorf("AppendFloat(%v) = %q, want %q", f, got, want)
		}
	}
	if got := string(AppendFloat(nil, math.Float64frombits(pyNegNaNBits))); got != "nan" {
		t.Errorf("AppendFloat(-nan) = %q, want nan", got)
	}
	_, err := ParseFloat([]byte(strings.Repeat("1", 50) + "z"))
	if !errors.Is(err, ErrInvalidValue) || !strings.HasPrefix(err.Error(), "amp: ") || !strings.Contains(err.Error(), "Float") {
		t.Errorf("error = %v", err)
	}
}

func TestFloatNoAllocs(t *testing.T) {
	buf := make([]byte, 0, 32)
	inputs := [][]byte{[]byte("1.7976931348623157e+308"), []byte("-0.0001"), []byte("1_000.5"), []byte(" nan "), []byte("2.2250738585072014e-308")}
	if n := testing.AllocsPerRun(100, func() {
		buf = AppendFloat(buf[:0], 1.0/3)
		buf = AppendFloat(buf[:0], 1e-7)
		buf = AppendFloat(buf[:0], 1e15)
		for _, in := range inputs {
			if _, err := ParseFloat(in); err != nil {
				t.Fatal(err)
			}
		}
	}); n != 0 {
		t.Errorf("%v allocs per run, want 0", n)
	}
}

func BenchmarkAppendFloat(b *testing.B) {
	b.ReportAllocs()
	values := []float64{1.0 / 3, 1e16, 0.0001, -123.456, 5e-324, 1e15}
	buf := make([]byte, 0, 32)
	for i := 0; b.Loop(); i++ {
		buf = AppendFloat(buf[:0], values[i%len(values)])
	}
	benchSink = buf
}

func BenchmarkParseFloat(b *testing.B) {
	b.ReportAllocs()
	// Ordinary values; subnormals such as 5e-324 take strconv's slow path (~18µs).
	inputs := [][]byte{[]byte("0.3333333333333333"), []byte("1e+16"), []byte("0.0001"), []byte("-123.456"), []byte("2.5e-08"), []byte("6.02214076e+23")}
	for i := 0; b.Loop(); i++ {
		if _, err := ParseFloat(inputs[i%len(inputs)]); err != nil {
			b.Fatal(err)
		}
	}
}
