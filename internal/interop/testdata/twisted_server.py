"""
A Twisted AMP server answering every command of schema.py.

Usage:
    /usr/bin/python3 twisted_server.py [--port 0] [--host 127.0.0.1] [--no-stdin]

Listens on host:port (port 0 = an ephemeral port), then prints exactly
"LISTENING <port>" on stdout and flushes.  Runs until stdin reaches EOF
(unless --no-stdin), or until SIGTERM / SIGINT.  All logging goes to stderr.
"""

import argparse
import os
import sys

# Import schema.py and harness.py from next to this script; leave no
# __pycache__ in the tree.
sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from twisted.internet import reactor, task  # noqa: E402
from twisted.internet.protocol import Factory  # noqa: E402
from twisted.protocols import amp  # noqa: E402

import harness  # noqa: E402
import schema  # noqa: E402


class InteropServer(amp.AMP):
    """One instance per connection; Notify messages are per connection."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.notes = []

    @schema.Sum.responder
    def sum(self, a, b):
        return {"total": a + b}

    @schema.Divide.responder
    def divide(self, numerator, denominator):
        # Python's int / int raises ZeroDivisionError -> ZERO_DIVISION.
        return {"result": numerator / denominator}

    @schema.Echo.responder
    def echo(self, **kw):
        # Absent optional arguments arrive as None; None is not serialized
        # for optional response values, so absent stays absent.
        return kw

    @schema.Fail.responder
    def fail(self, kind):
        if kind == "declared":
            raise schema.DeclaredFailure("declared: " + kind)
        if kind == "fatal":
            raise schema.FatalFailure("fatal")
        if kind == "undeclared":
            raise ValueError("undeclared")
        return {}

    @schema.Notify.responder
    def notify(self, message):
        self.notes.append(message)
        return {}

    @schema.GetNotes.responder
    def getNotes(self):
        return {"notes": list(self.notes)}

    @schema.Slow.responder
    def slow(self, delay):
        return task.deferLater(reactor, delay, lambda: {"slept": delay})


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument(
        "--no-stdin",
        action="store_true",
        help="do not stop at stdin EOF (run until SIGTERM)",
    )
    args = parser.parse_args(argv)

    # Warnings and errors only: log.err of an undeclared responder error,
    # unhandled errors in Deferreds, protocol errors.
    harness.beginLogging()
    return harness.serve(
        "twisted_server.py",
        args.host,
        args.port,
        Factory.forProtocol(InteropServer),
        watchStdin=not args.no_stdin,
    )


if __name__ == "__main__":
    sys.exit(main())
