package amp

import (
	"math"
	"math/big"
	"strconv"
	"strings"
)

// Twisted's Decimal argument sends str(d) and receives with
// decimal.Decimal(s.decode("ascii")). A decimal's string carries its
// precision ("1.00" is not "1"), so Decimal keeps the exact coefficient
// digits and exponent rather than a numeric value, and String reproduces
// Python's to-scientific-string form byte for byte.

// decKind distinguishes the finite and special decimal values.
type decKind uint8

const (
	decFinite decKind = iota
	decInf
	decNaN
	decSNaN
)

// Limits of CPython's decimal module (libmpdec, 64-bit) when it converts a
// string exactly: Decimal(s) refuses values whose exponents fall outside
// them rather than round.
const (
	mpdMaxEmax  = 999999999999999999            // MPD_MAX_EMAX
	mpdMinEmin  = -999999999999999999           // MPD_MIN_EMIN
	mpdMaxPrec  = 999999999999999999            // MPD_MAX_PREC
	mpdMinEtiny = mpdMinEmin - (mpdMaxPrec - 1) // smallest exponent held exactly
	mpdExpInf   = 2000000000000000001           // MPD_EXP_INF, the parser's exponent clamp
)

// Bounds for converting to float64 and big.Rat.
const (
	ratMaxExp    = 1_000_000 // Rat refuses to build 10^|e| beyond this
	floatMaxAdj  = 309       // adjusted exponents above this overflow float64
	floatMinAdj  = -345      // adjusted exponents below this round to zero
	floatMaxExct = 800       // exact float64 values have at most 767 significant digits
)

// Decimal is an exact decimal number as Python's decimal.Decimal holds it:
// sign, coefficient digits and exponent, or one of the special values
// Infinity, NaN and sNaN (NaNs with an optional payload). The zero value
// is 0. Decimals are comparable; == and Equal agree.
type Decimal struct {
	coef string // finite: digits without leading zeros, "" for zero; NaN/sNaN: payload without leading zeros
	exp  int64  // finite only: value = coef × 10^exp
	kind decKind
	neg  bool
}

// ParseDecimal reads s as Twisted's Decimal.fromString does: the bytes must
// be ASCII, then decimal.Decimal(s) applies: surrounding whitespace
// (including \x1c-\x1f) is stripped, every underscore is removed (Python
// does not check their placement), and the rest must be [sign] followed by
// digits with an optional '.' and e/E exponent, "Inf", "Infinity", "NaN"
// or "sNaN" (any case) with optional payload digits. Exponents beyond what
// Python can hold exactly wrap ErrOutOfRange; anything else malformed
// wraps ErrInvalidValue.
func ParseDecimal(s string) (Decimal, error) {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return Decimal{}, valError(ErrInvalidValue, "Decimal", s)
		}
	}
	t := strings.TrimFunc(s, func(r rune) bool { return isPyStrSpace(byte(r)) })
	if strings.IndexByte(t, '_') >= 0 {
		t = strings.ReplaceAll(t, "_", "")
	}
	var d Decimal
	if len(t) > 0 && (t[0] == '+' || t[0] == '-') {
		d.neg = t[0] == '-'
		t = t[1:]
	}
	var payload string
	switch {
	case hasPrefixFold(t, "nan"):
		d.kind, payload = decNaN, t[3:]
	case hasPrefixFold(t, "snan"):
		d.kind, payload = decSNaN, t[4:]
	case hasPrefixFold(t, "inf"):
		if rest := t[3:]; rest != "" && !(len(rest) == 5 && hasPrefixFold(rest, "inity")) {
			return Decimal{}, valError(ErrInvalidValue, "Decimal", s)
		}
		d.kind = decInf
		return d, nil
	default:
		return parseFiniteDecimal(d, t, s)
	}
	for i := 0; i < len(payload); i++ {
		if payload[i] < '0' || payload[i] > '9' {
			return Decimal{}, valError(ErrInvalidValue, "Decimal", s)
		}
	}
	d.coef = strings.TrimLeft(payload, "0")
	return d, nil
}

