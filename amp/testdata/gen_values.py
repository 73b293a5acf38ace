#!/usr/bin/python3
"""Generate values.json: wire forms of AMP argument values as Twisted makes them.

Run with the system Python that has Twisted (22.4) installed:

    /usr/bin/python3 amp/testdata/gen_values.py

Twisted's own Argument classes are the oracle: amp.Integer, amp.Float,
amp.Boolean, amp.Decimal and amp.DateTime, both toString (what Twisted
sends) and fromString (what Twisted accepts). Cases mix hand-picked edge
values with random ones drawn from a fixed seed, so the output is stable.

Every wire value is stored as "wire" (an ASCII string) or, when it holds
bytes >= 0x80, as "wire_hex". Errors are classified as "invalid" (the text
is malformed) or "range" (well formed, but beyond what Python holds).
"""

import datetime
import decimal
import fractions
import json
import math
import os
import random
import struct
import sys

import twisted
from twisted.protocols import amp

SEED = 20240601
rng = random.Random(SEED)

INTEGER = amp.Integer()
FLOAT = amp.Float()
BOOLEAN = amp.Boolean()
DECIMAL = amp.Decimal()
DATETIME = amp.DateTime()


def wire(b):
    """Store bytes b as JSON-safe text."""
    if all(c < 0x80 for c in b):
        return {"wire": b.decode("ascii")}
    return {"wire_hex": b.hex()}


def dedupe(items):
    seen = set()
    out = []
    for it in items:
        if it not in seen:
            seen.add(it)
            out.append(it)
    return out


def soup(alphabet, maxlen):
    n = rng.randint(0, maxlen)
    return "".join(rng.choice(alphabet) for _ in range(n)).encode("latin-1")


def sprinkle_underscores(s, p=0.3):
    """Insert single underscores between some adjacent digits."""
    out = []
    for i, ch in enumerate(s):
        out.append(ch)
        if (
            ch.isdigit()
            and i + 1 < len(s)
            and s[i + 1].isdigit()
            and rng.random() < p
        ):
            out.append("_")
    return "".join(out)


# ---------------------------------------------------------------- Integer


def digit_limit_only(b):
    """Whether int(b) fails only because of sys.int_max_str_digits.

    CPython counts digits before it looks at what follows them, so
    b"1" * 4301 + b"x" also reports the limit; that is still malformed.
    """
    limit = sys.get_int_max_str_digits()
    sys.set_int_max_str_digits(0)
    try:
        int(b)
        return True
    except ValueError:
        return False
    finally:
        sys.set_int_max_str_digits(limit)


