"""
Twisted AMP over TLS: StartTLS, ProtocolSwitch and ListProtocols.

Usage:
    /usr/bin/python3 twisted_tls.py server --certs DIR [--port 0] [--host 127.0.0.1]
        [--no-stdin]
    /usr/bin/python3 twisted_tls.py client --certs DIR --port P [--host 127.0.0.1]
        [--only NAME,...] [--timeout-scale 1] [--run-timeout 120] [--list]

DIR holds PEM files: ca.pem; server.pem + server-key.pem; client.pem +
client-key.pem (client CN "client"); intruder.pem + intruder-key.pem (a
client certificate signed by the same CA, CN "intruder").

The wire contract (ampmux implements the same):

  - StartTLS is exactly Twisted's amp.StartTLS (no arguments on the wire).
    The server answers, then starts TLS as the TLS server; the client starts
    TLS as the TLS client once it has read the answer.  A second StartTLS on
    a secured connection is answered with the error code TLS_ERROR.
  - ProtocolSwitch(protocol String) -> (), errors UNKNOWN_PROTOCOL,
    TLS_REQUIRED, FORBIDDEN, UNAVAILABLE; a subclass of
    amp.ProtocolSwitchCommand.  After a successful answer both ends stop
    speaking AMP and the (TLS) connection carries the inner protocol.
  - ListProtocols() -> (protocols ListOf(Unicode)): the names the caller may
    switch to.
  - Sum(a Integer, b Integer) -> (total Integer), plain AMP traffic.
  - Inner protocol "echo": echoes every byte until the peer closes.

server mode: a Twisted AMP server.  Its StartTLS answer secures the
connection with server.pem and requires a client certificate signed by
ca.pem.  ProtocolSwitch checks, in order: unknown name -> UNKNOWN_PROTOCOL;
no StartTLS yet -> TLS_REQUIRED; peer certificate CN not "client" ->
FORBIDDEN; "echo" -> switch.  ListProtocols answers ["echo"] to a secured
connection whose peer CN is "client", [] otherwise.  Prints
"LISTENING <port>" and flushes; runs until stdin EOF (unless --no-stdin) or
SIGTERM / SIGINT.

client mode: a Twisted AMP client that checks a server implementing the
contract (configured like server mode).  Prints "PASS <name>" or
"FAIL <name>: <detail>" per check, "INFO <name>: ..." observations, then
"SUMMARY <p> passed, <f> failed"; exits 0 iff all passed (1 if some failed,
2 on a usage error).  Every check uses its own connection and has a timeout.
"""

import argparse
import os
import random
import sys

# Import harness.py from next to this script; leave no __pycache__ in the tree.
sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from twisted.internet import defer, protocol, reactor, ssl  # noqa: E402
from twisted.protocols import amp  # noqa: E402
from twisted.python.failure import Failure  # noqa: E402

import harness  # noqa: E402
from harness import CheckFailed, beginLogging, sleep  # noqa: E402

DEFAULT_TIMEOUT = 5.0

ALLOWED_CN = "client"
INNER_PROTOCOLS = ("echo",)


# ---------------------------------------------------------------------------
# Commands


class UnknownProtocol(Exception):
    """No inner protocol of that name (UNKNOWN_PROTOCOL)."""


class TLSRequired(Exception):
    """The inner protocol needs a connection secured by StartTLS (TLS_REQUIRED)."""


class Forbidden(Exception):
    """The peer's certificate may not use that inner protocol (FORBIDDEN)."""


class Unavailable(Exception):
    """The inner protocol cannot be started now (UNAVAILABLE)."""


class ProtocolSwitch(amp.ProtocolSwitchCommand):
    commandName = b"ProtocolSwitch"
    arguments = [(b"protocol", amp.String())]
    response = []
    errors = {
        UnknownProtocol: b"UNKNOWN_PROTOCOL",
        TLSRequired: b"TLS_REQUIRED",
        Forbidden: b"FORBIDDEN",
        Unavailable: b"UNAVAILABLE",
    }


class ListProtocols(amp.Command):
    commandName = b"ListProtocols"
    arguments = []
    response = [(b"protocols", amp.ListOf(amp.Unicode()))]


