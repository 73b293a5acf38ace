package amp

import (
	"math"
	"strconv"
)

// Twisted's Float argument sends str(f) and receives with Python's float().
// Python's str for floats is the shortest round-tripping repr, laid out by
// its own rule (fixed notation for decimal exponents -4..15, always with a
// fractional part), which no strconv format reproduces; the digits are the
// same, so AppendFloat rearranges strconv's shortest 'e' output.

// Bit patterns Python's float() produces for "nan" and "-nan"; Go's
// math.NaN differs, and bit-exact decoding keeps re-encoding faithful.
const (
	pyNaNBits    = 0x7ff8000000000000
	pyNegNaNBits = 0xfff8000000000000
)

// AppendFloat appends f exactly as Python's str(f) spells it ("1.0",
// "1e+16", "1e-05", "-0.0", "inf", "nan"), which is what Twisted sends.
func AppendFloat(dst []byte, f float64) []byte {
	switch {
	case math.IsNaN(f):
		return append(dst, "nan"...) // Python never shows a NaN's sign
	case math.IsInf(f, 1):
		return append(dst, "inf"...)
	case math.IsInf(f, -1):
		return append(dst, "-inf"...)
	case f == 0:
		if math.Signbit(f) {
			return append(dst, "-0.0"...)
		}
		return append(dst, "0.0"...)
	}
	start := len(dst)
	dst = strconv.AppendFloat(dst, f, 'e', -1, 64) // [-]d[.ddd]e±dd[d]
	s := dst[start:]
	neg := s[0] == '-'
	if neg {
		s = s[1:]
	}
	// Split mantissa digits and the decimal exponent.
	var digits [17]byte // float64 shortest repr has at most 17 digits
	n := 0
	i := 0
	for ; s[i] != 'e'; i++ {
		if s[i] != '.' {
			digits[n] = s[i]
			n++
		}
	}
	exp := 0
	for _, c := range s[i+2:] {
		exp = exp*10 + int(c-'0')
	}
	if s[i+1] == '-' {
		exp = -exp
	}
	if exp < -4 || exp >= 16 {
		return dst // strconv's 'e' layout is Python's: "1e+16", "1.5e-07"
	}
	dst = dst[:start]
	if neg {
		dst = append(dst, '-')
	}
	if exp < 0 {
		dst = append(dst, '0', '.')
		for j := -1; j > exp; j-- {
			dst = append(dst, '0')
		}
		return append(dst, digits[:n]...)
	}
	// exp in 0..15: exp+1 integer digits, then at least one fraction digit.
	if n <= exp+1 {
		dst = append(dst, digits[:n]...)
		for j := n; j <= exp; j++ {
			dst = append(dst, '0')
		}
		return append(dst, '.', '0')
	}
	dst = append(dst, digits[:exp+1]...)
	dst = append(dst, '.')
	return append(dst, digits[exp+1:n]...)
}

// ParseFloat decodes a Float as Python's float() reads the bytes Twisted
// receives: surrounding ASCII whitespace, a sign, decimal digits with
// single underscores between digits, an optional exponent, or the words
// inf, infinity and nan in any case. Overflow gives ±Inf and underflow
// ±0 (Python raises no error for these); "nan" and "-nan" decode to
// Python's own NaN bit patterns.
func ParseFloat(b []byte) (float64, error) {
	s := trimPyASCIISpace(b)
	body := s
	neg := false
	if len(body) > 0 && (body[0] == '+' || body[0] == '-') {
		neg = body[0] == '-'
		body = body[1:]
	}
	if len(body) > 0 && body[0] > '9' { // a letter: only inf/nan allowed
		switch {
		case asciiEqualFold(body, "inf"), asciiEqualFold(body, "infinity"):
			if neg {
				return math.Inf(-1), nil
			}
			return math.Inf(1), nil
		case asciiEqualFold(body, "nan"):
			if neg {
				return math.Float64frombits(pyNegNaNBits), nil
			}
			return math.Float64frombits(pyNaNBits), nil
		}
		return 0, valError(ErrInvalidValue, "Float", b)
	}
	underscores, ok := scanPyFloat(body)
	if !ok {
		return 0, valError(ErrInvalidValue, "Float", b)
	}
	var f float64
	var err error
	if !underscores {
		f, err = strconv.ParseFloat(string(s), 64)
	} else {
		var buf [32]byte
		clean := buf[:0]
		if len(s) > len(buf) {
			clean = make([]byte, 0, len(s))
		}
		for _, c := range s {
			if c != '_' {
				clean = append(clean, c)
			}
		}
		f, err = strconv.ParseFloat(string(clean), 64)
	}
	if err != nil && !math.IsInf(f, 0) { // ErrRange with ±Inf is Python's overflow
		return 0, valError(ErrInvalidValue, "Float", b)
	}
	return f, nil
}

// scanPyFloat checks an unsigned decimal float literal against Python's
// float() grammar: digits, optional '.', digits (at least one digit in
// all), optional e/E, optional sign and at least one digit; an underscore
// is allowed only between two digits.
func scanPyFloat(b []byte) (underscores, ok bool) {
	i := 0
	digits := 0
	// scanDigits consumes digits with embedded single underscores.
	scanDigits := func() (int, bool) {
		n := 0
		for i < len(b) {
			c := b[i]
			if '0' <= c && c <= '9' {
				n++
				i++
				continue
			}
			if c == '_' {
				if n == 0 || i+1 >= len(b) || b[i+1] < '0' || b[i+1] > '9' {
					return n, false
				}
				underscores = true
				i++
				continue
			}
			break
		}
		return n, true
	}
	n, good := scanDigits()
	if !good {
		return false, false
	}
	digits += n
	if i < len(b) && b[i] == '.' {
		i++
		n, good = scanDigits()
		if !good {
			return false, false
		}
		digits += n
	}
	if digits == 0 {
		return false, false
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		i++
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			i++
		}
		n, good = scanDigits()
		if !good || n == 0 {
			return false, false
		}
	}
	return underscores, i == len(b)
}

// asciiEqualFold reports whether b equals the lower-case ASCII word w,
// ignoring ASCII case.
func asciiEqualFold(b []byte, w string) bool {
	if len(b) != len(w) {
		return false
	}
	for i := range len(b) {
		if b[i]|0x20 != w[i] {
			return false
		}
	}
	return true
}