def integer_cases():
    values = [
        0, 1, -1, 7, -7, 9, 10, 99, 100, 255, 256, -128, -129, 127, 128,
        32767, 32768, -32768, -32769, 65535, 65536,
        2**31 - 1, 2**31, -2**31, -2**31 - 1, 2**32 - 1, 2**32,
        2**53, 2**53 + 1, 2**63 - 1, 2**63, -2**63, -2**63 - 1,
        2**64 - 1, 2**64, -2**64, 10**18, 10**19, 10**20, -10**19,
        10**100, -10**100, 10**100 + 1, 2**1000, -(3**500),
        int("9" * 4300), -int("9" * 4300), 10**4299,
    ]
    for bits in (4, 8, 16, 31, 32, 33, 53, 62, 63, 64, 65, 100, 200, 1000):
        for _ in range(8):
            v = rng.getrandbits(bits)
            values.append(v if rng.random() < 0.5 else -v)
    for _ in range(100):
        v = rng.getrandbits(rng.randint(1, 70))
        values.append(v if rng.random() < 0.5 else -v)
    values = dedupe(values)
    encode = [{"value": str(v), "wire": INTEGER.toString(v).decode()} for v in values]

    texts = [
        b"0", b"-0", b"+0", b"007", b"-007", b"00", b"0_7", b"1_000", b"1_000_000",
        b"1__0", b"_1", b"1_", b"-_1", b"+_1", b"_", b"__", b" 1 ", b"\t\n\x0b\x0c\r 42 \r\n",
        b"\x1c1", b"1\x1c", b"\x1f1", b"\x851", b"\xa01", b"1\xa0", b"\xc2\xa01", b"1\x00", b"\x001",
        b"", b" ", b"+", b"-", b"+-1", b"--1", b"++1", b"+ 1", b"- 1", b"1 2", b"1-", b"1+",
        b"0x10", b"0o7", b"0b1", b"1.0", b"1e3", b"1E3", b"inf", b"nan", b"one", b"\xd9\xa1",
        b"9223372036854775807", b"9223372036854775808", b"-9223372036854775808",
        b"-9223372036854775809", b"18446744073709551615", b"18446744073709551616",
        b"-18446744073709551616", b"99999999999999999999", b"000000000000000000000000001",
        b"1" + b"0" * 100, b"-" + b"9" * 40,
        b"9" * 4300, b"9" * 4301, b"0" * 4300 + b"1", b"0" * 4299 + b"1",
        b"1" + b"_0" * 4299, b"1" + b"_0" * 4300, b"-" + b"1" * 4301,
        b"1" * 4301 + b"x", b"127", b"128", b"-128", b"-129", b"255", b"256",
        b"32767", b"32768", b"-32768", b"-32769", b"65535", b"65536",
        b"2147483647", b"2147483648", b"-2147483648", b"-2147483649", b"4294967295", b"4294967296",
    ]
    for e in encode:
        texts.append(e["wire"].encode())
    for _ in range(150):
        v = rng.getrandbits(rng.randint(1, 80))
        s = str(v)
        if rng.random() < 0.5:
            s = sprinkle_underscores(s)
        if rng.random() < 0.3:
            s = "0" * rng.randint(1, 5) + s
        if rng.random() < 0.4:
            s = rng.choice("+-") + s
        if rng.random() < 0.3:
            s = rng.choice([" ", "\t", "\n", "\r\n", "\x0b", "\x0c"]) + s
        if rng.random() < 0.3:
            s = s + rng.choice([" ", "\t", "\n", "\r\n", "\x0b", "\x0c", "\x1c"])
        texts.append(s.encode())
    for _ in range(300):
        texts.append(soup("0123456789__+- \t\x0b\x1cx.", 7))
    decode = []
    for b in dedupe(texts):
        case = wire(b)
        try:
            case["value"] = str(INTEGER.fromString(b))
        except ValueError as e:
            case["error"] = "range" if digit_limit_only(b) else "invalid"
        decode.append(case)
    return {"encode": encode, "decode": decode}


# ---------------------------------------------------------------- Float


def f2bits(x):
    return struct.pack(">d", x).hex()


def bits2f(h):
    return struct.unpack(">d", bytes.fromhex(h))[0]


