package amp

import (
	"encoding/hex"
	"encoding/json"
	"errors"
	"math/big"
	"os"
	"strings"
	"sync"
	"testing"
)

// valuesWire is the wire side of a case in testdata/values.json: ASCII text
// in Wire, or hex in WireHex when the bytes are not ASCII. Error is ""
// when Twisted accepts the value, else "invalid" or "range".
type valuesWire struct {
	Wire    string `json:"wire"`
	WireHex string `json:"wire_hex"`
	Error   string `json:"error"`
}

func (w valuesWire) bytes(t testing.TB) []byte {
	t.Helper()
	if w.WireHex != "" {
		b, err := hex.DecodeString(w.WireHex)
		if err != nil {
			t.Fatalf("bad wire_hex %q: %v", w.WireHex, err)
		}
		return b
	}
	return []byte(w.Wire)
}

// sentinel is the error a rejected case must wrap.
func (w valuesWire) sentinel(t testing.TB) error {
	t.Helper()
	switch w.Error {
	case "invalid":
		return ErrInvalidValue
	case "range":
		return ErrOutOfRange
	}
	t.Fatalf("unknown error class %q", w.Error)
	return nil
}

// valuesFile mirrors testdata/values.json, written by gen_values.py from
// Twisted's own Argument classes.
type valuesFile struct {
	Generator map[string]any `json:"generator"`
	Integer   struct {
		Encode []struct {
			Value string `json:"value"`
			Wire  string `json:"wire"`
		} `json:"encode"`
		Decode []struct {
			valuesWire
			Value string `json:"value"`
		} `json:"decode"`
	} `json:"integer"`
	Float struct {
		Encode []struct {
			Bits string `json:"bits"`
			Hex  string `json:"hex"`
			Wire string `json:"wire"`
		} `json:"encode"`
		Decode []struct {
			valuesWire
			Bits string `json:"bits"`
			Hex  string `json:"hex"`
		} `json:"decode"`
	} `json:"float"`
	Boolean struct {
		Encode []struct {
			Value bool   `json:"value"`
			Wire  string `json:"wire"`
		} `json:"encode"`
		Decode []struct {
			valuesWire
			Value bool `json:"value"`
		} `json:"decode"`
	} `json:"boolean"`
	Decimal struct {
		Decode []struct {
			valuesWire
			Str        string `json:"str"`
			Sign       int    `json:"sign"`
			IsNaN      bool   `json:"is_nan"`
			IsInf      bool   `json:"is_inf"`
			FloatBits  string `json:"float_bits"`
			FloatExact *bool  `json:"float_exact"`
			RatNum     string `json:"rat_num"`
			RatDen     string `json:"rat_den"`
		} `json:"decode"`
		New []struct {
			Coefficient string `json:"coefficient"`
			Exponent    int64  `json:"exponent"`
			Str         string `json:"str"`
		} `json:"new"`
	} `json:"decimal"`
	DateTime struct {
		Encode []struct {
			valuesDateTime
			Wire string `json:"wire"`
		} `json:"encode"`
		Decode []struct {
			valuesWire
			valuesDateTime
		} `json:"decode"`
	} `json:"datetime"`
}

// valuesDateTime is a Python datetime's local fields and UTC offset.
type valuesDateTime struct {
	Year          int `json:"year"`
	Month         int `json:"month"`
	Day           int `json:"day"`
	Hour          int `json:"hour"`
	Minute        int `json:"minute"`
	Second        int `json:"second"`
	Microsecond   int `json:"microsecond"`
	OffsetMinutes int `json:"offset_minutes"`
}

var (
	valuesOnce sync.Once
	valuesData *valuesFile
	valuesErr  error
)

