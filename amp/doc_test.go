package amp

import (
	"math/big"
	"os"
	"reflect"
	"testing"
	"time"
)

type docItem struct {
	N int `amp:"n"`
}

// The type table of the package doc, row by row: each Go type (with its
// tag option) maps to the AMP type the table gives, and the types the doc
// calls refused are refused.
func TestDocTypeTable(t *testing.T) {
	tests := []struct {
		goType reflect.Type
		opt    string
		want   string // "" means refused
	}{
		{reflect.TypeFor[int](), "", "Integer"},
		{reflect.TypeFor[int8](), "", "Integer"},
		{reflect.TypeFor[int64](), "", "Integer"},
		{reflect.TypeFor[uint](), "", "Integer"},
		{reflect.TypeFor[uint64](), "", "Integer"},
		{reflect.TypeFor[uintptr](), "", "Integer"},
		{reflect.TypeFor[*big.Int](), "", "Integer"},
		{reflect.TypeFor[[]byte](), "", "String"},
		{reflect.TypeFor[[]byte](), "String", "String"},
		{reflect.TypeFor[string](), "String", "String"},
		{reflect.TypeFor[string](), "", "Unicode"},
		{reflect.TypeFor[string](), "Unicode", "Unicode"},
		{reflect.TypeFor[string](), "Path", "Path"},
		{reflect.TypeFor[float64](), "", "Float"},
		{reflect.TypeFor[float32](), "", "Float"},
		{reflect.TypeFor[bool](), "", "Boolean"},
		{reflect.TypeFor[Decimal](), "", "Decimal"},
		{reflect.TypeFor[time.Time](), "", "DateTime"},
		{reflect.TypeFor[*os.File](), "", "Descriptor"},
		{reflect.TypeFor[[]int64](), "", "ListOf(Integer)"},
		{reflect.TypeFor[[]string](), "", "ListOf(Unicode)"},
		{reflect.TypeFor[[]string](), "String", "ListOf(String)"},
		{reflect.TypeFor[[][]byte](), "", "ListOf(String)"},
		{reflect.TypeFor[[]time.Time](), "", "ListOf(DateTime)"},
		{reflect.TypeFor[[]Decimal](), "", "ListOf(Decimal)"},
		{reflect.TypeFor[[][]bool](), "", "ListOf(ListOf(Boolean))"},
		{reflect.TypeFor[[]docItem](), "", "AmpList"},
		{reflect.TypeFor[*string](), "", "Unicode"},
		{reflect.TypeFor[*float64](), "", "Float"},
		{reflect.TypeFor[[]*os.File](), "", ""},
		{reflect.TypeFor[[]byte](), "Path", ""},
		{reflect.TypeFor[int64](), "String", ""},
		{reflect.TypeFor[map[string]int](), "", ""},
		{reflect.TypeFor[complex128](), "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.goType.String()+","+tt.opt, func(t *testing.T) {
			at, err := typeFor(tt.goType, tt.opt, map[reflect.Type]bool{})
			if tt.want == "" {
				if err == nil {
					t.Fatalf("accepted as %s; the doc says refused", at.name())
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := at.name(); got != tt.want {
				t.Errorf("maps to %s, the doc says %s", got, tt.want)
			}
		})
	}
}