class Sum(amp.Command):
    commandName = b"Sum"
    arguments = [(b"a", amp.Integer()), (b"b", amp.Integer())]
    response = [(b"total", amp.Integer())]


# ---------------------------------------------------------------------------
# Certificates


class Certs:
    def __init__(self, directory):
        def read(name):
            with open(os.path.join(directory, name), "rb") as f:
                return f.read()

        def private(name):
            return ssl.PrivateCertificate.loadPEM(read(name + ".pem") + read(name + "-key.pem"))

        self.ca = ssl.Certificate.loadPEM(read("ca.pem"))
        self.server = private("server")
        self.client = private("client")
        self.intruder = private("intruder")


def commonName(cert):
    """The subject CN of a twisted.internet.ssl.Certificate, as str (or None)."""
    cn = cert.getSubject().get("commonName")
    if cn is None:
        cn = cert.getSubject().get(b"CN")
    if isinstance(cn, bytes):
        cn = cn.decode("utf-8", "replace")
    return cn


def peerCommonName(proto):
    """The CN of the TLS peer's certificate, or None when there is none."""
    try:
        return commonName(proto.peerCertificate)
    except Exception:
        return None


# ---------------------------------------------------------------------------
# Server mode


class EchoProtocol(protocol.Protocol):
    """The "echo" inner protocol, server side: echoes every byte back."""

    def dataReceived(self, data):
        self.transport.write(data)


class TLSServer(amp.AMP):
    certs = None  # set by serve()

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.secured = False

    @amp.StartTLS.responder
    def startTLS(self):
        if self.secured:
            # Twisted's own server would answer and then call
            # transport.startTLS a second time (see the report in the Go
            # test); the contract answers TLS_ERROR and stays as it is.
            raise amp.RemoteAmpError(b"TLS_ERROR", "TLS is already started on this connection")
        self.secured = True
        return {
            "tls_localCertificate": self.certs.server,
            "tls_verifyAuthorities": [self.certs.ca],
        }

    def allowed(self):
        if not self.secured or peerCommonName(self) != ALLOWED_CN:
            return []
        return list(INNER_PROTOCOLS)

    @ProtocolSwitch.responder
    def protocolSwitch(self, protocol):
        name = protocol.decode("utf-8", "replace")
        if name not in INNER_PROTOCOLS:
            raise UnknownProtocol("unknown protocol %r" % (name,))
        if not self.secured:
            raise TLSRequired("protocol %r requires TLS" % (name,))
        cn = peerCommonName(self)
        if cn != ALLOWED_CN:
            raise Forbidden("protocol %r is not allowed for %r" % (name, cn))
        return EchoProtocol()

    @ListProtocols.responder
    def listProtocols(self):
        return {"protocols": self.allowed()}

    @Sum.responder
    def sum(self, a, b):
        return {"total": a + b}


def serve(args):
    TLSServer.certs = Certs(args.certs)
    beginLogging()
    return harness.serve(
        "twisted_tls.py",
        args.host,
        args.port,
        protocol.Factory.forProtocol(TLSServer),
        watchStdin=not args.no_stdin,
    )


# ---------------------------------------------------------------------------
# Client mode: helpers


class ClientAMP(amp.AMP):
    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.lost = False
        self.errorBoxes = []  # raw _error boxes, in order

    def _errorReceived(self, box):
        self.errorBoxes.append(dict(box))
        return super()._errorReceived(box)

    def connectionLost(self, reason):
        self.lost = True
        super().connectionLost(reason)


class Context(harness.Context):
    """Per-check state: the connections it opened (aborted afterwards)."""

    protocolClass = ClientAMP
    connectTimeout = DEFAULT_TIMEOUT

    def __init__(self, host, port, certs, scale):
        super().__init__(host, port)
        self.certs = certs
        self.scale = scale


def describe(e):
    if isinstance(e, Failure):
        e = e.value
    if isinstance(e, amp.RemoteAmpError):
        return "%s(code=%r, description=%r)" % (type(e).__name__, e.errorCode, e.description)
    return "%s: %s" % (type(e).__name__, e)


