"""
Generate golden AMP wire vectors with Twisted's own implementation.

Usage (from anywhere; needs a Python with Twisted, here /usr/bin/python3):

    /usr/bin/python3 amp/box/testdata/gen_golden.py           # (re)write golden/
    /usr/bin/python3 amp/box/testdata/gen_golden.py --check   # verify golden/ is current

Writes golden/<name>.amp (raw bytes, exactly what Twisted puts on the wire),
golden/bad/<name>.amp (byte streams Twisted rejects or that end mid-box), and
golden/manifest.json:

    {
      "format": ...,              # a sentence describing this layout
      "twisted_version": "22.4.0",
      "files": [                  # well-formed streams
        {"name": "sum_call.amp", "description": "...",
         "boxes": [ [[key_b64, value_b64], ...], ... ]}   # boxes in order,
      ],                                                  # pairs in wire order
      "bad": [                    # streams under bad/
        {"name": "bad/truncated_in_key.amp", "description": "...",
         "parse_string": {"boxes": [...]}                 # what amp.parseString
                      or {"exception": {"type": "...", "message": "..."}},
         "box_protocol": {"boxes": [...], "exception": {...} (if raised),
                          "closes_connection": bool, "buffered_bytes": int,
                          "stop_reason": "ConnectionDone" | "TooLong"}}
      ]
    }

All base64 is standard (RFC 4648, with padding).  Good vectors are built with
amp.AmpBox(...).serialize() and Command.makeArguments / makeResponse; the
request/answer/error vectors are also cross-checked against the bytes a live
twisted.protocols.amp.AMP writes to a StringTransport, and every good file is
checked to parse back (amp.parseString) to the same boxes.
"""

import argparse
import base64
import datetime
import decimal
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
GOLDEN = os.path.join(HERE, "golden")
INTEROP = os.path.normpath(os.path.join(HERE, "..", "..", "..", "internal", "interop", "testdata"))
# Leave no __pycache__ in the source tree.
sys.dont_write_bytecode = True
sys.path.insert(0, INTEROP)

import twisted  # noqa: E402
from twisted.internet.testing import StringTransport  # noqa: E402
from twisted.protocols import amp  # noqa: E402
from twisted.python.failure import Failure  # noqa: E402
from twisted.python.filepath import FilePath  # noqa: E402
from twisted.internet.error import ConnectionDone  # noqa: E402
from twisted.logger import globalLogBeginner  # noqa: E402

import schema  # noqa: E402  (internal/interop/testdata/schema.py)
import twisted_server  # noqa: E402  (its InteropServer answers the live cross-checks)


# ---------------------------------------------------------------------------
# helpers


def b64(data):
    return base64.b64encode(data).decode("ascii")


def wirePairs(data):
    """
    Split a well-formed stream into boxes of (key, value) pairs in wire
    order, independently of Twisted (so the manifest records the bytes as
    they are, not as a dict would order them).
    """
    boxes, box, i = [], [], 0
    while i < len(data):
        n = int.from_bytes(data[i : i + 2], "big")
        i += 2
        if n == 0:
            boxes.append(box)
            box = []
            continue
        key = data[i : i + n]
        i += n
        m = int.from_bytes(data[i : i + 2], "big")
        i += 2
        value = data[i : i + m]
        i += m
        assert len(key) == n and len(value) == m, "truncated good vector"
        box.append((key, value))
    assert not box and i == len(data), "good vector does not end on a box boundary"
    return boxes


def encodeBoxes(pairBoxes):
    return [[[b64(k), b64(v)] for k, v in box] for box in pairBoxes]


def encodeParsed(boxes):
    """Boxes returned by Twisted (dicts), as pairs sorted as Twisted would send them."""
    return [[[b64(k), b64(v)] for k, v in sorted(box.items())] for box in boxes]


def exceptionInfo(e):
    return {"type": type(e).__name__, "message": str(e)}


def liveExchange(request):
    """
    Feed `request` bytes to a live server AMP (twisted_server.InteropServer)
    on a StringTransport; return (bytes written back, transport disconnecting).
    """
    transport = StringTransport()
    proto = twisted_server.InteropServer()
    proto.makeConnection(transport)
    proto.dataReceived(request)
    return transport.value(), transport.disconnecting


def liveCall(command, **kw):
    """Bytes a live client AMP writes for callRemote(command, **kw)."""
    transport = StringTransport()
    proto = amp.AMP()
    proto.makeConnection(transport)
    d = proto.callRemote(command, **kw)
    if d is not None:
        d.addErrback(lambda f: None)  # never answered here
    return transport.value()