// parseFiniteDecimal follows libmpdec's mpd_qset_string for numbers, as
// run by Python with its maximum context and a demand for exactness.
func parseFiniteDecimal(d Decimal, t, orig string) (Decimal, error) {
	dot, expAt := -1, -1
	sawDigit := false
	for i := 0; i < len(t); i++ {
		switch c := t[i]; {
		case '0' <= c && c <= '9':
			if expAt < 0 {
				sawDigit = true
			}
		case c == '.':
			if dot >= 0 || expAt >= 0 {
				return Decimal{}, valError(ErrInvalidValue, "Decimal", orig)
			}
			dot = i
		case c == 'e' || c == 'E':
			if expAt >= 0 || !sawDigit {
				return Decimal{}, valError(ErrInvalidValue, "Decimal", orig)
			}
			expAt = i
			if i+1 < len(t) && (t[i+1] == '+' || t[i+1] == '-') {
				i++
			}
		default:
			return Decimal{}, valError(ErrInvalidValue, "Decimal", orig)
		}
	}
	if !sawDigit {
		return Decimal{}, valError(ErrInvalidValue, "Decimal", orig)
	}
	mant := t
	if expAt >= 0 {
		e, ok := parseSaturatingInt64(t[expAt+1:])
		if !ok {
			return Decimal{}, valError(ErrInvalidValue, "Decimal", orig)
		}
		d.exp = e
		mant = t[:expAt]
	}
	if dot >= 0 {
		frac := int64(len(mant) - dot - 1)
		if d.exp < math.MinInt64+frac {
			d.exp = math.MinInt64
		} else {
			d.exp -= frac
		}
		mant = mant[:dot] + mant[dot+1:]
	}
	if d.exp > mpdExpInf {
		d.exp = mpdExpInf
	}
	if d.exp == math.MinInt64 {
		d.exp = math.MinInt64 + 1
	}
	d.coef = strings.TrimLeft(mant, "0")
	ndigits := int64(max(len(d.coef), 1))
	if adj := d.exp + ndigits - 1; adj > mpdMaxEmax || d.exp < mpdMinEtiny {
		// Python would have to clamp or round (Overflow, Clamped,
		// Rounded), which an exact conversion refuses.
		return Decimal{}, valError(ErrOutOfRange, "Decimal", orig)
	}
	return d, nil
}

// parseSaturatingInt64 parses [sign]digits like C's strtoll, which libmpdec
// uses for exponents: out-of-range values saturate instead of failing.
func parseSaturatingInt64(s string) (int64, bool) {
	neg := false
	if len(s) > 0 && (s[0] == '+' || s[0] == '-') {
		neg = s[0] == '-'
		s = s[1:]
	}
	if s == "" {
		return 0, false
	}
	var v uint64
	const limit = 1 << 63
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < '0' || c > '9' {
			return 0, false
		}
		switch {
		case v > limit: // already saturated
		case v > limit/10:
			v = limit + 1 // sticky overflow marker
		default:
			v = v*10 + uint64(c-'0')
			if v > limit {
				v = limit + 1
			}
		}
	}
	switch {
	case neg && v >= limit:
		return math.MinInt64, true
	case neg:
		return -int64(v), true
	case v >= limit:
		return math.MaxInt64, true
	}
	return int64(v), true
}

// isPyStrSpace reports the ASCII characters Python's str.isspace accepts,
// which is what Decimal() strips (a wider set than int() and float()).
func isPyStrSpace(c byte) bool {
	return c == ' ' || ('\t' <= c && c <= '\r') || ('\x1c' <= c && c <= '\x1f')
}

// hasPrefixFold reports whether s starts with the lower-case ASCII word w,
// ignoring ASCII case.
func hasPrefixFold(s, w string) bool {
	if len(s) < len(w) {
		return false
	}
	for i := 0; i < len(w); i++ {
		if s[i]|0x20 != w[i] {
			return false
		}
	}
	return true
}

// MustParseDecimal is ParseDecimal for constants known to be valid; it
// panics on error.
func MustParseDecimal(s string) Decimal {
	d, err := ParseDecimal(s)
	if err != nil {
		panic(err)
	}
	return d
}

// NewDecimal returns coefficient × 10^exponent keeping the precision the
// coefficient implies, as Python's Decimal((sign, digits, exponent)) does:
// NewDecimal(100, -2) is "1.00", not "1". A nil coefficient is zero.
func NewDecimal(coefficient *big.Int, exponent int32) Decimal {
	d := Decimal{exp: int64(exponent)}
	if coefficient == nil || coefficient.Sign() == 0 {
		return d
	}
	s := coefficient.Text(10)
	if s[0] == '-' {
		d.neg = true
		s = s[1:]
	}
	d.coef = s
	return d
}

// String returns exactly what Python's str(d) gives (the General Decimal
// Arithmetic to-scientific-string), which is what Twisted sends.
func (d Decimal) String() string {
	var buf [48]byte
	return string(d.appendText(buf[:0]))
}

// AppendText appends the same text as String; it implements
// encoding.TextAppender and never fails.
func (d Decimal) AppendText(dst []byte) ([]byte, error) {
	return d.appendText(dst), nil
}