@defer.inlineCallbacks
def startTLS(ctx, proto, cert):
    """callRemote(amp.StartTLS) with cert and the CA, on proto."""
    try:
        yield proto.callRemote(
            amp.StartTLS, tls_localCertificate=cert, tls_verifyAuthorities=[ctx.certs.ca]
        )
    except defer.CancelledError:
        raise
    except Exception as e:
        raise CheckFailed("StartTLS failed: %s" % describe(e))


@defer.inlineCallbacks
def checkSum(proto, a, b, when):
    try:
        r = yield proto.callRemote(Sum, a=a, b=b)
    except defer.CancelledError:
        raise
    except Exception as e:
        raise CheckFailed("Sum(%d, %d) %s failed: %s" % (a, b, when, describe(e)))
    if r.get("total") != a + b:
        raise CheckFailed("Sum(%d, %d) %s returned %r" % (a, b, when, r))


@defer.inlineCallbacks
def checkList(proto, want, when):
    try:
        r = yield proto.callRemote(ListProtocols)
    except defer.CancelledError:
        raise
    except Exception as e:
        raise CheckFailed("ListProtocols %s failed: %s" % (when, describe(e)))
    if r.get("protocols") != want:
        raise CheckFailed("ListProtocols %s returned %r, want %r" % (when, r.get("protocols"), want))


def errorCode(proto, failure, seen):
    """
    The code of the error answer that caused failure: the raw box's, since
    callRemote turns undeclared codes into UnknownRemoteError (code UNKNOWN).
    seen is len(proto.errorBoxes) before the call.
    """
    if len(proto.errorBoxes) > seen:
        return proto.errorBoxes[-1].get(b"_error_code")
    if isinstance(failure.value, amp.RemoteAmpError):
        return failure.value.errorCode
    return None


class NoEcho(protocol.Protocol):
    """An inner protocol for switches that must be refused."""

    def connectionMade(self):
        self.factory.switched = True


class SwitchFactory(protocol.ClientFactory):
    """
    The factory passed to callRemote(ProtocolSwitch, ...).  Twisted calls
    clientConnectionFailed(None, reason) on it after a refused switch and
    clientConnectionLost(None, reason) when a switched connection closes.
    """

    def __init__(self, protocolClass=NoEcho, **kw):
        self.protocol = protocolClass
        self.kw = kw
        self.switched = False
        self.failedReason = None
        self.lostReason = None
        self.instance = None

    def buildProtocol(self, addr):
        p = self.protocol(**self.kw)
        p.factory = self
        self.instance = p
        return p

    def clientConnectionFailed(self, connector, reason):
        self.failedReason = reason

    def clientConnectionLost(self, connector, reason):
        self.lostReason = reason


@defer.inlineCallbacks
def expectSwitchRefused(proto, name, code, exc):
    """ProtocolSwitch to name must fail with code; the connection stays AMP."""
    factory = SwitchFactory()
    seen = len(proto.errorBoxes)
    try:
        r = yield proto.callRemote(ProtocolSwitch, factory, protocol=name)
    except defer.CancelledError:
        raise
    except Exception:
        f = Failure()
    else:
        raise CheckFailed("ProtocolSwitch %r succeeded (%r), want %s" % (name, r, code.decode()))
    got = errorCode(proto, f, seen)
    if got != code or not isinstance(f.value, exc):
        raise CheckFailed(
            "ProtocolSwitch %r failed with %s (code %r), want %s"
            % (name, describe(f), got, code.decode())
        )
    if factory.switched:
        raise CheckFailed("the refused switch built an inner protocol anyway")
    if factory.failedReason is None:
        raise CheckFailed("Twisted did not call clientConnectionFailed after the refused switch")
    if proto._locked:
        raise CheckFailed("the connection is still locked after the refused switch")


def pattern(seed, n):
    return random.Random(seed).randbytes(n)