def callBox(command, kw, tag=b"1"):
    """A command box as AMP._sendBoxCommand builds it."""
    proto = amp.AMP()
    box = command.makeArguments(kw, proto)
    box[amp.COMMAND] = command.commandName
    if command.requiresAnswer:
        box[amp.ASK] = tag
    return box


def answerBox(command, kw, tag=b"1"):
    proto = amp.AMP()
    box = command.makeResponse(kw, proto)
    box[amp.ANSWER] = tag
    return box


def errorBox(tag, code, description):
    return amp.AmpBox(
        {amp.ERROR: tag, amp.ERROR_CODE: code, amp.ERROR_DESCRIPTION: description}
    )


# ---------------------------------------------------------------------------
# good vectors

UTC = datetime.timezone.utc
D = decimal.Decimal

ECHO_ALL = {
    "integer": -(2 ** 63) - 1,
    "bytes": b"\x00\xff\x01",
    "text": "h\u00e9llo \U0001d11e",
    "float": -0.0,
    "boolean": False,
    "decimal": D("-1.50E-7"),
    "datetime": datetime.datetime(
        2012, 1, 23, 12, 34, 56, 54321, datetime.timezone(datetime.timedelta(hours=-5, minutes=-30))
    ),
    "list": [0, -1, 10 ** 100],
    "texts": ["", "\u00fc"],
    "items": [{"name": "a", "value": 1}, {"name": "\u00fc", "value": -(10 ** 30)}],
    "path": FilePath("/tmp/\u00fc x"),
    "floats": [float("nan"), float("inf"), float("-inf"), 1e-05, 5e-324],
    "decimals": [D("sNaN"), D("-NaN"), D("0.000"), D("1E+2"), D("-Infinity")],
    "datetimes": [
        datetime.datetime(1, 1, 1, 0, 0, 0, 0, UTC),
        datetime.datetime(9999, 12, 31, 23, 59, 59, 999999, datetime.timezone(datetime.timedelta(hours=14))),
    ],
    "blobs": [b"", b"\x00" * 10],
}

ITEMS = [{"name": "a", "value": 1}, {"name": "\u00fc", "value": -(10 ** 30)}, {"name": "", "value": 0}]