func (d Decimal) appendText(dst []byte) []byte {
	if d.neg {
		dst = append(dst, '-')
	}
	switch d.kind {
	case decInf:
		return append(dst, "Infinity"...)
	case decNaN:
		return append(append(dst, "NaN"...), d.coef...)
	case decSNaN:
		return append(append(dst, "sNaN"...), d.coef...)
	}
	coef := d.coef
	if coef == "" {
		coef = "0"
	}
	n := int64(len(coef))
	adj := d.exp + n - 1
	if d.exp <= 0 && adj >= -6 {
		if d.exp == 0 {
			return append(dst, coef...)
		}
		point := n + d.exp // digits before the decimal point
		if point > 0 {
			dst = append(dst, coef[:point]...)
			dst = append(dst, '.')
			return append(dst, coef[point:]...)
		}
		dst = append(dst, '0', '.')
		for ; point < 0; point++ {
			dst = append(dst, '0')
		}
		return append(dst, coef...)
	}
	dst = append(dst, coef[0])
	if n > 1 {
		dst = append(dst, '.')
		dst = append(dst, coef[1:]...)
	}
	dst = append(dst, 'E')
	if adj >= 0 {
		dst = append(dst, '+')
	}
	return strconv.AppendInt(dst, adj, 10)
}

// IsNaN reports whether d is a quiet or signalling NaN.
func (d Decimal) IsNaN() bool { return d.kind == decNaN || d.kind == decSNaN }

// IsInf reports whether d is an infinity of either sign.
func (d Decimal) IsInf() bool { return d.kind == decInf }

// Sign returns -1, 0 or +1 by the numeric sign of d; zeros of either sign
// and NaNs give 0.
func (d Decimal) Sign() int {
	if d.IsNaN() || (d.kind == decFinite && d.coef == "") {
		return 0
	}
	if d.neg {
		return -1
	}
	return 1
}

// Equal reports whether d and o have the same representation (sign,
// digits, exponent, kind, payload), which is what a round trip through
// Twisted preserves; 1.0 and 1.00 differ, as do 0 and -0.
func (d Decimal) Equal(o Decimal) bool { return d == o }

// Float64 returns the float64 nearest to d (as Python's float(d) does) and
// whether it represents d exactly. Infinities are exact; NaNs return a NaN
// with d's sign (Python's float() refuses sNaN) and false.
func (d Decimal) Float64() (float64, bool) {
	sign := 1.0
	if d.neg {
		sign = -1
	}
	switch d.kind {
	case decInf:
		return math.Inf(int(sign)), true
	case decNaN, decSNaN:
		if d.neg {
			return math.Float64frombits(pyNegNaNBits), false
		}
		return math.Float64frombits(pyNaNBits), false
	}
	if d.coef == "" {
		return math.Copysign(0, sign), true
	}
	coef, exp := d.coef, d.exp
	for coef[len(coef)-1] == '0' { // coef is non-zero, so this stops
		coef = coef[:len(coef)-1]
		exp++
	}
	adj := exp + int64(len(coef)) - 1
	switch {
	case adj > floatMaxAdj:
		return math.Inf(int(sign)), false
	case adj < floatMinAdj:
		return math.Copysign(0, sign), false
	case len(coef) > floatMaxExct:
		// Too many significant digits to be exact; strconv still rounds
		// correctly, including the sticky digits beyond its buffer.
		// The mantissa is written as 0.ddd so the exponent stays small.
		f, _ := strconv.ParseFloat("0."+coef+"e"+strconv.FormatInt(adj+1, 10), 64)
		return math.Copysign(f, sign), false
	}
	f, exact := decimalRat(coef, exp).Float64()
	return math.Copysign(f, sign), exact
}

// Rat returns the exact value of d. It reports false for infinities and
// NaNs, and also for exponents beyond ±1e6 (10^1e6 already takes 400 KB),
// which Python could still hold.
func (d Decimal) Rat() (*big.Rat, bool) {
	if d.kind != decFinite {
		return nil, false
	}
	if d.coef == "" {
		return new(big.Rat), true
	}
	if d.exp > ratMaxExp || d.exp < -ratMaxExp {
		return nil, false
	}
	r := decimalRat(d.coef, d.exp)
	if d.neg {
		r.Neg(r)
	}
	return r, true
}

// decimalRat returns coef × 10^exp for a digit string coef and a modest
// exponent.
func decimalRat(coef string, exp int64) *big.Rat {
	num, _ := new(big.Int).SetString(coef, 10)
	pow := new(big.Int).Exp(big.NewInt(10), big.NewInt(abs64(exp)), nil)
	if exp >= 0 {
		return new(big.Rat).SetInt(num.Mul(num, pow))
	}
	return new(big.Rat).SetFrac(num, pow)
}

func abs64(v int64) int64 {
	if v < 0 {
		return -v
	}
	return v
}