class EchoClient(protocol.Protocol):
    """
    The "echo" inner protocol, client side: sends `payload` in `chunks`
    (list of sizes), either all at once from connectionMade (immediate) or
    one chunk per reactor turn starting on the turn after connectionMade,
    checks the same bytes come back in order, exactly once, then closes.
    """

    GRACE = 0.2  # seconds to wait for stray extra bytes before closing

    def __init__(self, payload, chunks, immediate):
        self.payload = payload
        self.chunks = chunks
        self.immediate = immediate
        self.received = 0
        self.done = defer.Deferred()  # fires None, or fails with CheckFailed
        self.closed = defer.Deferred()
        self.finished = False
        self.extra = 0
        self.reads = 0

    def fail(self, detail):
        if not self.finished:
            self.finished = True
            self.done.errback(CheckFailed(detail))
        if self.transport is not None:
            self.transport.abortConnection()

    def connectionMade(self):
        self.factory.switched = True
        if self.immediate:
            offset = 0
            for size in self.chunks:
                self.transport.write(self.payload[offset : offset + size])
                offset += size
        else:
            reactor.callLater(0, self.writeChunk, 0, 0)

    def writeChunk(self, index, offset):
        if self.finished or index >= len(self.chunks):
            return
        size = self.chunks[index]
        self.transport.write(self.payload[offset : offset + size])
        reactor.callLater(0, self.writeChunk, index + 1, offset + size)

    def dataReceived(self, data):
        self.reads += 1
        if self.finished:
            self.extra += len(data)
            return
        end = self.received + len(data)
        if end > len(self.payload):
            self.fail(
                "echo returned %d bytes, more than the %d sent" % (end, len(self.payload))
            )
            return
        if data != self.payload[self.received : end]:
            bad = next(i for i in range(len(data)) if data[i] != self.payload[self.received + i])
            self.fail("echo differs at byte %d" % (self.received + bad,))
            return
        self.received = end
        if end == len(self.payload):
            reactor.callLater(self.GRACE, self.complete)

    def complete(self):
        if self.finished:
            return
        self.finished = True
        if self.extra:
            self.done.errback(CheckFailed("echo returned %d extra bytes" % self.extra))
        else:
            self.done.callback(None)
        self.transport.loseConnection()

    def connectionLost(self, reason):
        if not self.finished:
            self.fail(
                "the server closed the connection (%s) after echoing %d of %d bytes, "
                "before the client closed it"
                % (reason.getErrorMessage(), self.received, len(self.payload))
            )
        self.closed.callback(None)


@defer.inlineCallbacks
def echoSwitch(ctx, size, chunks, immediate):
    proto = yield ctx.connect()
    yield startTLS(ctx, proto, ctx.certs.client)
    yield checkList(proto, ["echo"], "after StartTLS")
    assert sum(chunks) == size
    factory = SwitchFactory(
        EchoClient, payload=pattern(size, size), chunks=chunks, immediate=immediate
    )
    try:
        yield proto.callRemote(ProtocolSwitch, factory, protocol=b"echo")
    except defer.CancelledError:
        raise
    except Exception as e:
        raise CheckFailed("ProtocolSwitch 'echo' failed: %s" % describe(e))
    if factory.instance is None:
        raise CheckFailed("the switch answer did not start the inner protocol")
    if proto.innerProtocol is not factory.instance:
        raise CheckFailed("the AMP connection did not switch to the inner protocol")
    echo = factory.instance
    try:
        yield echo.done
        yield echo.closed
    except defer.CancelledError:
        ctx.note("at the timeout %d of %d bytes had been echoed" % (echo.received, size))
        raise
    ctx.note("%d bytes echoed in %d reads" % (size, echo.reads))


# ---------------------------------------------------------------------------
# Client mode: checks


@defer.inlineCallbacks
def starttls_sum(ctx):
    proto = yield ctx.connect()
    yield checkSum(proto, 1, 2, "before StartTLS")
    yield startTLS(ctx, proto, ctx.certs.client)
    yield checkSum(proto, 13, 81, "after StartTLS")
    try:
        peer = proto.peerCertificate
    except Exception as e:
        raise CheckFailed("no server certificate after StartTLS: %s" % describe(e))
    if peer.dump() != ctx.certs.server.dump():
        raise CheckFailed(
            "the server presented %r, not server.pem (%r)" % (peer, ctx.certs.server)
        )