def goodCases():
    """(name, description, [AmpBox, ...], live bytes or None)."""
    cases = []

    def add(name, description, boxes, live=None):
        cases.append((name, description, boxes, live))

    add(
        "empty_value",
        "One box with one key whose value is empty (value length 0x0000).",
        [amp.AmpBox({b"key": b""})],
    )

    sumCall = callBox(schema.Sum, {"a": 13, "b": 81})
    add(
        "sum_call",
        "Sum(a=13, b=81) exactly as a Twisted client sends it: the first call on "
        "a connection gets _ask '1' (tags are lowercase hex counters).",
        [sumCall],
        liveCall(schema.Sum, a=13, b=81),
    )

    sumAnswer = answerBox(schema.Sum, {"total": 94})
    liveAnswer, _ = liveExchange(sumCall.serialize())
    add("sum_answer", "The answer to sum_call: _answer '1', total '94'.", [sumAnswer], liveAnswer)

    divCall = callBox(schema.Divide, {"numerator": 1, "denominator": 0})
    live, closed = liveExchange(divCall.serialize())
    assert not closed
    add(
        "error_box",
        "The error box a Twisted server sends for Divide(1, 0): declared "
        "ZeroDivisionError -> _error '1', _error_code 'ZERO_DIVISION', "
        "_error_description = str(exception) 'division by zero'. The "
        "connection stays open.",
        [errorBox(b"1", b"ZERO_DIVISION", b"division by zero")],
        live,
    )

    live, closed = liveExchange(callBox(schema.Fail, {"kind": "fatal"}).serialize())
    assert closed
    add(
        "error_fatal",
        "Fail(kind='fatal'): a fatalErrors entry -> FATAL_FAILURE 'fatal'; the "
        "box is identical to a non-fatal error box, but Twisted closes the "
        "connection right after writing it.",
        [errorBox(b"1", b"FATAL_FAILURE", b"fatal")],
        live,
    )

    live, closed = liveExchange(callBox(schema.Fail, {"kind": "undeclared"}).serialize())
    assert closed
    add(
        "error_unknown",
        "Fail(kind='undeclared'): the responder raised an exception not in "
        "errors/fatalErrors -> _error_code 'UNKNOWN', _error_description "
        "'Unknown Error' (the real message is only logged), then Twisted closes "
        "the connection.",
        [errorBox(b"1", b"UNKNOWN", b"Unknown Error")],
        live,
    )

    unknownCall = amp.AmpBox({amp.COMMAND: b"NoSuchCommand", amp.ASK: b"1"})
    live, closed = liveExchange(unknownCall.serialize())
    assert not closed
    add(
        "error_unhandled",
        "Answer to an unknown command b'NoSuchCommand': _error_code 'UNHANDLED', "
        "_error_description \"Unhandled Command: b'NoSuchCommand'\" (note the "
        "Python bytes repr). The connection stays open.",
        [errorBox(b"1", b"UNHANDLED", b"Unhandled Command: b'NoSuchCommand'")],
        live,
    )

    add(
        "notify_call",
        "Notify(message='n0'), a requiresAnswer=False command: _command and the "
        "arguments, no _ask key.",
        [callBox(schema.Notify, {"message": "n0"})],
        liveCall(schema.Notify, message="n0"),
    )

    add(
        "key_255",
        "A box whose only key is 255 bytes long (the maximum key length).",
        [amp.AmpBox({b"k" * 255: b"v"})],
    )

    add(
        "value_65535",
        "A box with a 65535-byte value (the maximum), bytes i % 256.",
        [amp.AmpBox({b"v": bytes(i % 256 for i in range(65535))})],
    )

    add(
        "key_order",
        "Keys b'B', b'a', b'_ask', b'\\x01', b'\\xff', b'aa', b'b': Twisted "
        "writes keys sorted as raw bytes (not by length, not by text): "
        "\\x01, B, _ask, a, aa, b, \\xff.",
        [
            amp.AmpBox(
                {
                    b"B": b"upper",
                    b"a": b"lower",
                    b"_ask": b"ask",
                    b"\x01": b"one",
                    b"\xff": b"ff",
                    b"aa": b"double",
                    b"b": b"bee",
                }
            )
        ],
    )

    add(
        "binary_values",
        "Values containing NUL bytes, 0x00 0x00 sequences (which look like a "
        "box terminator) and high bytes, and a value of length 0x0100.",
        [
            amp.AmpBox(
                {
                    b"nul": b"\x00",
                    b"nulnul": b"\x00\x00",
                    b"high": b"\x80\xfe\xff",
                    b"mixed": b"a\x00b\xffc\x00\x00d",
                    b"len256": bytes(range(256)),
                }
            )
        ],
    )

    add(
        "three_boxes",
        "Three boxes back to back in one stream (a call, an answer, an error).",
        [
            callBox(schema.Sum, {"a": 1, "b": 2}, tag=b"a"),
            answerBox(schema.Sum, {"total": 3}, tag=b"a"),
            errorBox(b"b", b"UNKNOWN", b"Unknown Error"),
        ],
    )

    echoCall = callBox(schema.Echo, ECHO_ALL)
    add(
        "echo_call_all",
        "Echo with every argument type set, via Echo.makeArguments plus "
        "_command/_ask as _sendBoxCommand adds them. Shows Integer, String, "
        "Unicode, Float (repr: '-0.0', 'nan', 'inf', '-inf', '1e-05', "
        "'5e-324'), Boolean ('False'), Decimal (str: 'sNaN', '-NaN', '0.000', "
        "'1E+2'), DateTime (32 chars, '+14:00'; UTC as '-00:00'), "
        "ListOf (16-bit length-prefixed elements), AmpList (nested "
        "serialized boxes) and Path.",
        [echoCall],
        liveCall(schema.Echo, **ECHO_ALL),
    )

    liveEchoAnswer, _ = liveExchange(echoCall.serialize())
    add(
        "echo_answer_all",
        "The answer a Twisted server sends to echo_call_all (Echo.makeResponse "
        "+ _answer '1'): byte-identical values.",
        [answerBox(schema.Echo, ECHO_ALL)],
        liveEchoAnswer,
    )

    add(
        "amplist_argument",
        "Echo(items=[{name 'a', value 1}, {name 'ü', value -10**30}, {name '', "
        "value 0}]): an AmpList value is the concatenation of complete "
        "serialized boxes (each with its 0x0000 terminator), keys sorted.",
        [callBox(schema.Echo, {"items": ITEMS})],
        liveCall(schema.Echo, items=ITEMS),
    )

    add(
        "empty_amplist_argument",
        "Echo(items=[], texts=[]): empty AmpList and empty ListOf are present "
        "keys with empty values (unlike an absent optional argument).",
        [callBox(schema.Echo, {"items": [], "texts": []})],
        liveCall(schema.Echo, items=[], texts=[]),
    )

    return cases


