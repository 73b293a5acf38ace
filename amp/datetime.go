package amp

import (
	"fmt"
	"time"
)

// Twisted's DateTime argument is always 32 bytes,
// '%04i-%02i-%02iT%02i:%02i:%02i.%06i%s%02i:%02i': local date and time,
// microseconds and a fixed UTC offset. Twisted writes the sign '+' only for
// positive offsets, so UTC goes out as "-00:00". Reading, it runs int() on
// each numeric field separately and never looks at the separators.

// dateTimeLen is the only length Twisted accepts or produces.
const dateTimeLen = 32

// dateTimeFields are the byte ranges Twisted's DateTime.fromString hands to
// int(): year, month, day, hour, minute, second, microsecond, offset
// hours, offset minutes. Byte 26 is the offset's sign.
var dateTimeFields = [9][2]uint8{
	{0, 4}, {5, 7}, {8, 10},
	{11, 13}, {14, 16}, {17, 19},
	{20, 26},
	{27, 29}, {30, 32},
}

// AppendDateTime appends t as Twisted writes it, using t's own UTC offset
// at that instant and truncating to microseconds. It fails with
// ErrOutOfRange when Python's datetime could not hold the value: a local
// year outside 1..9999, an offset of 24 hours or more, or an offset that is
// not a whole number of minutes (the wire has no seconds field).
func AppendDateTime(dst []byte, t time.Time) ([]byte, error) {
	_, off := t.Zone()
	if off%60 != 0 {
		return dst, fmt.Errorf("%w: DateTime %s: UTC offset %ds is not whole minutes",
			ErrOutOfRange, t.Format(time.RFC3339Nano), off)
	}
	if off <= -86400 || off >= 86400 {
		return dst, fmt.Errorf("%w: DateTime %s: UTC offset %ds is not within 24 hours",
			ErrOutOfRange, t.Format(time.RFC3339Nano), off)
	}
	year, month, day := t.Date()
	if year < 1 || year > 9999 {
		return dst, fmt.Errorf("%w: DateTime %s: year %d is outside 1..9999",
			ErrOutOfRange, t.Format(time.RFC3339Nano), year)
	}
	hour, minute, sec := t.Clock()
	sign := byte('-')
	if off > 0 {
		sign = '+'
	} else {
		off = -off
	}
	offMin := off / 60
	var buf [dateTimeLen]byte
	put := func(at, width, v int) {
		for i := at + width - 1; i >= at; i-- {
			buf[i] = byte('0' + v%10)
			v /= 10
		}
	}
	put(0, 4, year)
	buf[4] = '-'
	put(5, 2, int(month))
	buf[7] = '-'
	put(8, 2, day)
	buf[10] = 'T'
	put(11, 2, hour)
	buf[13] = ':'
	put(14, 2, minute)
	buf[16] = ':'
	put(17, 2, sec)
	buf[19] = '.'
	put(20, 6, t.Nanosecond()/1000)
	buf[26] = sign
	put(27, 2, offMin/60)
	buf[29] = ':'
	put(30, 2, offMin%60)
	return append(dst, buf[:]...), nil
}

// ParseDateTime reads a DateTime as Twisted does: exactly 32 ASCII bytes,
// each numeric field parsed on its own by Python's int() (so " 999",
// "+012" and "0_5" are accepted and separators are not checked), '+' or
// '-' at byte 26, then datetime's own checks. The offset is sign × (hours
// × 60 + minutes) minutes and must be strictly within ±24 hours (Python
// refuses others as soon as the offset is used). The result is in
// time.UTC for a zero offset and in a time.FixedZone otherwise. Every
// failure wraps ErrInvalidValue.
func ParseDateTime(b []byte) (time.Time, error) {
	if len(b) != dateTimeLen {
		return time.Time{}, valError(ErrInvalidValue, "DateTime", b)
	}
	for _, c := range b {
		if c >= 0x80 { // Twisted decodes the whole value as ASCII first
			return time.Time{}, valError(ErrInvalidValue, "DateTime", b)
		}
	}
	var v [len(dateTimeFields)]int
	for i, f := range dateTimeFields {
		n, ok := parseDateTimeField(b[f[0]:f[1]])
		if !ok {
			return time.Time{}, valError(ErrInvalidValue, "DateTime", b)
		}
		v[i] = n
	}
	year, month, day := v[0], v[1], v[2]
	hour, minute, sec, usec := v[3], v[4], v[5], v[6]
	offMin := v[7]*60 + v[8]
	switch b[26] {
	case '-':
		offMin = -offMin
	case '+':
	default:
		return time.Time{}, valError(ErrInvalidValue, "DateTime", b)
	}
	if year < 1 || year > 9999 || month < 1 || month > 12 ||
		day < 1 || day > daysIn(time.Month(month), year) ||
		hour > 23 || minute > 59 || sec > 59 ||
		hour < 0 || minute < 0 || sec < 0 || usec < 0 || usec > 999999 ||
		offMin <= -24*60 || offMin >= 24*60 {
		return time.Time{}, valError(ErrInvalidValue, "DateTime", b)
	}
	loc := time.UTC
	if offMin != 0 {
		loc = time.FixedZone("", offMin*60)
	}
	return time.Date(year, time.Month(month), day, hour, minute, sec, usec*1000, loc), nil
}

// parseDateTimeField applies Python's int() to one field of at most six
// bytes, so the value always fits an int.
func parseDateTimeField(b []byte) (int, bool) {
	neg, body, _, ok := scanPyInt(b)
	if !ok {
		return 0, false
	}
	n := 0
	for _, c := range body {
		if c != '_' {
			n = n*10 + int(c-'0')
		}
	}
	if neg {
		n = -n
	}
	return n, true
}

// daysIn returns the number of days in month m of year y in the proleptic
// Gregorian calendar, which both Go and Python use.
func daysIn(m time.Month, y int) int {
	switch m {
	case time.February:
		if y%4 == 0 && (y%100 != 0 || y%400 == 0) {
			return 29
		}
		return 28
	case time.April, time.June, time.September, time.November:
		return 30
	}
	return 31
}