def switch_echo_1mib(ctx):
    size = (1 << 20) + 12345
    chunks = [1, 4095, 65536, 300000, 16384, 500000]
    chunks.append(size - sum(chunks))
    return echoSwitch(ctx, size, chunks, immediate=False)


def switch_echo_immediate(ctx):
    return echoSwitch(ctx, 64 << 10, [7, 16384 - 7, 16384, 32768], immediate=True)


@defer.inlineCallbacks
def unknown_protocol(ctx):
    proto = yield ctx.connect()
    yield startTLS(ctx, proto, ctx.certs.client)
    yield expectSwitchRefused(proto, b"nope", b"UNKNOWN_PROTOCOL", UnknownProtocol)
    yield checkSum(proto, 40, 2, "after the refused switch")
    yield checkList(proto, ["echo"], "after the refused switch")


@defer.inlineCallbacks
def switch_without_tls(ctx):
    proto = yield ctx.connect()
    yield expectSwitchRefused(proto, b"echo", b"TLS_REQUIRED", TLSRequired)
    yield checkSum(proto, 40, 2, "after the refused switch")
    yield checkList(proto, [], "without TLS")


@defer.inlineCallbacks
def switch_forbidden(ctx):
    proto = yield ctx.connect()
    yield startTLS(ctx, proto, ctx.certs.intruder)
    yield checkList(proto, [], "for CN 'intruder'")
    yield expectSwitchRefused(proto, b"echo", b"FORBIDDEN", Forbidden)
    yield checkSum(proto, 40, 2, "after the refused switch")


@defer.inlineCallbacks
def second_starttls(ctx):
    proto = yield ctx.connect()
    yield startTLS(ctx, proto, ctx.certs.client)
    # Not callRemote(amp.StartTLS): Twisted's client-side _prepareTLS would
    # start buffering every later box and raise OnlyOneTLS, wedging the
    # connection.  The raw string sends the same box: "_command: StartTLS".
    try:
        r = yield proto.callRemoteString(b"StartTLS")
    except defer.CancelledError:
        raise
    except Exception:
        f = Failure()
    else:
        raise CheckFailed("a second StartTLS was answered with success: %r" % (r,))
    if not isinstance(f.value, amp.RemoteAmpError) or f.value.errorCode != b"TLS_ERROR":
        raise CheckFailed("a second StartTLS failed with %s, want code TLS_ERROR" % describe(f))
    yield checkSum(proto, 40, 2, "after the second StartTLS")


CHECKS = [
    ("starttls_sum", starttls_sum, DEFAULT_TIMEOUT),
    ("switch_echo_1mib", switch_echo_1mib, 30.0),
    ("switch_echo_immediate", switch_echo_immediate, 10.0),
    ("unknown_protocol", unknown_protocol, DEFAULT_TIMEOUT),
    ("switch_without_tls", switch_without_tls, DEFAULT_TIMEOUT),
    ("switch_forbidden", switch_forbidden, DEFAULT_TIMEOUT),
    ("second_starttls", second_starttls, DEFAULT_TIMEOUT),
]


# ---------------------------------------------------------------------------
# Client mode: runner


def client(args, parser):
    checks, code = harness.chooseChecks("twisted_tls.py", CHECKS, args)
    if checks is None:
        return code
    if args.port is None:
        parser.error("client: --port is required")
    if args.certs is None:
        parser.error("client: --certs is required")
    certs = Certs(args.certs)
    return harness.runClient(
        "twisted_tls.py",
        checks,
        args,
        lambda: Context(args.host, args.port, certs, args.timeout_scale),
        describe,
    )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("mode", choices=["server", "client"])
    parser.add_argument("--certs", help="directory of PEM files")
    parser.add_argument("--port", type=int)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--no-stdin", action="store_true", help="server: ignore stdin EOF")
    harness.addClientArguments(
        parser,
        only_help="client: check names or fnmatch patterns",
        scale_help="client",
        run_help="client",
        list_help="client: print check names",
    )
    args = parser.parse_args(argv)
    if args.mode == "server":
        if args.certs is None:
            parser.error("server: --certs is required")
        if args.port is None:
            args.port = 0
        return serve(args)
    return client(args, parser)


if __name__ == "__main__":
    sys.exit(main())
