"""
The AMP command set used by the ampmux interop tests (Twisted side).

Both twisted_server.py and twisted_client.py import this module; the Go side
defines the same commands.  Keep the two in step: command names, argument
names, argument types, optionality, and error codes are all on the wire.

Run with a Python that has Twisted (the system /usr/bin/python3 here).
"""

from twisted.protocols import amp


class DeclaredFailure(Exception):
    """Raised by the Fail responder for kind "declared" (code DECLARED_FAILURE)."""


class FatalFailure(Exception):
    """Raised by the Fail responder for kind "fatal" (code FATAL_FAILURE)."""


class Sum(amp.Command):
    arguments = [(b"a", amp.Integer()), (b"b", amp.Integer())]
    response = [(b"total", amp.Integer())]


class Divide(amp.Command):
    arguments = [(b"numerator", amp.Integer()), (b"denominator", amp.Integer())]
    response = [(b"result", amp.Float())]
    errors = {ZeroDivisionError: b"ZERO_DIVISION"}


def _echoSchema():
    """
    The Echo argument list; the response list is the same (fresh instances,
    all optional).
    """
    return [
        (b"integer", amp.Integer(optional=True)),
        (b"bytes", amp.String(optional=True)),
        (b"text", amp.Unicode(optional=True)),
        (b"float", amp.Float(optional=True)),
        (b"boolean", amp.Boolean(optional=True)),
        (b"decimal", amp.Decimal(optional=True)),
        (b"datetime", amp.DateTime(optional=True)),
        (b"list", amp.ListOf(amp.Integer(), optional=True)),
        (b"texts", amp.ListOf(amp.Unicode(), optional=True)),
        (
            b"items",
            amp.AmpList([(b"name", amp.Unicode()), (b"value", amp.Integer())], optional=True),
        ),
        (b"path", amp.Path(optional=True)),
        (b"floats", amp.ListOf(amp.Float(), optional=True)),
        (b"decimals", amp.ListOf(amp.Decimal(), optional=True)),
        (b"datetimes", amp.ListOf(amp.DateTime(), optional=True)),
        (b"blobs", amp.ListOf(amp.String(), optional=True)),
    ]


# Wire names of every Echo argument, in schema order.
ECHO_NAMES = [name for name, _ in _echoSchema()]


class Echo(amp.Command):
    """
    Every argument is optional; the answer carries exactly the arguments that
    were sent, unchanged (an absent argument stays absent).
    """

    arguments = _echoSchema()
    response = _echoSchema()


class Fail(amp.Command):
    """
    kind "declared" -> DeclaredFailure("declared: declared"), answered as
    DECLARED_FAILURE, connection stays up; kind "fatal" -> FatalFailure("fatal"),
    answered as FATAL_FAILURE, then the server closes the connection; kind
    "undeclared" -> ValueError("undeclared"), answered as UNKNOWN
    "Unknown Error", then the server closes the connection.  Any other kind
    succeeds with an empty answer.
    """

    arguments = [(b"kind", amp.Unicode())]
    response = []
    errors = {DeclaredFailure: b"DECLARED_FAILURE"}
    fatalErrors = {FatalFailure: b"FATAL_FAILURE"}


class Notify(amp.Command):
    """Sent without _ask; never answered.  The server records the message."""

    arguments = [(b"message", amp.Unicode())]
    response = []
    requiresAnswer = False


class GetNotes(amp.Command):
    """The Notify messages received on this connection so far, in order."""

    arguments = []
    response = [(b"notes", amp.ListOf(amp.Unicode()))]


class Slow(amp.Command):
    """Answered after `delay` seconds, so answers can arrive out of order."""

    arguments = [(b"delay", amp.Float())]
    response = [(b"slept", amp.Float())]


ALL_COMMANDS = [Sum, Divide, Echo, Fail, Notify, GetNotes, Slow]