# ---------------------------------------------------------------------------
# bad vectors

ONE = b"\x00\x01a\x00\x01b\x00\x00"  # a complete box {a: b}


def badCases():
    """(name, description, bytes)."""
    return [
        (
            "truncated_in_key_length",
            "A complete box {a: b}, then one byte of the next key length. "
            "Twisted waits for more data: the partial box is silently dropped.",
            ONE + b"\x00",
        ),
        (
            "truncated_in_value_length",
            "A complete box, then key 'k' and one byte of its value length.",
            ONE + b"\x00\x01k\x00",
        ),
        (
            "truncated_in_key",
            "A complete box, then a key length of 5 followed by only 2 key bytes.",
            ONE + b"\x00\x05ke",
        ),
        (
            "truncated_in_value",
            "A complete box, then key 'k' with value length 5 and only 2 value bytes.",
            ONE + b"\x00\x01k\x00\x05va",
        ),
        (
            "truncated_before_terminator",
            "A complete box, then a complete key/value pair with no 0x0000 terminator.",
            ONE + b"\x00\x01k\x00\x01v",
        ),
        (
            "truncated_in_terminator",
            "A complete box, then a pair and a single 0x00 byte of the terminator.",
            ONE + b"\x00\x01k\x00\x01v\x00",
        ),
        (
            "only_truncated",
            "Nothing but a partial box (key and half a value); no complete box.",
            b"\x00\x03key\x00\x04va",
        ),
        (
            "key_length_256",
            "A key length prefix of 0x0100 (256 > 255) at the start. A live "
            "BinaryBoxProtocol closes the connection (lengthLimitExceeded) and "
            "reports TooLong; amp.parseString crashes with AttributeError "
            "because its fake transport has no loseConnection.",
            b"\x01\x00" + b"k" * 256 + b"\x00\x01v\x00\x00",
        ),
        (
            "key_length_256_after_box",
            "A complete box, then a key length of 256. The live protocol delivers "
            "the first box, then closes; amp.parseString raises and returns "
            "nothing, not even the first box.",
            ONE + b"\x01\x00" + b"k" * 256 + b"\x00\x01v\x00\x00",
        ),
        (
            "key_length_65535",
            "A key length prefix of 0xffff followed by nothing: rejected as soon "
            "as the prefix is read, without waiting for the key bytes.",
            b"\xff\xff",
        ),
        (
            "empty_box",
            "0x00 0x00 at the very start: the box parser accepts an empty box "
            "(parseString returns [{}]), but AMP.ampBoxReceived raises "
            "NoEmptyBoxes for it, as it does for ANY box without _answer, _error "
            "or _command (e.g. {a: b}); the exception escapes dataReceived, so a "
            "reactor logs it and drops the connection.",
            b"\x00\x00",
        ),
        (
            "empty_box_then_box",
            "An empty box followed by a complete box: the parser yields both.",
            b"\x00\x00" + ONE,
        ),
        (
            "empty_stream",
            "Zero bytes: no boxes.",
            b"",
        ),
        (
            "duplicate_key",
            "Key 'a' twice in one box (values 'x' then 'y'). Twisted does not "
            "reject it: the last value wins.",
            b"\x00\x01a\x00\x01x\x00\x01a\x00\x01y\x00\x00",
        ),
        (
            "unsorted_keys",
            "Keys out of byte order ('zz' before 'a'). Twisted accepts any order; "
            "only its writer sorts.",
            b"\x00\x02zz\x00\x01x\x00\x01a\x00\x01y\x00\x00",
        ),
    ]


class _Recorder:
    """A box receiver that records boxes and the stop reason."""

    def __init__(self):
        self.boxes = []
        self.stopReason = None

    def startReceivingBoxes(self, sender):
        pass

    def ampBoxReceived(self, box):
        self.boxes.append(box)

    def stopReceivingBoxes(self, reason):
        self.stopReason = reason


def parseStringResult(data):
    try:
        boxes = amp.parseString(data)
    except Exception as e:
        return {"exception": exceptionInfo(e)}
    return {"boxes": encodeParsed(boxes)}


