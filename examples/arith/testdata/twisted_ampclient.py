"""
Twisted's ampclient.py (docs/core/examples), with its commands declared
as in ampserver.py, extended with the calls where Python's ints go past
64 bits.  Prints one line per call and exits 0; a connection failure or a
crash exits non-zero.  The Go test compares the lines.

Usage: twisted_ampclient.py --host HOST --port PORT
       twisted_ampclient.py --own-server

--own-server runs ampserver.py's Math on a loopback port in this process
and calls it instead: what Twisted itself answers, the lines to expect.
"""

import argparse

from twisted.internet import defer, task
from twisted.internet.endpoints import HostnameEndpoint, TCP4ServerEndpoint, connectProtocol
from twisted.internet.protocol import Factory
from twisted.protocols import amp


class Sum(amp.Command):
    arguments = [(b"a", amp.Integer()), (b"b", amp.Integer())]
    response = [(b"total", amp.Integer())]


class Divide(amp.Command):
    arguments = [(b"numerator", amp.Integer()), (b"denominator", amp.Integer())]
    response = [(b"result", amp.Float())]
    errors = {ZeroDivisionError: b"ZERO_DIVISION"}


class Math(amp.AMP):
    """ampserver.py's responders, without their prints."""

    @Sum.responder
    def sum(self, a, b):
        return {"total": a + b}

    @Divide.responder
    def divide(self, numerator, denominator):
        return {"result": float(numerator) / denominator}


SUMS = [(13, 81), (2 ** 62, 2 ** 62), (-(2 ** 63), -1), (10 ** 30, -(10 ** 30) - 1)]
DIVISIONS = [(1234, 0), (1, 4), (2 ** 64 + 1, 3)]


@defer.inlineCallbacks
def main(reactor, args):
    host, port, listening = args.host, args.port, None
    if args.own_server:
        listening = yield TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(
            Factory.forProtocol(Math)
        )
        host, port = "127.0.0.1", listening.getHost().port
    endpoint = HostnameEndpoint(reactor, host, port, timeout=5)
    proto = yield connectProtocol(endpoint, amp.AMP())
    for a, b in SUMS:
        r = yield proto.callRemote(Sum, a=a, b=b)
        print("Sum(%d, %d) = %d" % (a, b, r["total"]))
    for n, d in DIVISIONS:
        try:
            r = yield proto.callRemote(Divide, numerator=n, denominator=d)
        except ZeroDivisionError:
            print("Divide(%d, %d): ZERO_DIVISION" % (n, d))
        else:
            print("Divide(%d, %d) = %r" % (n, d, r["result"]))
    proto.transport.loseConnection()
    if listening is not None:
        yield listening.stopListening()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--host")
    parser.add_argument("--port", type=int)
    parser.add_argument("--own-server", action="store_true")
    args = parser.parse_args()
    if not args.own_server and (args.host is None or args.port is None):
        parser.error("--host and --port, or --own-server")
    task.react(main, [args])
