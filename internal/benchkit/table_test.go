package benchkit

import (
	"bytes"
	"testing"
	"time"
)

func TestDur(t *testing.T) {
	for _, tt := range []struct {
		d    time.Duration
		want string
	}{
		{0, "0s"}, {999, "999ns"}, {12345, "12.3µs"}, {123456, "123µs"}, {1234567, "1.23ms"}, {98765432, "98.8ms"}, {3 * time.Second, "3s"},
	} {
		if got := Dur(tt.d); got != tt.want {
			t.Errorf("Dur(%d) = %s, want %s", tt.d, got, tt.want)
		}
	}
}

func TestTable(t *testing.T) {
	tb := Table{Head: []string{"path", "MB/s", "p99"}}
	tb.Add("a", "405", "7.63ms")
	var b bytes.Buffer
	tb.Write(&b)
	if want := "| path | MB/s | p99 |\n|---|---:|---:|\n| a | 405 | 7.63ms |\n"; b.String() != want {
		t.Errorf("got %q, want %q", b.String(), want)
	}
}

func TestSpreadAndRatio(t *testing.T) {
	f := func(v float64) string { return HumanInt(v) }
	for _, tt := range []struct {
		got, want string
	}{
		{Spread(nil, f), "–"},
		{Spread([]float64{405}, f), "405"},
		{Spread([]float64{440, 393, 405}, f), "405 (393–440)"},
		{Ratio(3, 4, true), "75%"},
		{Ratio(178342, 10235, false), "17.4×"},
		{Ratio(1.05, 1, false), "1.05×"},
		{Ratio(400, 2, false), "200×"},
		{Ratio(1, 0, false), "—"},
	} {
		if tt.got != tt.want {
			t.Errorf("got %q, want %q", tt.got, tt.want)
		}
	}
}
