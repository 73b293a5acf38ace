package benchkit

import (
	"fmt"
	"io"
	"slices"
	"strings"
	"time"
)

// Table is a Markdown table: the first column left-aligned (names), the
// others right-aligned (figures).
type Table struct {
	Head []string
	Rows [][]string
}

// Add appends a row.
func (t *Table) Add(cells ...string) { t.Rows = append(t.Rows, cells) }

// Write writes t in Markdown.
func (t Table) Write(w io.Writer) {
	fmt.Fprintf(w, "| %s |\n|---|%s\n", strings.Join(t.Head, " | "), strings.Repeat("---:|", max(len(t.Head)-1, 0)))
	for _, r := range t.Rows {
		fmt.Fprintf(w, "| %s |\n", strings.Join(r, " | "))
	}
}

// Spread is the median of xs in f's format and, when there are several,
// their range: "405 (393–440)"; "–" for none.
func Spread(xs []float64, f func(float64) string) string {
	if len(xs) == 0 {
		return "–"
	}
	m := f(Median(xs, func(v float64) float64 { return v }))
	if len(xs) == 1 {
		return m
	}
	return fmt.Sprintf("%s (%s–%s)", m, f(slices.Min(xs)), f(slices.Max(xs)))
}

// Ratio writes a / b as a factor ("12.3×") or a percentage; "—" when b is
// not positive.
func Ratio(a, b float64, percent bool) string {
	if b <= 0 {
		return "—"
	}
	r := a / b
	switch {
	case percent:
		return fmt.Sprintf("%.0f%%", 100*r)
	case r >= 100:
		return fmt.Sprintf("%.0f×", r)
	case r >= 10:
		return fmt.Sprintf("%.1f×", r)
	}
	return fmt.Sprintf("%.2f×", r)
}

// Dur rounds d to three significant digits in Go's duration syntax
// (time.ParseDuration reads it back): 87.3µs, 1.24ms, 12s.
func Dur(d time.Duration) string {
	if d <= 0 {
		return "0s"
	}
	unit := time.Duration(1)
	for v := d; v >= 1000; v /= 10 {
		unit *= 10
	}
	return d.Round(unit).String()
}
