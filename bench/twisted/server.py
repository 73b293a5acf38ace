"""
The Twisted AMP contender's server: Sum(a, b) -> total, as in Twisted's
own AMP example, on Twisted's default reactor (epoll on Linux).

Usage:
    /usr/bin/python3 bench/twisted/server.py [--host 127.0.0.1] [--port 0]

Prints "LISTENING <host>:<port>" on stdout (callbench's form), then serves
until stdin reaches EOF, or SIGTERM / SIGINT. Warnings and errors go to
stderr.
"""

import argparse
import os
import resource
import sys
import threading

sys.dont_write_bytecode = True

from twisted.internet import reactor  # noqa: E402
from twisted.internet.protocol import Factory  # noqa: E402
from twisted.logger import (  # noqa: E402
    FilteringLogObserver,
    LogLevel,
    LogLevelFilterPredicate,
    globalLogBeginner,
    textFileLogObserver,
)
from twisted.protocols import amp  # noqa: E402


class Sum(amp.Command):
    arguments = [(b"a", amp.Integer()), (b"b", amp.Integer())]
    response = [(b"total", amp.Integer())]


class SumServer(amp.AMP):
    @Sum.responder
    def sum(self, a, b):
        return {"total": a + b}


def raise_file_limit():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard if hard != resource.RLIM_INFINITY else 65536, hard))
        except (ValueError, OSError):
            pass


def _watch_stdin():
    try:
        while os.read(0, 65536):
            pass
    except OSError:
        pass
    reactor.callFromThread(_stop)


def _stop():
    if reactor.running:
        reactor.stop()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    raise_file_limit()
    globalLogBeginner.beginLoggingTo(
        [
            FilteringLogObserver(
                textFileLogObserver(sys.stderr),
                [LogLevelFilterPredicate(defaultLogLevel=LogLevel.warn)],
            )
        ],
        redirectStandardIO=False,
    )
    # A backlog of 1024: the scale measure connects 1,000 clients at once.
    port = reactor.listenTCP(args.port, Factory.forProtocol(SumServer), backlog=1024, interface=args.host)
    host = port.getHost()
    sys.stdout.write("LISTENING %s:%d\n" % (host.host, host.port))
    sys.stdout.flush()
    threading.Thread(target=_watch_stdin, name="stdin-watcher", daemon=True).start()
    reactor.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
