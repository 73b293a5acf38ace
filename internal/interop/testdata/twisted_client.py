"""
A Twisted AMP client that checks an AMP server speaking schema.py.

Usage:
    /usr/bin/python3 twisted_client.py --port P [--host 127.0.0.1]
        [--only NAME,...] [--timeout-scale 1] [--run-timeout 120] [--list]

Prints one line per check, "PASS <name>" or "FAIL <name>: <detail>", then
"SUMMARY <passed> passed, <failed> failed", and exits 0 iff every check
passed (1 if any failed, 2 on a usage error).  Lines starting with "INFO "
carry extra observations (e.g. which error code bad_argument got) and can be
ignored by parsers.  --only takes exact names or fnmatch patterns
(e.g. "echo_float_*"); --list prints the check names and exits.

Each check runs on its own connection(s), one check at a time, each bounded
by a timeout (5 s unless noted), and the whole run is bounded by 120 s:
checks not started by then are reported as FAIL.
"""

import argparse
import datetime
import decimal
import math
import os
import sys

# Import schema.py from next to this script; leave no __pycache__ in the tree.
sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from twisted.internet import defer, reactor  # noqa: E402
from twisted.protocols import amp  # noqa: E402
from twisted.python.failure import Failure  # noqa: E402
from twisted.python.filepath import FilePath  # noqa: E402

import harness  # noqa: E402
import schema  # noqa: E402
from harness import CheckFailed, sleep  # noqa: E402

DEFAULT_TIMEOUT = 5.0


# ---------------------------------------------------------------------------
# Connections