def float_cases():
    values = [
        float("nan"), -float("nan"), float("inf"), -float("inf"), 0.0, -0.0,
        5e-324, -5e-324, 1e-323, 2.2250738585072014e-308, 2.225073858507201e-308,
        1.7976931348623157e308, -1.7976931348623157e308,
        1e16, 1e15, 9999999999999998.0, 1e16 + 2, 123456789012345680.0, 1.2345678901234567e16,
        0.1, 0.2, 0.30000000000000004, 1 / 3, 2 / 3, 1.0, -1.0, 2.0, 10.0, 100.0, 1e22, 1e23,
        1e-4, 1e-5, 0.0001, 0.00011, 9.9999e-5, 0.001234, 1.5e-7, 1e100, 1e-100, 1e308, 1e-308,
        3.141592653589793, 2.718281828459045, 1e21, 1e-7, 123.456, -0.5, 0.5, 1.5, 2**52 + 0.5,
        float(2**53), float(2**53 + 2), float(2**63), float(2**64), 4.35, 0.3, 1e-06, 1.2e-05,
        9007199254740993.0, 1.7976931348623157e308 / 3, 4.9406564584124654e-324 * 3,
    ]
    for e in range(-25, 26):
        values.append(10.0**e)
        values.append(math.nextafter(10.0**e, 0))
        values.append(math.nextafter(10.0**e, math.inf))
        values.append(-(10.0**e) * 1.5)
    bit_patterns = [
        0x7FF0000000000001, 0x7FF8000000000001, 0xFFF0000000000001, 0x7FFFFFFFFFFFFFFF,
        0x0000000000000001, 0x000FFFFFFFFFFFFF, 0x0010000000000000, 0x7FEFFFFFFFFFFFFF,
        0x8000000000000001,
    ]
    for _ in range(400):
        bit_patterns.append(rng.getrandbits(64))
    for p in bit_patterns:
        values.append(struct.unpack(">d", p.to_bytes(8, "big"))[0])
    for _ in range(150):
        k = rng.randint(0, 8)
        values.append(round(rng.uniform(-1e6, 1e6), k))
        values.append(float(rng.getrandbits(rng.randint(1, 64))))
        values.append(rng.random() * 10.0 ** rng.randint(-30, 30))

    encode = []
    seen = set()
    for x in values:
        h = f2bits(x)
        if h in seen:
            continue
        seen.add(h)
        encode.append({"bits": h, "hex": x.hex(), "wire": FLOAT.toString(x).decode()})

    texts = [
        b"nan", b"NaN", b"-nan", b"+nan", b"NAN", b"inf", b"-inf", b"+inf", b"Inf", b"INF",
        b"infinity", b"-Infinity", b"+iNfInItY", b"infinit", b"infinityy", b"in", b"na",
        b"nan(1)", b"nanq", b"snan", b"-+inf", b" inf ", b"\tnan\n", b"in_f", b"n_an",
        b"0x1p3", b"0x10", b"1e", b"1e+", b"1e-", b"e5", b"E5", b".", b"-.", b"+.", b"",
        b" ", b"-", b"+", b"1e5", b"1E5", b"1e+5", b"1e-5", b".5", b"5.", b"-.5", b"+5.",
        b"1.e5", b".e5", b"5.e", b"00.5", b"0_0.5", b"1_0.5", b"1_.5", b"1._5", b"1e1_0",
        b"1_e5", b"1e_5", b"1e+_5", b"_1", b"1_", b"-_1", b"1__0", b"1_000_000.000_1",
        b"1.5.5", b"1d5", b"1f", b"1.0f", b"+-1", b"--1", b"1 2", b"\x1c1", b"1\x1c",
        b" 1.5\n", b"\x0b1\x0c", b"\r\n1\r\n", b"\xa01", b"1\xa0", b"\x851", b"1\x00",
        b"1e500", b"-1e500", b"1e-400", b"-1e-400", b"1e-323", b"2e-324", b"3e-324",
        b"2.4703282292062328e-324", b"2.4703282292062327e-324", b"1.7976931348623158e308",
        b"1.7976931348623159e308", b"179769313486231580793728971405303415079934132710037826936173778980444968292764750946649017977587207096330286416692887910946555547851940402630657488671505820681908902000708383676273854845817711531764475730270069855571366959622842914819860834936475292719074168444365510704342711559699508093042880177904174409",
        b"0.1", b"0.10000000000000001", b"0." + b"0" * 400 + b"1", b"1" + b"0" * 400,
        b"1" * 1000, b"0." + b"3" * 800, b"1e0000000000000000000000000001",
        b"1e-0000000000000000000000000001", b"1e99999999999999999999", b"1e-99999999999999999999",
        b"0e99999999999999999999", b"-0", b"-0.0", b"+0.0", b"0e0", b"0.000",
        b"1.0", b"True", b"1,5", b"\xd9\xa1",
    ]
    for e in encode:
        texts.append(e["wire"].encode())
        x = bits2f(e["bits"])
        if math.isfinite(x):
            r = repr(x)
            variants = [r.upper(), " " + r + " ", sprinkle_underscores(r, 0.5)]
            if "e" in r:
                m, ex = r.split("e")
                variants.append(m + "e" + ex[0] + "000" + ex[1:])
            texts.append(rng.choice(variants).encode())
    # Exact halfway points between neighbouring doubles (and a hair either
    # side), which only a correctly rounding parser gets right.
    ctx = decimal.Context(prec=1200)
    for _ in range(60):
        x = abs(bits2f(rng.getrandbits(64).to_bytes(8, "big").hex()))
        if not math.isfinite(x) or x == 0:
            continue
        y = math.nextafter(x, math.inf)
        if not math.isfinite(y):
            continue
        mid = ctx.divide(ctx.add(decimal.Decimal(x), decimal.Decimal(y)), 2)
        tiny = decimal.Decimal((0, (1,), mid.adjusted() - 1100))
        for d in (mid, ctx.add(mid, tiny), ctx.subtract(mid, tiny)):
            texts.append(format(d, "E").encode())
    for _ in range(300):
        texts.append(soup("0123456789._eE+-_infatyINF \t\x1c", 8))
    decode = []
    for b in dedupe(texts):
        case = wire(b)
        try:
            x = FLOAT.fromString(b)
            case["bits"] = f2bits(x)
            case["hex"] = x.hex()
        except ValueError:
            case["error"] = "invalid"
        decode.append(case)
    return {"encode": encode, "decode": decode}


