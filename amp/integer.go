package amp

import (
	"fmt"
	"math/big"
	"strconv"
)

// Twisted's Integer argument sends b"%d" % n and receives with Python's
// int(). The parsers below accept exactly what int(b, 10) accepts on the
// bytes Twisted hands it, so a value Go accepts is one Twisted would too.

// pyIntMaxStrDigits is CPython's default sys.int_max_str_digits (3.11+):
// int() refuses strings with more digits (leading zeros count, underscores
// do not), and "%d" refuses to format such numbers.
const pyIntMaxStrDigits = 4300

// AppendInt appends v as Twisted writes an Integer; strconv's decimal form
// is already identical to Python's "%d".
func AppendInt(dst []byte, v int64) []byte { return strconv.AppendInt(dst, v, 10) }

// AppendUint is AppendInt for unsigned values, which Python ints cover
// without a sign bit.
func AppendUint(dst []byte, v uint64) []byte { return strconv.AppendUint(dst, v, 10) }

// AppendBigInt appends v in the same form as AppendInt, for values beyond
// 64 bits (Python ints are unbounded). A nil v is written as 0. Twisted
// cannot send or receive more than 4300 digits (Python's default
// int_max_str_digits), so values that large will be refused by the peer.
func AppendBigInt(dst []byte, v *big.Int) []byte {
	if v == nil {
		return append(dst, '0')
	}
	return v.Append(dst, 10)
}

// ParseInt decodes an Integer into a signed integer of bitSize bits (0 means
// int's size), accepting what Python's int() accepts. A well-formed value
// that does not fit (or has more digits than Python allows) yields 0 and an
// error wrapping ErrOutOfRange, never a truncated value.
func ParseInt(b []byte, bitSize int) (int64, error) {
	if bitSize == 0 {
		bitSize = strconv.IntSize
	} else if bitSize < 0 || bitSize > 64 {
		return 0, fmt.Errorf("%w: Integer bit size %d", ErrInvalidValue, bitSize)
	}
	neg, mag, err := parseIntMag(b)
	if err != nil {
		return 0, err
	}
	limit := uint64(1) << uint(bitSize-1) // |min|; max is limit-1
	if neg {
		if mag > limit {
			return 0, valError(ErrOutOfRange, "Integer", b)
		}
		return int64(-mag), nil // wraps correctly for mag == 1<<63
	}
	if mag >= limit {
		return 0, valError(ErrOutOfRange, "Integer", b)
	}
	return int64(mag), nil
}

// ParseUint decodes an Integer into an unsigned integer of bitSize bits (0
// means uint's size). Negative values (other than -0, which Python reads
// as 0) and values too large yield 0 and an error wrapping ErrOutOfRange.
func ParseUint(b []byte, bitSize int) (uint64, error) {
	if bitSize == 0 {
		bitSize = strconv.IntSize
	} else if bitSize < 0 || bitSize > 64 {
		return 0, fmt.Errorf("%w: Integer bit size %d", ErrInvalidValue, bitSize)
	}
	neg, mag, err := parseIntMag(b)
	if err != nil {
		return 0, err
	}
	if neg && mag != 0 {
		return 0, valError(ErrOutOfRange, "Integer", b)
	}
	if bitSize < 64 && mag>>uint(bitSize) != 0 {
		return 0, valError(ErrOutOfRange, "Integer", b)
	}
	return mag, nil
}

