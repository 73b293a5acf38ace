"""
The Twisted AMP contender's client: keeps --inflight Sum(13, 81) calls
outstanding (Deferreds from callRemote), issuing a new call as each answer
arrives, over --conns connections (call i on connection i mod conns), for
--warmup unmeasured then --duration measured seconds, and prints one
RESULT line in callbench's form (one call in 16 timed for p50/p99).

Usage:
    /usr/bin/python3 bench/twisted/client.py --addr 127.0.0.1:PORT \
        [--inflight 16] [--conns 1] [--duration 3] [--warmup 0.5]

Works against any AMP server with Sum (ampmux's callbench serve-amp, or
bench/twisted/server.py). Exits 1 if a call fails or answers wrong.
"""

import argparse
import resource
import sys
import time

sys.dont_write_bytecode = True

from twisted.internet import defer, reactor  # noqa: E402
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP6ClientEndpoint, connectProtocol  # noqa: E402
from twisted.protocols import amp  # noqa: E402

SAMPLE_EVERY = 16
WATCHDOG_GRACE = 10.0
WARMUP, MEASURE, STOP = 0, 1, 2


class Sum(amp.Command):
    arguments = [(b"a", amp.Integer()), (b"b", amp.Integer())]
    response = [(b"total", amp.Integer())]


class Bench:
    def __init__(self, protos, inflight, warmup, duration):
        self.protos = protos
        self.inflight = inflight
        self.warmup = warmup
        self.duration = duration
        self.phase = WARMUP
        self.issued = 0
        self.calls = 0
        self.errors = 0
        self.error = None
        self.samples = []
        self.start = self.end = 0.0

    def run(self):
        for i in range(self.inflight):
            self.issue(self.protos[i % len(self.protos)])
        reactor.callLater(self.warmup, self.begin_measure)
        reactor.callLater(self.warmup + self.duration + WATCHDOG_GRACE, self.watchdog)

    def issue(self, proto):
        n = self.issued
        self.issued = n + 1
        t0 = time.perf_counter() if self.phase == MEASURE and n % SAMPLE_EVERY == 0 else None
        d = proto.callRemote(Sum, a=13, b=81)
        d.addCallbacks(self.answered, self.failed, callbackArgs=(proto, t0))

    def answered(self, resp, proto, t0):
        if self.phase == STOP:
            return
        if resp["total"] != 94:
            self.fail("Sum(13, 81) answered %r, want total 94" % (resp,))
            return
        if self.phase == MEASURE:
            self.calls += 1
            if t0 is not None:
                self.samples.append(time.perf_counter() - t0)
        self.issue(proto)

    def failed(self, failure):
        if self.phase != STOP:
            self.fail("Sum call: %s" % (failure.getErrorMessage(),))

    def fail(self, msg):
        self.errors += 1
        if self.error is None:
            self.error = msg
        self.finish()

    def watchdog(self):
        if self.phase != STOP:
            self.fail("server stopped answering (watchdog)")

    def begin_measure(self):
        if self.phase != WARMUP:
            return
        self.phase = MEASURE
        self.start = time.perf_counter()
        reactor.callLater(self.duration, self.finish)

    def finish(self):
        if self.phase == STOP:
            return
        if self.phase == MEASURE:
            self.end = time.perf_counter()
        self.phase = STOP
        reactor.callLater(0, reactor.stop)

    def result(self, conns):
        seconds = self.end - self.start if self.end else 0.0
        cps = self.calls / seconds if seconds > 0 else 0.0
        s = sorted(self.samples)

        def at(q):
            if not s:
                return 0.0
            return s[min(int(q * len(s)), len(s) - 1)] * 1e6

        return (
            "RESULT kind=twisted inflight=%d conns=%d calls=%d seconds=%.6f calls_per_sec=%.0f "
            "p50_us=%.1f p99_us=%.1f errors=%d"
            % (self.inflight, conns, self.calls, seconds, cps, at(0.50), at(0.99), self.errors)
        )


def raise_file_limit(want):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= want:
        return
    target = want if hard == resource.RLIM_INFINITY else min(want, hard)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (ValueError, OSError):
        pass


@defer.inlineCallbacks
def connect_all(host, port, n, parallel=64):
    """Opens n AMP connections, at most `parallel` being opened at once."""
    sem = defer.DeferredSemaphore(parallel)
    if ":" in host:
        endpoint = TCP6ClientEndpoint(reactor, host, port, timeout=10)
    else:
        endpoint = TCP4ClientEndpoint(reactor, host, port, timeout=10)
    ds = [sem.run(connectProtocol, endpoint, amp.AMP()) for _ in range(n)]
    results = yield defer.DeferredList(ds, consumeErrors=True)
    protos = []
    for ok, value in results:
        if not ok:
            raise RuntimeError("connect: %s" % (value.getErrorMessage(),))
        protos.append(value)
    return protos


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--addr", required=True, help="host:port of an AMP server with Sum")
    parser.add_argument("--inflight", type=int, default=1)
    parser.add_argument("--conns", type=int, default=1)
    parser.add_argument("--duration", type=float, default=3.0, help="measured seconds")
    parser.add_argument("--warmup", type=float, default=0.5, help="unmeasured seconds first")
    args = parser.parse_args(argv)
    if args.inflight < 1 or args.conns < 1 or args.duration <= 0 or args.warmup < 0:
        parser.error("--inflight, --conns, --duration must be positive")
    host, _, port = args.addr.rpartition(":")
    host = host.strip("[]")
    raise_file_limit(args.conns + 256)

    state = {"bench": None, "error": None}

    def connected(protos):
        b = Bench(protos, args.inflight, args.warmup, args.duration)
        state["bench"] = b
        b.run()

    def connect_failed(failure):
        state["error"] = failure.getErrorMessage()
        reactor.stop()

    d = connect_all(host, int(port), args.conns)
    d.addCallbacks(connected, connect_failed)
    reactor.run()

    b = state["bench"]
    if b is None:
        sys.stderr.write("client.py: %s\n" % (state["error"],))
        return 1
    if b.calls > 0 or b.errors:
        sys.stdout.write(b.result(args.conns) + "\n")
        sys.stdout.flush()
    if b.error is not None:
        sys.stderr.write("client.py: %s\n" % (b.error,))
        return 1
    if b.calls == 0:
        sys.stderr.write("client.py: no call completed in the measured window\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