func loadValues(t testing.TB) *valuesFile {
	t.Helper()
	valuesOnce.Do(func() {
		raw, err := os.ReadFile("testdata/values.json")
		if err != nil {
			valuesErr = err
			return
		}
		valuesData = new(valuesFile)
		valuesErr = json.Unmarshal(raw, valuesData)
	})
	if valuesErr != nil {
		t.Fatalf("loading testdata/values.json (regenerate with /usr/bin/python3 testdata/gen_values.py): %v", valuesErr)
	}
	return valuesData
}

func mustBig(t testing.TB, s string) *big.Int {
	t.Helper()
	v, ok := new(big.Int).SetString(s, 10)
	if !ok {
		t.Fatalf("bad integer %q in values.json", s)
	}
	return v
}

func short(b []byte) string {
	if len(b) > 60 {
		return string(b[:60]) + "..."
	}
	return string(b)
}

func TestIntegerEncodeValues(t *testing.T) {
	v := loadValues(t)
	if len(v.Integer.Encode) < 100 {
		t.Fatalf("only %d integer encode cases", len(v.Integer.Encode))
	}
	for _, c := range v.Integer.Encode {
		n := mustBig(t, c.Value)
		if got := string(AppendBigInt(nil, n)); got != c.Wire {
			t.Errorf("AppendBigInt(%s) = %q, Twisted sends %q", short([]byte(c.Value)), short([]byte(got)), short([]byte(c.Wire)))
		}
		if n.IsInt64() {
			if got := string(AppendInt([]byte("x"), n.Int64())); got != "x"+c.Wire {
				t.Errorf("AppendInt(%s) = %q, Twisted sends %q", c.Value, got[1:], c.Wire)
			}
		}
		if n.IsUint64() {
			if got := string(AppendUint(nil, n.Uint64())); got != c.Wire {
				t.Errorf("AppendUint(%s) = %q, Twisted sends %q", c.Value, got, c.Wire)
			}
		}
		// What we send, Twisted reads back as the same number.
		back, err := ParseBigInt([]byte(c.Wire))
		if err != nil || back.Cmp(n) != 0 {
			t.Errorf("ParseBigInt(AppendBigInt(%s)) = %v, %v", short([]byte(c.Value)), back, err)
		}
	}
}

func TestIntegerDecodeValues(t *testing.T) {
	v := loadValues(t)
	if len(v.Integer.Decode) < 300 {
		t.Fatalf("only %d integer decode cases", len(v.Integer.Decode))
	}
	for _, c := range v.Integer.Decode {
		b := c.bytes(t)
		got, err := ParseBigInt(b)
		if c.Error != "" {
			want := c.sentinel(t)
			if !errors.Is(err, want) {
				t.Errorf("ParseBigInt(%q) = %v, %v; Twisted rejects it (%v)", short(b), got, err, want)
			}
			for _, bits := range []int{0, 8, 16, 32, 64} {
				if _, err := ParseInt(b, bits); !errors.Is(err, want) {
					t.Errorf("ParseInt(%q, %d) error = %v, want %v", short(b), bits, err, want)
				}
				if _, err := ParseUint(b, bits); !errors.Is(err, want) {
					t.Errorf("ParseUint(%q, %d) error = %v, want %v", short(b), bits, err, want)
				}
			}
			continue
		}
		want := mustBig(t, c.Value)
		if err != nil || got.Cmp(want) != 0 {
			t.Errorf("ParseBigInt(%q) = %v, %v; Twisted reads %s", short(b), got, err, short([]byte(c.Value)))
			continue
		}
		for _, bits := range []int{0, 8, 16, 32, 64} {
			size := bits
			if size == 0 {
				size = 64
			}
			lo := new(big.Int).Neg(new(big.Int).Lsh(big.NewInt(1), uint(size-1)))
			hi := new(big.Int).Sub(new(big.Int).Lsh(big.NewInt(1), uint(size-1)), big.NewInt(1))
			n, err := ParseInt(b, bits)
			if want.Cmp(lo) >= 0 && want.Cmp(hi) <= 0 {
				if err != nil || n != want.Int64() {
					t.Errorf("ParseInt(%q, %d) = %d, %v; want %s", b, bits, n, err, want)
				}
			} else if !errors.Is(err, ErrOutOfRange) || n != 0 {
				t.Errorf("ParseInt(%q, %d) = %d, %v; want 0 and ErrOutOfRange", short(b), bits, n, err)
			}
			uhi := new(big.Int).Sub(new(big.Int).Lsh(big.NewInt(1), uint(size)), big.NewInt(1))
			u, err := ParseUint(b, bits)
			if want.Sign() >= 0 && want.Cmp(uhi) <= 0 {
				if err != nil || u != want.Uint64() {
					t.Errorf("ParseUint(%q, %d) = %d, %v; want %s", b, bits, u, err, want)
				}
			} else if !errors.Is(err, ErrOutOfRange) || u != 0 {
				t.Errorf("ParseUint(%q, %d) = %d, %v; want 0 and ErrOutOfRange", short(b), bits, u, err)
			}
		}
	}
}