// ParseBigInt decodes an Integer of any size, as Python would. Strings with
// more than 4300 digits are refused with ErrOutOfRange, as CPython's int()
// refuses them; this also bounds the quadratic cost of conversion.
func ParseBigInt(b []byte) (*big.Int, error) {
	neg, body, ndigits, ok := scanPyInt(b)
	if !ok {
		return nil, valError(ErrInvalidValue, "Integer", b)
	}
	if ndigits > pyIntMaxStrDigits {
		return nil, valError(ErrOutOfRange, "Integer", b)
	}
	if ndigits <= 18 { // fits int64 without overflow checks
		var v int64
		for _, c := range body {
			if c != '_' {
				v = v*10 + int64(c-'0')
			}
		}
		if neg {
			v = -v
		}
		return big.NewInt(v), nil
	}
	clean := make([]byte, 0, ndigits+1)
	if neg {
		clean = append(clean, '-')
	}
	for _, c := range body {
		if c != '_' {
			clean = append(clean, c)
		}
	}
	v, ok := new(big.Int).SetString(string(clean), 10)
	if !ok { // unreachable: clean holds only validated digits
		return nil, valError(ErrInvalidValue, "Integer", b)
	}
	return v, nil
}

// parseIntMag validates b and returns its sign and magnitude, or an
// ErrOutOfRange error when the magnitude exceeds 64 bits.
func parseIntMag(b []byte) (neg bool, mag uint64, err error) {
	neg, body, ndigits, ok := scanPyInt(b)
	if !ok {
		return false, 0, valError(ErrInvalidValue, "Integer", b)
	}
	if ndigits > pyIntMaxStrDigits {
		return false, 0, valError(ErrOutOfRange, "Integer", b)
	}
	const cutoff = (1<<64-1)/10 + 1 // mag >= cutoff overflows when multiplied by 10
	for _, c := range body {
		if c == '_' {
			continue
		}
		if mag >= cutoff {
			return false, 0, valError(ErrOutOfRange, "Integer", b)
		}
		m := mag*10 + uint64(c-'0')
		if m < mag*10 {
			return false, 0, valError(ErrOutOfRange, "Integer", b)
		}
		mag = m
	}
	return neg, mag, nil
}

// scanPyInt checks b against the grammar of Python's int(b, 10) for ASCII
// input: optional surrounding ASCII whitespace, an optional sign, then
// digits with single underscores allowed only between digits. Leading
// zeros are allowed (only base 0 forbids them). It returns the digit body
// (underscores included) and the number of digits in it.
func scanPyInt(b []byte) (neg bool, body []byte, ndigits int, ok bool) {
	b = trimPyASCIISpace(b)
	if len(b) > 0 && (b[0] == '+' || b[0] == '-') {
		neg = b[0] == '-'
		b = b[1:]
	}
	if len(b) == 0 {
		return false, nil, 0, false
	}
	prevDigit := false
	for _, c := range b {
		switch {
		case '0' <= c && c <= '9':
			ndigits++
			prevDigit = true
		case c == '_' && prevDigit:
			prevDigit = false
		default:
			return false, nil, 0, false
		}
	}
	if !prevDigit { // empty or trailing underscore
		return false, nil, 0, false
	}
	return neg, b, ndigits, true
}

// isPyASCIISpace reports the bytes CPython's int() and float() strip from
// bytes and ASCII text (Py_ISSPACE). Note that str.strip() and Decimal()
// also strip \x1c-\x1f; int() and float() do not.
func isPyASCIISpace(c byte) bool {
	return c == ' ' || ('\t' <= c && c <= '\r')
}

func trimPyASCIISpace(b []byte) []byte {
	for len(b) > 0 && isPyASCIISpace(b[0]) {
		b = b[1:]
	}
	for len(b) > 0 && isPyASCIISpace(b[len(b)-1]) {
		b = b[:len(b)-1]
	}
	return b
}

// valQuoteMax bounds how much of a rejected value an error message repeats,
// so that a hostile 64 KiB value does not end up in logs.
const valQuoteMax = 40

// valError builds the package's error for a bad wire value: it names the
// AMP type, quotes (a prefix of) the value and wraps the sentinel.
func valError[T string | []byte](sentinel error, typ string, v T) error {
	// Copying the prefix keeps v from escaping, so callers' buffers can
	// stay on the stack.
	if len(v) > valQuoteMax {
		return fmt.Errorf("%w: %s %q...", sentinel, typ, string(v[:valQuoteMax]))
	}
	return fmt.Errorf("%w: %s %q", sentinel, typ, string(v))
}
