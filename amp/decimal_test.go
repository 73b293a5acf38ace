package amp

import (
	"errors"
	"math"
	"math/big"
	"strings"
	"testing"
)

func TestDecimalDecodeValues(t *testing.T) {
	v := loadValues(t)
	if len(v.Decimal.Decode) < 300 {
		t.Fatalf("only %d decimal cases", len(v.Decimal.Decode))
	}
	for _, c := range v.Decimal.Decode {
		s := string(c.bytes(t))
		d, err := ParseDecimal(s)
		if c.Error != "" {
			if want := c.sentinel(t); !errors.Is(err, want) {
				t.Errorf("ParseDecimal(%q) = %v, %v; Twisted rejects it (%v)", short([]byte(s)), d, err, want)
			}
			continue
		}
		if err != nil {
			t.Errorf("ParseDecimal(%q): %v; Twisted reads %s", short([]byte(s)), err, short([]byte(c.Str)))
			continue
		}
		if got := d.String(); got != c.Str {
			t.Errorf("ParseDecimal(%q).String() = %q, Python str() gives %q", short([]byte(s)), short([]byte(got)), short([]byte(c.Str)))
		}
		if got, err := d.AppendText([]byte("x")); err != nil || string(got) != "x"+c.Str {
			t.Errorf("AppendText(%q) = %q, %v", short([]byte(s)), got, err)
		}
		if d.Sign() != c.Sign || d.IsNaN() != c.IsNaN || d.IsInf() != c.IsInf {
			t.Errorf("%q: Sign/IsNaN/IsInf = %d/%v/%v, want %d/%v/%v", short([]byte(s)), d.Sign(), d.IsNaN(), d.IsInf(), c.Sign, c.IsNaN, c.IsInf)
		}
		// Sending what we parsed gives Python back the same decimal.
		again, err := ParseDecimal(c.Str)
		if err != nil || !again.Equal(d) || again != d {
			t.Errorf("ParseDecimal(%q) = %v, %v; not Equal to ParseDecimal(%q)", short([]byte(c.Str)), again, err, short([]byte(s)))
		}
		if c.FloatBits != "" {
			f, exact := d.Float64()
			if want := parseBits(t, c.FloatBits); math.Float64bits(f) != want {
				t.Errorf("%q.Float64() = %#x (%v), Python float() gives %#x", short([]byte(s)), math.Float64bits(f), f, want)
			}
			if c.FloatExact != nil && exact != *c.FloatExact {
				t.Errorf("%q.Float64() exact = %v, want %v", short([]byte(s)), exact, *c.FloatExact)
			}
		}
		if c.RatNum != "" {
			r, ok := d.Rat()
			want := new(big.Rat).SetFrac(mustBig(t, c.RatNum), mustBig(t, c.RatDen))
			if !ok || r.Cmp(want) != 0 {
				t.Errorf("%q.Rat() = %v, %v; want %v", short([]byte(s)), r, ok, want)
			}
		}
	}
}

func TestNewDecimalValues(t *testing.T) {
	v := loadValues(t)
	for _, c := range v.Decimal.New {
		d := NewDecimal(mustBig(t, c.Coefficient), int32(c.Exponent))
		if got := d.String(); got != c.Str {
			t.Errorf("NewDecimal(%s, %d) = %q, Python gives %q", c.Coefficient, c.Exponent, got, c.Str)
		}
		if back, err := ParseDecimal(c.Str); err != nil || !back.Equal(d) {
			t.Errorf("ParseDecimal(%q) = %v, %v; want Equal to NewDecimal", c.Str, back, err)
		}
	}
}

func TestDecimalBasics(t *testing.T) {
	var zero Decimal
	if zero.String() != "0" || zero.Sign() != 0 || !zero.Equal(MustParseDecimal("0")) {
		t.Errorf("zero Decimal = %q", zero.String())
	}
	if !NewDecimal(nil, 0).Equal(zero) {
		t.Error("NewDecimal(nil, 0) != 0")
	}
	if got := NewDecimal(big.NewInt(100), -2).String(); got != "1.00" {
		t.Errorf("NewDecimal(100, -2) = %q", got)
	}
	if MustParseDecimal("1.0").Equal(MustParseDecimal("1.00")) || MustParseDecimal("0").Equal(MustParseDecimal("-0")) {
		t.Error("Equal must compare representations")
	}
	if r, ok := MustParseDecimal("-1.25").Rat(); !ok || r.String() != "-5/4" {
		t.Errorf("Rat(-1.25) = %v, %v", r, ok)
	}
	for _, s := range []string{"Infinity", "NaN", "sNaN1", "1E+1000001", "1E-1000001"} {
		if r, ok := MustParseDecimal(s).Rat(); ok {
			t.Errorf("Rat(%s) = %v, want false", s, r)
		}
	}
	if r, ok := MustParseDecimal("0E+999999999999999999").Rat(); !ok || r.Sign() != 0 {
		t.Errorf("Rat(0E+huge) = %v, %v", r, ok)
	}
	for s, want := range map[string]float64{"1E+400": math.Inf(1), "-1E+400": math.Inf(-1), "-1E-400": math.Copysign(0, -1)} {
		if f, exact := MustParseDecimal(s).Float64(); f != want || math.Signbit(f) != math.Signbit(want) || exact {
			t.Errorf("Float64(%s) = %v, %v", s, f, exact)
		}
	}
	// More significant digits than any float64 needs: inexact but rounded correctly.
	long := "0." + strings.Repeat("3", 900)
	if f, exact := MustParseDecimal(long).Float64(); f != 1.0/3 || exact {
		t.Errorf("Float64(0.333...) = %v, %v", f, exact)
	}
	if f, exact := MustParseDecimal("0.5" + strings.Repeat("0", 900)).Float64(); f != 0.5 || !exact {
		t.Errorf("Float64(0.5000...) = %v, %v", f, exact)
	}
	defer func() {
		if recover() == nil {
			t.Error("MustParseDecimal(junk) did not panic")
		}
	}()
	MustParseDecimal("junk")
}

func TestDecimalErrors(t *testing.T) {
	_, err := ParseDecimal(strings.Repeat("9", 60) + "!")
	if !errors.Is(err, ErrInvalidValue) {
		t.Fatalf("error = %v", err)
	}
	msg := err.Error()
	if !strings.HasPrefix(msg, "amp: ") || !strings.Contains(msg, "Decimal") || len(msg) > 100 {
		t.Errorf("error message %q", msg)
	}
	if _, err := ParseDecimal("1E+1000000000000000000"); !errors.Is(err, ErrOutOfRange) {
		t.Errorf("huge exponent: %v", err)
	}
}

func BenchmarkParseDecimal(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ParseDecimal("-12345.6789"); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkDecimalAppendText(b *testing.B) {
	b.ReportAllocs()
	d := MustParseDecimal("-12345.6789E-20")
	buf := make([]byte, 0, 64)
	for b.Loop() {
		buf, _ = d.AppendText(buf[:0])
	}
	benchSink = buf
}
