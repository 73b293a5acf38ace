package amp

import (
	"errors"
	"testing"
)

func TestBooleanValues(t *testing.T) {
	v := loadValues(t)
	for _, c := range v.Boolean.Encode {
		if got := string(AppendBool(nil, c.Value)); got != c.Wire {
			t.Errorf("AppendBool(%v) = %q, Twisted sends %q", c.Value, got, c.Wire)
		}
	}
	for _, c := range v.Boolean.Decode {
		b := c.bytes(t)
		got, err := ParseBool(b)
		if c.Error != "" {
			if !errors.Is(err, c.sentinel(t)) {
				t.Errorf("ParseBool(%q) = %v, %v; Twisted rejects it", b, got, err)
			}
			continue
		}
		if err != nil || got != c.Value {
			t.Errorf("ParseBool(%q) = %v, %v; want %v", b, got, err, c.Value)
		}
	}
	if n := testing.AllocsPerRun(100, func() {
		if v, err := ParseBool([]byte("False")); v || err != nil {
			t.Fatal(v, err)
		}
	}); n != 0 {
		t.Errorf("ParseBool: %v allocs", n)
	}
}