class ClientAMP(amp.AMP):
    """An AMP client connection that can tell when the peer closed it."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.lost = False
        self.lostReason = None
        self._lostWaiters = []
        self.errorBoxes = []  # raw _error boxes received, in order

    def _errorReceived(self, box):
        # callRemote maps every undeclared code to UnknownRemoteError, whose
        # errorCode is always UNKNOWN; keep the raw box to see the real code.
        self.errorBoxes.append(dict(box))
        return super()._errorReceived(box)

    def connectionLost(self, reason):
        self.lost = True
        self.lostReason = reason
        try:
            super().connectionLost(reason)
        finally:
            waiters, self._lostWaiters = self._lostWaiters, []
            for d in waiters:
                d.callback(None)

    def whenLost(self):
        """A Deferred that fires (with None) when the connection is closed."""
        if self.lost:
            return defer.succeed(None)
        d = defer.Deferred()
        self._lostWaiters.append(d)
        return d


class Context(harness.Context):
    """Per-check state: the connections it opened (closed afterwards)."""

    protocolClass = ClientAMP
    connectTimeout = DEFAULT_TIMEOUT


def withTimeout(d, seconds):
    """
    Fire (with None) when d fires or after `seconds`, whichever is first.
    d's result is discarded.
    """
    out = defer.Deferred()
    state = {"done": False}

    def finish(result):
        if not state["done"]:
            state["done"] = True
            out.callback(result)

    call = reactor.callLater(seconds, finish, None)

    def fired(result):
        if call.active():
            call.cancel()
        finish(None)
        return None

    d.addBoth(fired)
    return out


class Caught:
    """Holds a Failure (a Deferred cannot fire with a Failure as its value)."""

    def __init__(self, failure):
        self.failure = failure


@defer.inlineCallbacks
def expectFailure(d):
    """Wait for d and return its Failure; raise CheckFailed if it succeeded."""
    try:
        result = yield d
    except defer.CancelledError:
        raise  # the check's timeout, not an answer
    except Exception:
        caught = Caught(Failure())
    else:
        raise CheckFailed("expected an error answer, got success: %r" % (result,))
    defer.returnValue(caught)


@defer.inlineCallbacks
def expectClosedByServer(proto, seconds=DEFAULT_TIMEOUT - 1):
    yield withTimeout(proto.whenLost(), seconds)
    if not proto.lost:
        raise CheckFailed("server did not close the connection within %gs" % seconds)


@defer.inlineCallbacks
def sumStillWorks(proto):
    try:
        r = yield proto.callRemote(schema.Sum, a=2, b=3)
    except Exception as e:
        raise CheckFailed("connection no longer works: Sum after the error failed: %s" % describe(e))
    if r["total"] != 5:
        raise CheckFailed("Sum after the error returned %r" % (r,))


def describe(e):
    if isinstance(e, Failure):
        e = e.value
    if isinstance(e, amp.RemoteAmpError):
        return "%s(code=%r, description=%r)" % (type(e).__name__, e.errorCode, e.description)
    if isinstance(e, amp.UnhandledCommand):
        return "UnhandledCommand%r" % (e.args,)
    return "%s: %s" % (type(e).__name__, e)


# ---------------------------------------------------------------------------
# Echo checks


def sameFloat(a, b):
    if not isinstance(a, float) or not isinstance(b, float):
        return False
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    return a == b and math.copysign(1.0, a) == math.copysign(1.0, b)


def sameDecimal(a, b):
    if not isinstance(a, decimal.Decimal) or not isinstance(b, decimal.Decimal):
        return False
    # Decimal('NaN') != Decimal('NaN'), and 1.50 == 1.5: compare the text
    # form (sign, digits, exponent, NaN kind) and the NaN classification.
    return (
        str(a) == str(b)
        and a.is_nan() == b.is_nan()
        and a.is_snan() == b.is_snan()
        and a.is_qnan() == b.is_qnan()
        and a.is_signed() == b.is_signed()
    )


def sameDatetime(a, b):
    if not isinstance(a, datetime.datetime) or not isinstance(b, datetime.datetime):
        return False
    # Aware datetimes compare as instants (and may overflow near year 1 /
    # 9999), so compare the local fields and the offset separately.
    return a.replace(tzinfo=None) == b.replace(tzinfo=None) and a.utcoffset() == b.utcoffset()


def sameValue(name, sent, got):
    if name == "float":
        return sameFloat(sent, got)
    if name == "decimal":
        return sameDecimal(sent, got)
    if name == "datetime":
        return sameDatetime(sent, got)
    if name == "path":
        return isinstance(got, FilePath) and got.path == sent.path
    if name == "floats":
        return isinstance(got, list) and len(got) == len(sent) and all(map(sameFloat, sent, got))
    if name == "decimals":
        return isinstance(got, list) and len(got) == len(sent) and all(map(sameDecimal, sent, got))
    if name == "datetimes":
        return isinstance(got, list) and len(got) == len(sent) and all(map(sameDatetime, sent, got))
    if name == "boolean":
        return type(got) is bool and got is sent
    if name == "integer":
        return type(got) is int and got == sent
    return type(got) is type(sent) and got == sent


def short(value, limit=200):
    r = repr(value)
    if len(r) > limit:
        r = r[:limit] + "...(%d chars)" % len(r)
    return r


@defer.inlineCallbacks
def echoCheck(ctx, kw):
    """
    Send Echo with the arguments in kw; the answer must hold exactly those
    arguments, decoding to equal values, with byte-identical wire values
    (which is what Twisted's own responder produces).
    """
    proto = yield ctx.connect()
    sentBox = schema.Echo.makeArguments(kw, proto)
    sentWire = dict(sentBox)
    try:
        answer = yield proto.callRemoteString(
            b"Echo", **{k.decode("ascii"): v for k, v in sentWire.items()}
        )
    except Exception as e:
        raise CheckFailed("Echo failed: %s" % describe(e))
    answer = dict(answer)
    answer.pop(b"_answer", None)
    extra = sorted(set(answer) - set(sentWire))
    missing = sorted(set(sentWire) - set(answer))
    if extra or missing:
        raise CheckFailed(
            "answer keys differ: missing %r, unexpected %r" % (missing, extra)
        )
    try:
        parsed = schema.Echo.parseResponse(amp.AmpBox(answer), proto)
    except Exception as e:
        raise CheckFailed("answer does not decode: %s: %s" % (type(e).__name__, e))
    for name, value in kw.items():
        if not sameValue(name, value, parsed.get(name)):
            raise CheckFailed(
                "%s: sent %s, got back %s (wire %s)"
                % (name, short(value), short(parsed.get(name)), short(answer.get(name.encode("ascii"))))
            )
    for key in sorted(sentWire):
        if answer[key] != sentWire[key]:
            raise CheckFailed(
                "%s decodes equal but the wire bytes differ: sent %s, got %s"
                % (key.decode("ascii"), short(sentWire[key]), short(answer[key]))
            )


def tz(hours, minutes=0):
    return datetime.timezone(datetime.timedelta(hours=hours, minutes=minutes))


UTC = datetime.timezone.utc
D = decimal.Decimal

ALL_BYTES_65535 = bytes(i % 256 for i in range(65535))

ECHO_CASES = [
    # integer
    ("echo_integer_zero", {"integer": 0}),
    ("echo_integer_minus_one", {"integer": -1}),
    ("echo_integer_int64_max", {"integer": 2 ** 63 - 1}),
    ("echo_integer_int64_max_plus_one", {"integer": 2 ** 63}),
    ("echo_integer_int64_min_minus_one", {"integer": -(2 ** 63) - 1}),
    ("echo_integer_googol", {"integer": 10 ** 100}),
    ("echo_integer_minus_googol", {"integer": -(10 ** 100)}),
    # bytes
    ("echo_bytes_empty", {"bytes": b""}),
    ("echo_bytes_all_values_65535", {"bytes": ALL_BYTES_65535}),
    ("echo_bytes_nul_ff", {"bytes": b"\x00\xff"}),
    # text
    ("echo_text_empty", {"text": ""}),
    ("echo_text_non_ascii", {"text": "h\u00e9llo w\u00f6rld \u2713 \U0001d11e \u65e5\u672c"}),
    ("echo_text_60000_bytes", {"text": "\u00e9" * 30000}),
    # float
    ("echo_float_zero", {"float": 0.0}),
    ("echo_float_negative_zero", {"float": -0.0}),
    ("echo_float_one_and_a_half", {"float": 1.5}),
    ("echo_float_1e16", {"float": 1e16}),
    ("echo_float_1e_minus_5", {"float": 1e-5}),
    ("echo_float_min_subnormal", {"float": 5e-324}),
    ("echo_float_max", {"float": 1.7976931348623157e308}),
    ("echo_float_nan", {"float": float("nan")}),
    ("echo_float_inf", {"float": float("inf")}),
    ("echo_float_minus_inf", {"float": float("-inf")}),
    # boolean
    ("echo_boolean_true", {"boolean": True}),
    ("echo_boolean_false", {"boolean": False}),
    # decimal
    ("echo_decimal_zero", {"decimal": D("0")}),
    ("echo_decimal_negative_zero", {"decimal": D("-0")}),
    ("echo_decimal_1_50", {"decimal": D("1.50")}),
    ("echo_decimal_1e_plus_2", {"decimal": D("1E+2")}),
    (
        "echo_decimal_long_negative_exponent",
        {"decimal": D("-1.234567890123456789012345678901234567890E-30")},
    ),
    ("echo_decimal_infinity", {"decimal": D("Infinity")}),
    ("echo_decimal_minus_infinity", {"decimal": D("-Infinity")}),
    ("echo_decimal_nan", {"decimal": D("NaN")}),
    ("echo_decimal_minus_nan", {"decimal": D("-NaN")}),
    ("echo_decimal_snan", {"decimal": D("sNaN")}),
    # datetime
    ("echo_datetime_utc", {"datetime": datetime.datetime(2012, 1, 23, 12, 34, 56, 54321, UTC)}),
    (
        "echo_datetime_minus_0530",
        {"datetime": datetime.datetime(2012, 1, 23, 12, 34, 56, 0, tz(-5, -30))},
    ),
    (
        "echo_datetime_plus_1400",
        {"datetime": datetime.datetime(2012, 12, 31, 23, 59, 59, 0, tz(14))},
    ),
    (
        "echo_datetime_microseconds_999999",
        {"datetime": datetime.datetime(2000, 2, 29, 0, 0, 0, 999999, UTC)},
    ),
    ("echo_datetime_year_1", {"datetime": datetime.datetime(1, 1, 1, 0, 0, 0, 0, UTC)}),
    (
        "echo_datetime_year_9999",
        {"datetime": datetime.datetime(9999, 12, 31, 23, 59, 59, 999999, UTC)},
    ),
    # list (ListOf(Integer))
    ("echo_list_empty", {"list": []}),
    ("echo_list_zero", {"list": [0]}),
    ("echo_list_bigints", {"list": [2 ** 63, -(2 ** 63) - 1, 10 ** 100, -(10 ** 100), -1, 7]}),
    # texts (ListOf(Unicode))
    ("echo_texts_empty", {"texts": []}),
    ("echo_texts_mixed", {"texts": ["", "a", "\u00fc"]}),
    # items (AmpList)
    ("echo_items_empty", {"items": []}),
    (
        "echo_items_two",
        {"items": [{"name": "a", "value": 1}, {"name": "\u00fc", "value": -(10 ** 30)}]},
    ),
    # path
    ("echo_path_non_ascii", {"path": FilePath("/tmp/\u00fc x")}),
    # floats (ListOf(Float))
    ("echo_floats_empty", {"floats": []}),
    (
        "echo_floats_special",
        {"floats": [float("nan"), float("inf"), float("-inf"), -0.0, 1.5, 5e-324, 1e16]},
    ),
    # decimals (ListOf(Decimal))
    ("echo_decimals_empty", {"decimals": []}),
    (
        "echo_decimals_mixed",
        {"decimals": [D("1.50"), D("-0"), D("1E+2"), D("NaN"), D("-Infinity"), D("sNaN")]},
    ),
    # datetimes (ListOf(DateTime))
    ("echo_datetimes_empty", {"datetimes": []}),
    (
        "echo_datetimes_mixed",
        {
            "datetimes": [
                datetime.datetime(2012, 1, 23, 12, 34, 56, 54321, UTC),
                datetime.datetime(1, 1, 1, 0, 0, 0, 0, tz(14)),
                datetime.datetime(9999, 12, 31, 23, 59, 59, 999999, tz(-5, -30)),
            ]
        },
    ),
    # blobs (ListOf(String))
    ("echo_blobs_empty", {"blobs": []}),
    ("echo_blobs_mixed", {"blobs": [b"", b"\x00" * 10]}),
    # all at once / none at all
    (
        "echo_all_arguments",
        {
            "integer": -(2 ** 63) - 1,
            "bytes": b"\x00\xff\x01",
            "text": "h\u00e9llo \U0001d11e",
            "float": -0.0,
            "boolean": False,
            "decimal": D("-1.50E-7"),
            "datetime": datetime.datetime(2012, 1, 23, 12, 34, 56, 54321, tz(-5, -30)),
            "list": [0, -1, 10 ** 100],
            "texts": ["", "\u00fc"],
            "items": [{"name": "\u00fc", "value": -(10 ** 30)}],
            "path": FilePath("/tmp/\u00fc x"),
            "floats": [float("nan"), float("-inf")],
            "decimals": [D("sNaN"), D("0.000")],
            "datetimes": [datetime.datetime(1, 1, 1, 0, 0, 0, 0, UTC)],
            "blobs": [b"", b"\x00" * 10],
        },
    ),
    ("echo_no_arguments", {}),
]


# ---------------------------------------------------------------------------
# The other checks


@defer.inlineCallbacks
def sum_basic(ctx):
    proto = yield ctx.connect()
    r = yield proto.callRemote(schema.Sum, a=13, b=81)
    if r != {"total": 94}:
        raise CheckFailed("Sum(13, 81) = %r, want {'total': 94}" % (r,))


@defer.inlineCallbacks
def sum_bigints(ctx):
    proto = yield ctx.connect()
    cases = [
        (2 ** 63 - 1, 1),
        (-(2 ** 63), -1),
        (10 ** 100, 10 ** 100),
        (-(10 ** 100), 1),
        (2 ** 64, -(2 ** 64)),
    ]
    for a, b in cases:
        r = yield proto.callRemote(schema.Sum, a=a, b=b)
        if r.get("total") != a + b:
            raise CheckFailed("Sum(%d, %d) = %r, want %d" % (a, b, r, a + b))


@defer.inlineCallbacks
def sum_pipelined_5000(ctx):
    proto = yield ctx.connect()
    ds = [proto.callRemote(schema.Sum, a=i, b=2 * i) for i in range(5000)]
    results = yield defer.DeferredList(ds, consumeErrors=True)
    bad = []
    for i, (ok, r) in enumerate(results):
        if not ok and r.check(defer.CancelledError):
            raise defer.CancelledError()  # the check's timeout
        if not ok:
            bad.append("#%d failed: %s" % (i, describe(r)))
        elif r != {"total": 3 * i}:
            bad.append("#%d: got %r, want total=%d" % (i, r, 3 * i))
    if bad:
        raise CheckFailed("%d of 5000 wrong; first: %s" % (len(bad), "; ".join(bad[:3])))


@defer.inlineCallbacks
def slow_out_of_order(ctx):
    proto = yield ctx.connect()
    order = []

    def record(result, label):
        order.append(label)
        return result

    d1 = proto.callRemote(schema.Slow, delay=0.3).addCallback(record, "slow")
    d2 = proto.callRemote(schema.Slow, delay=0.0).addCallback(record, "fast")
    r1, r2 = yield defer.gatherResults([d1, d2], consumeErrors=True)
    if r1 != {"slept": 0.3} or r2 != {"slept": 0.0}:
        raise CheckFailed("answers %r, %r; want slept=0.3, slept=0.0" % (r1, r2))
    if order != ["fast", "slow"]:
        raise CheckFailed("answers arrived in order %r; want the 0.0 one first" % (order,))


@defer.inlineCallbacks
def divide_ok(ctx):
    proto = yield ctx.connect()
    r = yield proto.callRemote(schema.Divide, numerator=1, denominator=4)
    if r != {"result": 0.25}:
        raise CheckFailed("Divide(1, 4) = %r, want 0.25" % (r,))


@defer.inlineCallbacks
def divide_zero(ctx):
    proto = yield ctx.connect()
    f = (yield expectFailure(proto.callRemote(schema.Divide, numerator=1, denominator=0))).failure
    if not f.check(ZeroDivisionError):
        raise CheckFailed("want ZeroDivisionError (code ZERO_DIVISION), got %s" % describe(f))
    ctx.note("description %r" % (f.value.args[0] if f.value.args else None,))


@defer.inlineCallbacks
def fail_declared(ctx):
    proto = yield ctx.connect()
    f = (yield expectFailure(proto.callRemote(schema.Fail, kind="declared"))).failure
    if not f.check(schema.DeclaredFailure):
        raise CheckFailed("want DeclaredFailure (code DECLARED_FAILURE), got %s" % describe(f))
    if f.value.args != ("declared: declared",):
        raise CheckFailed("description %r, want 'declared: declared'" % (f.value.args,))
    yield sumStillWorks(proto)


@defer.inlineCallbacks
def fail_fatal(ctx):
    proto = yield ctx.connect()
    f = (yield expectFailure(proto.callRemote(schema.Fail, kind="fatal"))).failure
    if not f.check(schema.FatalFailure):
        raise CheckFailed("want FatalFailure (code FATAL_FAILURE), got %s" % describe(f))
    if f.value.args != ("fatal",):
        raise CheckFailed("description %r, want 'fatal'" % (f.value.args,))
    yield expectClosedByServer(proto)


@defer.inlineCallbacks
def fail_undeclared(ctx):
    proto = yield ctx.connect()
    f = (yield expectFailure(proto.callRemote(schema.Fail, kind="undeclared"))).failure
    if not f.check(amp.UnknownRemoteError):
        raise CheckFailed("want UnknownRemoteError (code UNKNOWN), got %s" % describe(f))
    raw = proto.errorBoxes[-1] if proto.errorBoxes else {}
    if raw.get(b"_error_code") != amp.UNKNOWN_ERROR_CODE:
        raise CheckFailed("error code on the wire %r, want b'UNKNOWN'" % (raw.get(b"_error_code"),))
    ctx.note("description %r" % (f.value.description,))
    yield expectClosedByServer(proto)


@defer.inlineCallbacks
def unknown_command(ctx):
    proto = yield ctx.connect()
    f = (yield expectFailure(proto.callRemoteString(b"NoSuchCommand"))).failure
    if not f.check(amp.UnhandledCommand):
        raise CheckFailed("want UnhandledCommand (code UNHANDLED), got %s" % describe(f))
    if not f.value.args or f.value.args[0] != amp.UNHANDLED_ERROR_CODE:
        raise CheckFailed("error code %r, want b'UNHANDLED'" % (f.value.args[:1],))
    ctx.note("description %r" % (f.value.args[1] if len(f.value.args) > 1 else None,))
    yield sumStillWorks(proto)


@defer.inlineCallbacks
def notify_no_answer(ctx):
    proto = yield ctx.connect()
    want = ["n%d" % i for i in range(100)]
    for message in want:
        r = proto.callRemote(schema.Notify, message=message)
        if r is not None:
            raise CheckFailed("callRemote(Notify) returned %r, want None" % (r,))
    r = yield proto.callRemote(schema.GetNotes)
    if r.get("notes") != want:
        raise CheckFailed("GetNotes returned %s, want n0..n99 in order" % short(r))


@defer.inlineCallbacks
def bad_argument(ctx):
    proto = yield ctx.connect()
    f = (yield expectFailure(proto.callRemoteString(b"Sum", a=b"notanumber", b=b"1"))).failure
    if f.check(amp.RemoteAmpError):
        code = f.value.errorCode
        desc = f.value.description
    elif f.check(amp.UnhandledCommand):
        code, desc = (f.value.args + (None, None))[:2]
    else:
        raise CheckFailed("no error answer: %s" % describe(f))
    yield withTimeout(proto.whenLost(), 0.5)
    ctx.note(
        "error code %r, description %r, connection closed by server: %s"
        % (code, desc, "yes" if proto.lost else "no (within 0.5s)")
    )


CHECKS = [(name, (lambda kw: lambda ctx: echoCheck(ctx, kw))(kw), DEFAULT_TIMEOUT) for name, kw in ECHO_CASES]
CHECKS += [
    ("sum_basic", sum_basic, DEFAULT_TIMEOUT),
    ("sum_bigints", sum_bigints, DEFAULT_TIMEOUT),
    ("sum_pipelined_5000", sum_pipelined_5000, 30.0),
    ("slow_out_of_order", slow_out_of_order, DEFAULT_TIMEOUT),
    ("divide_ok", divide_ok, DEFAULT_TIMEOUT),
    ("divide_zero", divide_zero, DEFAULT_TIMEOUT),
    ("fail_declared", fail_declared, DEFAULT_TIMEOUT),
    ("fail_fatal", fail_fatal, DEFAULT_TIMEOUT),
    ("fail_undeclared", fail_undeclared, DEFAULT_TIMEOUT),
    ("unknown_command", unknown_command, DEFAULT_TIMEOUT),
    ("notify_no_answer", notify_no_answer, DEFAULT_TIMEOUT),
    ("bad_argument", bad_argument, DEFAULT_TIMEOUT),
]


# ---------------------------------------------------------------------------
# Runner


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--port", type=int)
    parser.add_argument("--host", default="127.0.0.1")
    harness.addClientArguments(
        parser,
        only_help="comma-separated check names or fnmatch patterns",
        scale_help="multiply every per-check timeout",
        run_help="bound on the whole run, seconds (default %(default)g)",
        list_help="print the check names and exit",
    )
    args = parser.parse_args(argv)

    checks, code = harness.chooseChecks("twisted_client.py", CHECKS, args)
    if checks is None:
        return code
    if args.port is None:
        parser.error("--port is required")
    return harness.runClient(
        "twisted_client.py", checks, args, lambda: Context(args.host, args.port), describe
    )


if __name__ == "__main__":
    sys.exit(main())
