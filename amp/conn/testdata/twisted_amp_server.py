"""A plain Twisted AMP server, for the heartbeat interop test.

It serves twisted.protocols.amp.AMP with no responders, so every command,
the heartbeat probe included, is answered with an UNHANDLED error. It
listens on 127.0.0.1, on a port of the kernel's choosing, prints that port
on a line of its own and serves until it is killed.
"""

from twisted.internet import protocol, reactor
from twisted.protocols import amp


class Factory(protocol.ServerFactory):
    protocol = amp.AMP


port = reactor.listenTCP(0, Factory(), interface="127.0.0.1")
print(port.getHost().port, flush=True)
reactor.run()
