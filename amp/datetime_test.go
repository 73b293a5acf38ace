package amp

import (
	"errors"
	"strings"
	"testing"
	"time"
)

// checkDateTime compares t with Python's fields, offset included.
func checkDateTime(t *testing.T, what string, got time.Time, want valuesDateTime) {
	t.Helper()
	y, mo, d := got.Date()
	h, mi, s := got.Clock()
	_, off := got.Zone()
	if y != want.Year || int(mo) != want.Month || d != want.Day || h != want.Hour || mi != want.Minute ||
		s != want.Second || got.Nanosecond() != want.Microsecond*1000 || off != want.OffsetMinutes*60 {
		t.Errorf("%s = %v, Python reads %+v", what, got, want)
	}
	if want.OffsetMinutes == 0 && got.Location() != time.UTC {
		t.Errorf("%s: zero offset in %v, want time.UTC", what, got.Location())
	}
}

func TestDateTimeEncodeValues(t *testing.T) {
	v := loadValues(t)
	if len(v.DateTime.Encode) < 100 {
		t.Fatalf("only %d datetime cases", len(v.DateTime.Encode))
	}
	for _, c := range v.DateTime.Encode {
		locs := []*time.Location{time.FixedZone("", c.OffsetMinutes*60)}
		if c.OffsetMinutes == 0 {
			locs = append(locs, time.UTC)
		}
		for _, loc := range locs {
			tm := time.Date(c.Year, time.Month(c.Month), c.Day, c.Hour, c.Minute, c.Second, c.Microsecond*1000+999, loc)
			got, err := AppendDateTime([]byte("x"), tm)
			if err != nil || string(got) != "x"+c.Wire {
				t.Errorf("AppendDateTime(%v) = %q, %v; Twisted sends %q", tm, got, err, c.Wire)
			}
		}
		back, err := ParseDateTime([]byte(c.Wire))
		if err != nil {
			t.Errorf("ParseDateTime(%q): %v", c.Wire, err)
			continue
		}
		checkDateTime(t, "ParseDateTime("+c.Wire+")", back, c.valuesDateTime)
	}
}

func TestDateTimeDecodeValues(t *testing.T) {
	v := loadValues(t)
	if len(v.DateTime.Decode) < 300 {
		t.Fatalf("only %d datetime cases", len(v.DateTime.Decode))
	}
	for _, c := range v.DateTime.Decode {
		b := c.bytes(t)
		got, err := ParseDateTime(b)
		if c.Error != "" {
			if want := c.sentinel(t); !errors.Is(err, want) {
				t.Errorf("ParseDateTime(%q) = %v, %v; Twisted rejects it (%v)", b, got, err, want)
			}
			continue
		}
		if err != nil {
			t.Errorf("ParseDateTime(%q): %v; Twisted reads %+v", b, err, c.valuesDateTime)
			continue
		}
		checkDateTime(t, "ParseDateTime("+string(b)+")", got, c.valuesDateTime)
	}
}

func TestDateTimeAppendErrors(t *testing.T) {
	for _, tm := range []time.Time{
		time.Date(0, 12, 31, 23, 59, 59, 0, time.UTC),
		time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC),
		time.Date(9999, 12, 31, 23, 0, 0, 0, time.FixedZone("", -3600)).In(time.FixedZone("", 7200)), // local year 10000
		time.Date(2020, 1, 1, 0, 0, 0, 0, time.FixedZone("LMT", 30)),
		time.Date(2020, 1, 1, 0, 0, 0, 0, time.FixedZone("", 24*3600)),
		time.Date(2020, 1, 1, 0, 0, 0, 0, time.FixedZone("", -24*3600)),
	} {
		out, err := AppendDateTime([]byte("keep"), tm)
		if !errors.Is(err, ErrOutOfRange) || string(out) != "keep" || !strings.HasPrefix(err.Error(), "amp: ") {
			t.Errorf("AppendDateTime(%v) = %q, %v; want ErrOutOfRange", tm, out, err)
		}
	}
	// A named zone contributes its offset at that instant.
	ny, err := time.LoadLocation("America/New_York")
	if err == nil {
		got, err := AppendDateTime(nil, time.Date(2021, 7, 4, 12, 0, 0, 0, ny))
		if err != nil || string(got) != "2021-07-04T12:00:00.000000-04:00" {
			t.Errorf("New York summer: %q, %v", got, err)
		}
	}
	got, err := AppendDateTime(nil, time.Date(2021, 7, 4, 12, 0, 0, 0, time.FixedZone("", 90*60)))
	if err != nil || string(got) != "2021-07-04T12:00:00.000000+01:30" {
		t.Errorf("+01:30: %q, %v", got, err)
	}
}

func BenchmarkAppendDateTime(b *testing.B) {
	b.ReportAllocs()
	tm := time.Date(2012, 1, 23, 12, 34, 56, 54321000, time.FixedZone("", -83*60))
	buf := make([]byte, 0, 32)
	for b.Loop() {
		buf, _ = AppendDateTime(buf[:0], tm)
	}
	benchSink = buf
}

func BenchmarkParseDateTime(b *testing.B) {
	b.ReportAllocs()
	in := []byte("2012-01-23T12:34:56.054321-00:00")
	for b.Loop() {
		if _, err := ParseDateTime(in); err != nil {
			b.Fatal(err)
		}
	}
}