# ---------------------------------------------------------------- Boolean


def boolean_cases():
    encode = [{"value": v, "wire": BOOLEAN.toString(v).decode()} for v in (True, False)]
    decode = []
    for b in [b"True", b"False", b"true", b"false", b"TRUE", b" True", b"True ", b"1", b"0",
              b"", b"T", b"Tru", b"Truee", b"yes", b"\xff"]:
        case = wire(b)
        try:
            case["value"] = BOOLEAN.fromString(b)
        except (TypeError, ValueError):
            case["error"] = "invalid"
        decode.append(case)
    return {"encode": encode, "decode": decode}


# ---------------------------------------------------------------- Decimal


def random_decimal_text():
    s = rng.choice(["", "", "", "-", "+"])
    r = rng.random()
    if r < 0.04:
        s += rng.choice(["NaN", "nan", "sNaN", "snan", "Inf", "Infinity", "inf", "INFINITY"])
        if "a" in s.lower() and rng.random() < 0.5:
            s += "0" * rng.randint(0, 3) + str(rng.getrandbits(rng.randint(1, 100)))
        return s
    ip = "".join(rng.choice("0123456789") for _ in range(rng.randint(0, 25)))
    if rng.random() < 0.3:
        ip = "0" * rng.randint(1, 4) + ip
    fp = None
    if rng.random() < 0.6:
        fp = "".join(rng.choice("0123456789") for _ in range(rng.randint(0, 25)))
    if not ip and not fp:
        ip = rng.choice(["0", "1", "5", "00"])
    s += ip
    if fp is not None:
        s += "." + fp
    if rng.random() < 0.6:
        s += rng.choice("eE")
        r = rng.random()
        if r < 0.5:
            e = rng.randint(-40, 40)
        elif r < 0.8:
            e = rng.randint(-10**6, 10**6)
        else:
            e = rng.choice([1, -1]) * rng.randint(10**17, 2 * 10**18 + 10)
        if e >= 0:
            s += rng.choice(["", "+"]) + str(e)
        else:
            s += str(e)
    return s