func TestIntegerErrors(t *testing.T) {
	long := []byte(strings.Repeat("7", 100) + "x")
	_, err := ParseInt(long, 64)
	if !errors.Is(err, ErrInvalidValue) {
		t.Fatalf("ParseInt(long junk) error = %v", err)
	}
	msg := err.Error()
	if !strings.HasPrefix(msg, "amp: ") || !strings.Contains(msg, "Integer") || len(msg) > 100 ||
		!strings.Contains(msg, `"`+strings.Repeat("7", 40)+`"...`) {
		t.Errorf("error message %q: want amp: prefix, type name and a quoted 40-byte prefix", msg)
	}
	if _, err := ParseInt([]byte("1"), 65); !errors.Is(err, ErrInvalidValue) {
		t.Errorf("ParseInt bitSize 65: %v", err)
	}
	if _, err := ParseUint([]byte("1"), -1); !errors.Is(err, ErrInvalidValue) {
		t.Errorf("ParseUint bitSize -1: %v", err)
	}
	// Odd bit sizes work as in strconv.
	if n, err := ParseInt([]byte("-4"), 3); n != -4 || err != nil {
		t.Errorf("ParseInt(-4, 3) = %d, %v", n, err)
	}
	if _, err := ParseInt([]byte("4"), 3); !errors.Is(err, ErrOutOfRange) {
		t.Errorf("ParseInt(4, 3) = %v", err)
	}
	if got := string(AppendBigInt(nil, nil)); got != "0" {
		t.Errorf("AppendBigInt(nil) = %q", got)
	}
}

func TestIntegerNoAllocs(t *testing.T) {
	buf := make([]byte, 0, 32)
	in := []byte("-9223372036854775808")
	if n := testing.AllocsPerRun(100, func() {
		buf = AppendInt(buf[:0], -1234567890123)
		buf = AppendUint(buf[:0], 1234567890123)
		if _, err := ParseInt(in, 64); err != nil {
			t.Fatal(err)
		}
		if _, err := ParseUint([]byte(" 1_000 "), 0); err != nil {
			t.Fatal(err)
		}
	}); n != 0 {
		t.Errorf("%v allocs per run, want 0", n)
	}
}

var benchSink []byte

func BenchmarkAppendInt(b *testing.B) {
	b.ReportAllocs()
	buf := make([]byte, 0, 32)
	for i := 0; b.Loop(); i++ {
		buf = AppendInt(buf[:0], int64(i)*7919-1<<40)
	}
	benchSink = buf
}

func BenchmarkParseInt(b *testing.B) {
	b.ReportAllocs()
	inputs := [][]byte{[]byte("0"), []byte("42"), []byte("-1234567890"), []byte("9223372036854775807")}
	for i := 0; b.Loop(); i++ {
		if _, err := ParseInt(inputs[i&3], 64); err != nil {
			b.Fatal(err)
		}
	}
}