def boxProtocolResult(data):
    """
    What a live BinaryBoxProtocol on a StringTransport does with `data` fed
    in one dataReceived call, then a clean connection close.
    """
    recorder = _Recorder()
    transport = StringTransport()
    proto = amp.BinaryBoxProtocol(recorder)
    proto.makeConnection(transport)
    result = {}
    try:
        proto.dataReceived(data)
    except Exception as e:
        result["exception"] = exceptionInfo(e)
    result["boxes"] = encodeParsed(recorder.boxes)
    result["closes_connection"] = bool(transport.disconnecting)
    result["buffered_bytes"] = len(proto._unprocessed)
    proto.connectionLost(Failure(ConnectionDone()))
    result["stop_reason"] = type(recorder.stopReason.value).__name__
    return result


# ---------------------------------------------------------------------------
# main


def build():
    """Return {relative path: bytes} and the manifest dict."""
    files = {}
    good = []
    for name, description, boxes, live in goodCases():
        data = b"".join(box.serialize() for box in boxes)
        if live is not None and live != data:
            raise AssertionError(
                "%s: serialized boxes differ from a live AMP's bytes:\n%r\n%r" % (name, data, live)
            )
        pairs = wirePairs(data)
        assert pairs == [sorted(box.items()) for box in boxes], name
        assert [dict(p) for p in pairs] == [dict(b) for b in amp.parseString(data)], name
        fname = name + ".amp"
        files[fname] = data
        good.append({"name": fname, "description": description, "boxes": encodeBoxes(pairs)})

    bad = []
    for name, description, data in badCases():
        fname = "bad/" + name + ".amp"
        files[fname] = data
        bad.append(
            {
                "name": fname,
                "description": description,
                "parse_string": parseStringResult(data),
                "box_protocol": boxProtocolResult(data),
            }
        )

    manifest = {
        "format": (
            "files: well-formed streams; boxes = list of boxes in stream order, each a "
            "list of [key, value] pairs (standard base64) in wire order. bad: streams "
            "under bad/; parse_string = what twisted.protocols.amp.parseString returned "
            "({boxes}) or raised ({exception: {type, message}}); box_protocol = what a "
            "live BinaryBoxProtocol did with the bytes in one dataReceived call: boxes "
            "delivered, exception raised, closes_connection (transport.loseConnection "
            "called), buffered_bytes (unparsed tail), stop_reason (exception type given "
            "to stopReceivingBoxes at a clean close)."
        ),
        "generator": "amp/box/testdata/gen_golden.py",
        "twisted_version": twisted.__version__,
        "files": good,
        "bad": bad,
    }
    files["manifest.json"] = (json.dumps(manifest, indent=1, ensure_ascii=True) + "\n").encode("ascii")
    return files


def main(argv=None):
    # The live cross-checks make InteropServer log.err an expected
    # ValueError (Fail kind=undeclared); keep it off the terminal.
    globalLogBeginner.beginLoggingTo([lambda event: None], redirectStandardIO=False)
    parser = argparse.ArgumentParser(description="Generate AMP golden vectors with Twisted.")
    parser.add_argument(
        "--check",
        action="store_true",
        help="do not write; exit 1 if golden/ differs from what Twisted generates",
    )
    parser.add_argument("--out", default=GOLDEN, help="output directory (default: %(default)s)")
    args = parser.parse_args(argv)

    files = build()
    if args.check:
        problems = []
        for rel, data in sorted(files.items()):
            path = os.path.join(args.out, rel)
            try:
                with open(path, "rb") as f:
                    onDisk = f.read()
            except OSError as e:
                problems.append("%s: %s" % (rel, e))
                continue
            if onDisk != data:
                problems.append("%s: differs (%d bytes on disk, %d generated)" % (rel, len(onDisk), len(data)))
        for rel in sorted(_listFiles(args.out)):
            if rel not in files:
                problems.append("%s: not generated by this script" % rel)
        for p in problems:
            print("STALE " + p)
        print("%d files checked, %d problems" % (len(files), len(problems)))
        return 1 if problems else 0

    for rel, data in sorted(files.items()):
        path = os.path.join(args.out, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(data)
    print("wrote %d files under %s" % (len(files), args.out))
    return 0


def _listFiles(root):
    out = []
    for dirpath, _, names in os.walk(root):
        for n in names:
            out.append(os.path.relpath(os.path.join(dirpath, n), root).replace(os.sep, "/"))
    return out


if __name__ == "__main__":
    sys.exit(main())
