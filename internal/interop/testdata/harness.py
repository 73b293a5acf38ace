"""
Code shared by the Twisted interop scripts in this directory.

Client side (twisted_client.py, twisted_tls.py client): a check is a
(name, func, timeout) tuple; func(ctx) returns a Deferred (or a value) and
raises CheckFailed when an expectation is not met.  chooseChecks applies
--only and --list; runClient runs the checks one at a time under the
reactor, each bounded by its timeout and the whole run by --run-timeout,
printing "PASS <name>" / "FAIL <name>: <detail>" / "INFO <name>: ..." lines
and a final "SUMMARY <passed> passed, <failed> failed".

Server side (twisted_server.py, twisted_tls.py server): serve listens,
prints "LISTENING <port>" and runs the reactor until stdin EOF.
"""

import fnmatch
import os
import sys
import threading
import time

from twisted.internet import defer, reactor
from twisted.internet.endpoints import (
    HostnameEndpoint,
    TCP4ServerEndpoint,
    TCP6ServerEndpoint,
    connectProtocol,
)
from twisted.logger import (
    FilteringLogObserver,
    LogLevel,
    LogLevelFilterPredicate,
    globalLogBeginner,
    textFileLogObserver,
)

RUN_TIMEOUT = 120.0


class CheckFailed(Exception):
    """A check's expectation was not met; the message is the detail."""


class Context:
    """
    Per-check state: the connections it opened (aborted afterwards) and its
    INFO notes.  Subclasses set protocolClass, an AMP protocol with a "lost"
    attribute set in connectionLost.
    """

    protocolClass = None
    connectTimeout = 5.0

    def __init__(self, host, port):
        self.host = host
        self.port = port
        self.protocols = []
        self.info = []

    def connect(self):
        endpoint = HostnameEndpoint(reactor, self.host, self.port, timeout=self.connectTimeout)
        proto = self.protocolClass()
        self.protocols.append(proto)
        return connectProtocol(endpoint, proto)

    def note(self, text):
        self.info.append(text)

    def close(self):
        for proto in self.protocols:
            if proto.transport is not None and not proto.lost:
                proto.transport.abortConnection()


def sleep(seconds):
    d = defer.Deferred()
    reactor.callLater(seconds, d.callback, None)
    return d


def oneLine(text, limit=600):
    text = " | ".join(line.strip() for line in str(text).splitlines() if line.strip())
    if len(text) > limit:
        text = text[:limit] + "..."
    return text


def emit(line):
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def beginLogging():
    """Send Twisted's warnings and errors (only) to stderr."""
    globalLogBeginner.beginLoggingTo(
        [
            FilteringLogObserver(
                textFileLogObserver(sys.stderr),
                [LogLevelFilterPredicate(defaultLogLevel=LogLevel.warn)],
            )
        ],
        redirectStandardIO=False,
    )


@defer.inlineCallbacks
def runChecks(checks, makeContext, describe, scale, runTimeout=RUN_TIMEOUT):
    """
    Run checks one at a time, each with a fresh makeContext() (closed
    afterwards); print their results and the SUMMARY line.  Fires with the
    exit code: 0 if all passed, 1 otherwise.  describe(exception) gives the
    detail of an unexpected error.
    """
    deadline = time.monotonic() + runTimeout
    passed = failed = 0
    for name, func, timeout in checks:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            emit("FAIL %s: not run: whole-run timeout of %gs exceeded" % (name, runTimeout))
            failed += 1
            continue
        limit = min(timeout * scale, remaining)
        ctx = makeContext()
        d = defer.maybeDeferred(func, ctx)
        timedOut = []

        def onTimeout(d=d, timedOut=timedOut):
            timedOut.append(True)
            d.cancel()

        timer = reactor.callLater(limit, onTimeout)
        try:
            yield d
        except CheckFailed as e:
            detail = str(e)
        except Exception as e:
            detail = describe(e)
        else:
            detail = None
        if timer.active():
            timer.cancel()
        if timedOut:
            # Whatever the cancellation turned into, the cause is the timeout.
            detail = "timed out after %.3gs" % limit
        ctx.close()
        for text in ctx.info:
            emit("INFO %s: %s" % (name, oneLine(text)))
        if detail is None:
            emit("PASS %s" % name)
            passed += 1
        else:
            emit("FAIL %s: %s" % (name, oneLine(detail)))
            failed += 1
        # Let aborted connections go before the next check.
        yield sleep(0)
    emit("SUMMARY %d passed, %d failed" % (passed, failed))
    defer.returnValue(1 if failed else 0)