def decimal_cases():
    texts = [
        "0", "-0", "+0", "0.0", "-0.0", "0.00", "00.00e3", "0E+5", "0e-5", "-0E-5", "0E-7", "-0E+3",
        "1", "-1", "1.0", "1.00", "1.50", "10", "100", "1E+2", "1e2", "1E2", "1.5E+2", "15E1",
        "1E-1", "0.1", "0.000001", "0.0000001", "1E-6", "1E-7", "1.23E-5", "123E-10", "-1.5e+3",
        "1.000E-7", "12345678901234567890.123456789", "1e999999999999999999", "1e1000000000000000000",
        "-1e999999999999999999", "9.99e999999999999999", "99e999999999999999998", "1e-999999999999999999",
        "1e-1999999999999999997", "1e-1999999999999999998", "10e-1999999999999999998",
        "100e-1999999999999999999", "0e-1999999999999999997", "0e-1999999999999999998",
        "0e999999999999999999", "0e1000000000000000000", "1e99999999999999999999999999",
        "1e-99999999999999999999999999", "0e-99999999999999999999999999", "1e9223372036854775807",
        "1e9223372036854775808", "1e-9223372036854775808", "1.5e-9223372036854775808",
        "1e+0000000000000000000000000005", "1e-0000000000000000000000000005",
        "0e92233720368547758080", "1e-92233720368547758080", "0e-92233720368547758080",
        "1e18446744073709551616", "1e18446744073709551617", "0e18446744073709551616",
        "1e-18446744073709551616", "1e-9223372036854775807", "1e9223372036854775806",
        "0.1e-9223372036854775808", "0.0e-9223372036854775807", "1e18446744073709551615",
        "Infinity", "-Infinity", "+Infinity", "Inf", "-inf", "INF", "iNfInItY", "infinit",
        "Infinityx", "infinity0", "Infinite", "in", "NaN", "nan", "-NaN", "+NaN", "NAN", "sNaN",
        "-sNaN", "SNAN", "sNaN0", "sNaN012", "sNaN12", "-sNaN123", "NaN00", "NaN123", "-NaN0001",
        "NaN" + "0" * 40 + "1" + "2" * 60, "NaN1x", "NaN-1", "NaN+1", "NaN.1", "NaNe1", "qNaN", "nana",
        "1_000", "1__0", "_1", "1_", "1_.5", "1._5", "1e1_0", "1_e5", ".5_", "_", "__", "N_aN",
        "NaN_1", "NaN1_2", "In_f", "-_1", "+1_2.3_4e-5_6", "_-1", "1E+0_5", "1_0E1_0", "_ 1",
        " 1_ ", "1 _", "\x1c_1_\x1f", " 1 ", "\t\n\x0b\x0c\r1\r\n", "\x1c1\x1d", "\x1e1\x1f",
        "1 2", "1\x00", "\x001", "", " ", "+", "-", "+-1", "--1", "1e", "1e+", "1e-", "1e+-5",
        ".", ".e5", "E5", "e5", "0.", "5.", ".5", "+.5E+1", "5.e3", "1.5.5", "1e5.5", "1e5e5",
        "0x10", "1,5", "1d5", "1f", "٣", "1\x85", "1\xa0", "\u20031", "Infinity ", " -NaN ",
        "1" * 100, "0." + "0" * 50 + "1", "1" + "0" * 60, "-" + "9" * 5000, "1" * 3000 + "e-3000",
    ]
    for _ in range(500):
        texts.append(random_decimal_text())
    for _ in range(100):
        s = random_decimal_text()
        if rng.random() < 0.6:
            s = sprinkle_underscores(s, 0.4)
        if rng.random() < 0.2:
            i = rng.randint(0, len(s))
            s = s[:i] + "_" + s[i:]
        if rng.random() < 0.3:
            s = rng.choice([" ", "\t", "\x1c", "\n "]) + s + rng.choice(["", " ", "\x1f"])
        texts.append(s)
    for _ in range(300):
        texts.append(soup("0123456789.eE+-_ nNaAsSiIfFtTyY\t\x1c", 8).decode("latin-1"))
    decode = []
    for s in dedupe(texts):
        b = s.encode("utf-8")
        case = wire(b)
        try:
            d = DECIMAL.fromString(b)
        except UnicodeDecodeError:
            case["error"] = "invalid"
            decode.append(case)
            continue
        except decimal.InvalidOperation as e:
            syntax = any(c is decimal.ConversionSyntax for c in (e.args[0] if e.args else []))
            case["error"] = "invalid" if syntax else "range"
            decode.append(case)
            continue
        case["str"] = DECIMAL.toString(d).decode("ascii")
        case["sign"] = 0 if (d.is_nan() or d.is_zero()) else (-1 if d.is_signed() else 1)
        case["is_nan"] = d.is_nan()
        case["is_inf"] = d.is_infinite()
        if not d.is_snan():
            x = float(d)
            case["float_bits"] = f2bits(x)
            if d.is_finite():
                if d.is_zero():
                    case["float_exact"] = True
                elif abs(d.adjusted()) > 400:
                    case["float_exact"] = False
                else:
                    case["float_exact"] = math.isfinite(x) and fractions.Fraction(d) == fractions.Fraction(x)
            elif d.is_infinite():
                case["float_exact"] = True
        if d.is_finite() and abs(d.as_tuple().exponent) <= 1000 and len(d.as_tuple().digits) <= 1000:
            fr = fractions.Fraction(d)
            case["rat_num"] = str(fr.numerator)
            case["rat_den"] = str(fr.denominator)
        decode.append(case)

    new = []
    pairs = [(100, -2), (1, 2), (0, 0), (0, -5), (0, 5), (-5, 0), (-1, -7), (123, -10),
             (10**30, 0), (-(10**30), -40), (1, 2**31 - 1), (1, -(2**31)), (-7, 2**31 - 1)]
    for _ in range(100):
        c = rng.getrandbits(rng.randint(0, 120))
        if rng.random() < 0.4:
            c = -c
        e = rng.choice([rng.randint(-30, 30), rng.randint(-(2**31), 2**31 - 1)])
        pairs.append((c, e))
    for c, e in pairs:
        sign = 1 if c < 0 else 0
        digits = tuple(int(ch) for ch in str(abs(c)))
        d = decimal.Decimal((sign, digits, e))
        new.append({"coefficient": str(c), "exponent": e, "str": DECIMAL.toString(d).decode()})
    return {"decode": decode, "new": new}


