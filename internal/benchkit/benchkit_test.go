package benchkit

import (
	"bytes"
	"math"
	"sync"
	"testing"
)

func TestHumanInt(t *testing.T) {
	for _, c := range []struct {
		in   float64
		want string
	}{
		{0, "0"}, {999.4, "999"}, {999.5, "1,000"}, {1234567.8, "1,234,568"}, {-122.6, "-122"}, {-1234.6, "-1,234"},
	} {
		if got := HumanInt(c.in); got != c.want {
			t.Errorf("HumanInt(%v) = %q, want %q", c.in, got, c.want)
		}
	}
}

func TestHumanUsMB(t *testing.T) {
	if got := HumanUs(12.34); got != "12.3" {
		t.Errorf("HumanUs(12.34) = %q", got)
	}
	if got := HumanUs(123.4); got != "123" {
		t.Errorf("HumanUs(123.4) = %q", got)
	}
	if got := HumanMB(1.5e6); got != "1.5 MB" {
		t.Errorf("HumanMB(1.5e6) = %q", got)
	}
}

func TestMachineInfo(t *testing.T) {
	if CPUModel() == "" || Kernel() == "" || LoadAvg() == "" {
		t.Errorf("empty machine info: %q %q %q", CPUModel(), Kernel(), LoadAvg())
	}
}

func TestRaiseFileLimit(t *testing.T) {
	cur := RaiseFileLimit(1)
	if cur < 1 {
		t.Errorf("RaiseFileLimit(1) = %d, want >= 1", cur)
	}
	if again := RaiseFileLimit(1); again != cur {
		t.Errorf("second RaiseFileLimit(1) = %d, want %d", again, cur)
	}
}

func TestLockedWriter(t *testing.T) {
	var buf bytes.Buffer
	w := &LockedWriter{W: &buf}
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 100 {
				w.Write([]byte("x"))
			}
		})
	}
	wg.Wait()
	if buf.Len() != 800 {
		t.Errorf("wrote %d bytes, want 800", buf.Len())
	}
}

func TestMedian(t *testing.T) {
	type run struct {
		v  float64
		id int
	}
	val := func(r run) float64 { return r.v }
	if got := Median([]run{{3, 0}, {1, 1}, {2, 2}}, val); got.id != 2 {
		t.Errorf("odd count: got %+v", got)
	}
	if got := Median([]run{{4, 0}, {1, 1}, {3, 2}, {2, 3}}, val); got.id != 3 {
		t.Errorf("even count takes the lower middle: got %+v", got)
	}
	if got := Median([]run{{1, 0}, {1, 1}, {1, 2}, {1, 3}}, val); got.id != 1 {
		t.Errorf("ties keep order: got %+v", got)
	}
}

func TestPairedRatio(t *testing.T) {
	for _, tc := range []struct {
		a, b []float64
		want float64
	}{
		// The median of 30/42, 43/39, 40/44 (run by run), not 40/42.
		{[]float64{30, 43, 40}, []float64{42, 39, 44}, 40.0 / 44},
		{[]float64{1, 2}, []float64{0, 4}, 0.5}, // no ratio for b = 0
		{[]float64{1}, nil, 0},
	} {
		if got := PairedRatio(tc.a, tc.b); math.Abs(got-tc.want) > 1e-9 {
			t.Errorf("PairedRatio(%v, %v) = %v, want %v", tc.a, tc.b, got, tc.want)
		}
	}
}