def selectChecks(checks, only):
    """
    The checks whose names match the comma-separated names or fnmatch
    patterns in only (all of them if only is empty), and the patterns that
    match none.
    """
    if not only:
        return list(checks), []
    patterns = [p.strip() for p in only.split(",") if p.strip()]
    unmatched = [p for p in patterns if not any(fnmatch.fnmatchcase(n, p) for n, _, _ in checks)]
    chosen = [c for c in checks if any(fnmatch.fnmatchcase(c[0], p) for p in patterns)]
    return chosen, unmatched


def addClientArguments(parser, only_help, scale_help, run_help, list_help):
    """Add --only, --timeout-scale, --run-timeout and --list to parser."""
    parser.add_argument("--only", default="", help=only_help)
    parser.add_argument("--timeout-scale", type=float, default=1.0, help=scale_help)
    parser.add_argument("--run-timeout", type=float, default=RUN_TIMEOUT, help=run_help)
    parser.add_argument("--list", action="store_true", help=list_help)


def chooseChecks(prog, checks, args):
    """
    Apply args.only and args.list.  Returns (chosen checks, None) to go on,
    or (None, exit code) when done: 2 if a pattern matched no check (said on
    stderr), 0 after printing the names for --list.
    """
    chosen, unmatched = selectChecks(checks, args.only)
    if unmatched:
        sys.stderr.write("%s: --only: no check matches %s\n" % (prog, ", ".join(unmatched)))
        return None, 2
    if args.list:
        for name, _, _ in chosen:
            print(name)
        return None, 0
    return chosen, None


def runClient(prog, checks, args, makeContext, describe):
    """
    Begin logging, run checks (see runChecks) with args.timeout_scale and
    args.run_timeout under the reactor, and return the exit code (3 if the
    runner itself crashed).
    """
    beginLogging()
    result = {"code": 1}

    def done(code):
        result["code"] = code

    def crashed(failure):
        sys.stderr.write("%s: internal error:\n%s\n" % (prog, failure.getTraceback()))
        result["code"] = 3

    def start():
        d = runChecks(checks, makeContext, describe, args.timeout_scale, args.run_timeout)
        d.addCallbacks(done, crashed)
        d.addBoth(lambda _: reactor.stop())

    reactor.callWhenRunning(start)
    reactor.run()
    return result["code"]


def _watchStdin():
    """Stop the reactor when stdin reaches EOF (or fails)."""
    try:
        while True:
            if not os.read(0, 65536):
                break
    except OSError:
        pass
    reactor.callFromThread(_stop)


def _stop():
    if reactor.running:
        reactor.stop()


def serve(prog, host, port, factory, watchStdin=True):
    """
    Listen on host:port (port 0 = an ephemeral port) with factory, print
    "LISTENING <port>" and flush, and run the reactor until stdin EOF (if
    watchStdin) or SIGTERM / SIGINT.  Returns the exit code: 1 if it could
    not listen (said on stderr), else 0.
    """
    if ":" in host:
        endpoint = TCP6ServerEndpoint(reactor, port, interface=host)
    else:
        endpoint = TCP4ServerEndpoint(reactor, port, interface=host)
    result = {"code": 0}

    def listening(p):
        sys.stdout.write("LISTENING %d\n" % (p.getHost().port,))
        sys.stdout.flush()

    def listenFailed(failure):
        sys.stderr.write("%s: cannot listen: %s\n" % (prog, failure.value))
        sys.stderr.flush()
        result["code"] = 1
        _stop()

    d = endpoint.listen(factory)
    d.addCallbacks(listening, listenFailed)
    if watchStdin:
        threading.Thread(target=_watchStdin, name="stdin-watcher", daemon=True).start()
    reactor.run()
    return result["code"]