# ---------------------------------------------------------------- DateTime


def tz_for(offset_minutes, use_utc):
    if use_utc:
        return amp.utc
    return datetime.timezone(datetime.timedelta(minutes=offset_minutes))


def dt_fields(d):
    off = d.utcoffset()
    return {
        "year": d.year, "month": d.month, "day": d.day, "hour": d.hour,
        "minute": d.minute, "second": d.second, "microsecond": d.microsecond,
        "offset_minutes": int(off.total_seconds()) // 60,
    }


def datetime_cases():
    specs = [
        (2012, 1, 23, 12, 34, 56, 54321, 0, True),
        (2012, 1, 23, 12, 34, 56, 54321, 0, False),
        (2012, 1, 23, 12, 34, 56, 54321, -83, False),
        (2012, 1, 23, 12, 34, 56, 54321, -330, False),
        (2012, 1, 23, 12, 34, 56, 54321, 330, False),
        (2012, 1, 23, 12, 34, 56, 54321, 14 * 60, False),
        (2012, 1, 23, 12, 34, 56, 54321, -12 * 60, False),
        (2012, 1, 23, 12, 34, 56, 54321, 1439, False),
        (2012, 1, 23, 12, 34, 56, 54321, -1439, False),
        (1, 1, 1, 0, 0, 0, 0, 0, True),
        (1, 1, 1, 0, 0, 0, 0, -330, False),
        (1, 1, 1, 0, 0, 0, 0, 60, False),
        (9999, 12, 31, 23, 59, 59, 999999, 0, True),
        (9999, 12, 31, 23, 59, 59, 999999, -60, False),
        (9999, 12, 31, 23, 59, 59, 999999, 840, False),
        (2000, 2, 29, 0, 0, 0, 1, 1, False),
        (1970, 1, 1, 0, 0, 0, 0, 0, True),
        (2038, 1, 19, 3, 14, 7, 999999, 0, True),
        (1900, 2, 28, 23, 59, 59, 500000, 45, False),
    ]
    for _ in range(200):
        y = rng.choice([rng.randint(1, 9999), rng.randint(1900, 2100)])
        m = rng.randint(1, 12)
        dmax = (datetime.date(y + (m == 12), m % 12 + 1, 1) - datetime.timedelta(days=1)).day if y < 9999 or m < 12 else 31
        d = rng.randint(1, dmax)
        off = rng.choice([0, rng.randint(-1439, 1439), rng.choice([-720, -330, -300, 60, 330, 345, 525, 840])])
        specs.append((y, m, d, rng.randint(0, 23), rng.randint(0, 59), rng.randint(0, 59),
                      rng.choice([0, rng.randint(0, 999999)]), off, off == 0 and rng.random() < 0.5))
    encode = []
    for y, mo, d, h, mi, s, us, off, use_utc in specs:
        dt = datetime.datetime(y, mo, d, h, mi, s, us, tzinfo=tz_for(off, use_utc))
        case = dt_fields(dt)
        case["wire"] = DATETIME.toString(dt).decode("ascii")
        encode.append(case)

    texts = [e["wire"].encode() for e in encode]
    texts += [
        b"2012-01-23T12:34:56.054321-01:23", b"2012-01-23T12:34:56.054321+00:00",
        b"2012-01-23T12:34:56.054321-00:00", b" 012-01-23T12:34:56.054321-01:23",
        b"+012x01y23z12a34b56c054321-01:23", b"2012-01-23T12:34:56.054321*01:23",
        b"2012-01-23T12:34:56.054321 01:23", b"2012-01-23T12:34:56.054321Z01:23",
        b"2012-01-23T12:34:56.054321+-1:23", b"2012-01-23T12:34:56.054321+23:59",
        b"2012-01-23T12:34:56.054321-23:59", b"2012-01-23T12:34:56.054321+24:00",
        b"2012-01-23T12:34:56.054321-24:00", b"2012-01-23T12:34:56.054321+23:60",
        b"2012-01-23T12:34:56.054321+23:99", b"2012-01-23T12:34:56.054321+00:99",
        b"2012-01-23T12:34:56.054321-99:99", b"2012-13-23T12:34:56.054321+23:59",
        b"2012-00-23T12:34:56.054321+00:00", b"2012-01-00T12:34:56.054321+00:00",
        b"2012-01-32T12:34:56.054321+00:00", b"2012-04-31T12:34:56.054321+00:00",
        b"0000-01-23T12:34:56.054321+23:59", b"-001-01-23T12:34:56.054321+00:00",
        b"2012-01-23T12:34:56.0_4321-01:23", b"2012-01-23T12:34:56.\x0c54321-01:23",
        b"2012-01-23T12:34:56.\x1c54321-01:23", b"2012-01-23T12:34:56.05432-01:23",
        b"2012-01-23T12:34:56.0543210-01:23", b"2012-02-29T12:34:56.054321-01:23",
        b"2013-02-29T12:34:56.054321-01:23", b"1900-02-29T12:34:56.054321-01:23",
        b"2000-02-29T12:34:56.054321-01:23", b"2012-01-23T12:34:56.054321-01:-5",
        b"2012-01-23T12:34:56.054321--1:00", b"2012-01-23T12:34:56.054321+\xff1:00",
        b"2012-01-23T24:34:56.054321+01:00", b"2012-01-23T12:60:56.054321+01:00",
        b"2012-01-23T12:34:60.054321+01:00", b"2012-01-23T12:34:56.-54321+01:00",
        b"2012-01-23T12:34:56.+54321+01:00", b"2012-01-23T-1:34:56.054321+01:00",
        b"2012-1 -23T12:34:56.054321+01:00", b"2012- 1-23T12:34:56.054321+01:00",
        b"2012-01-23T12:34:56.  4321+01:00", b"2012-01-23T12:34:56.4321  +01:00",
        b"2012-01-23T12:34:56. 43 21+01:00", b"2_12-01-23T12:34:56.054321+01:00",
        b"_212-01-23T12:34:56.054321+01:00", b"2012-01-23T12:34:56.054321+1_:00",
        b"\xff012-01-23T12:34:56.054321+01:00", b"2012-01-23T12:34:56.054321+01:00 ",
        b"", b"2012-01-23T12:34:56.054321+01:0", b"9999-12-31T23:59:59.999999-23:59",
        b"0001-01-01T00:00:00.000000+23:59", b"2012-01-23T12:34:56.000000+00:-0",
        b"2012-01-23T12:34:56.000000-00:-0", b"2012-01-23T12:34:56.000000-0x:00",
    ]
    alphabet = "0123456789+-_ \t\x1cTZ:.x"
    for _ in range(400):
        b = bytearray(rng.choice(encode)["wire"].encode())
        for _ in range(rng.randint(1, 3)):
            i = rng.randrange(len(b))
            c = rng.choice(alphabet)
            if rng.random() < 0.05:
                c = "\xff"
            b[i] = ord(c)
        if rng.random() < 0.03:
            b = b[:-1] if rng.random() < 0.5 else b + b"0"
        texts.append(bytes(b))
    decode = []
    for b in dedupe(texts):
        case = wire(b)
        try:
            dt = DATETIME.fromString(b)
            case.update(dt_fields(dt))  # utcoffset() applies Python's ±24h check
        except (ValueError, OverflowError):
            case["error"] = "invalid"
        decode.append(case)
    return {"encode": encode, "decode": decode}


def main():
    out = {
        "generator": {
            "python": sys.version.split()[0],
            "twisted": twisted.__version__,
            "seed": SEED,
        },
        "integer": integer_cases(),
        "float": float_cases(),
        "boolean": boolean_cases(),
        "decimal": decimal_cases(),
        "datetime": datetime_cases(),
    }
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "values.json")
    # One case per line keeps the file small and its diffs readable.
    with open(path, "w") as f:
        f.write("{\n")
        f.write(' "generator": %s' % json.dumps(out["generator"], sort_keys=True))
        for typ in ("integer", "float", "boolean", "decimal", "datetime"):
            f.write(',\n "%s": {' % typ)
            for j, (name, cases) in enumerate(sorted(out[typ].items())):
                f.write("%s\n  \"%s\": [\n" % ("," if j else "", name))
                f.write(",\n".join("   " + json.dumps(c, sort_keys=True) for c in cases))
                f.write("\n  ]")
            f.write("\n }")
        f.write("\n}\n")
    for k in ("integer", "float", "boolean", "decimal", "datetime"):
        print(k, {kk: len(vv) for kk, vv in out[k].items()}, file=sys.stderr)


if __name__ == "__main__":
    main()
