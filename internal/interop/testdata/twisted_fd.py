"""
Descriptor interop over a Unix socket.

  twisted_fd.py server PATH   serve ReadFD on a Unix socket; prints LISTENING
  twisted_fd.py client PATH   send ReadFD three times to a server on PATH

ReadFD(file Descriptor, tag Unicode) -> data String: the responder reads
the descriptor to EOF and answers tag + ":" + contents.
"""
import os
import sys

from twisted.internet import defer, endpoints, protocol, reactor
from twisted.protocols import amp


class ReadFD(amp.Command):
    arguments = [(b"file", amp.Descriptor()), (b"tag", amp.Unicode())]
    response = [(b"data", amp.String())]


class Server(amp.AMP):
    @ReadFD.responder
    def readFD(self, file, tag):
        chunks = []
        while True:
            b = os.read(file, 65536)
            if not b:
                break
            chunks.append(b)
        os.close(file)
        return {"data": tag.encode() + b":" + b"".join(chunks)}


def serve(path):
    f = protocol.Factory.forProtocol(Server)
    port = reactor.listenUNIX(path, f)
    print("LISTENING", path, flush=True)
    reactor.run()


@defer.inlineCallbacks
def client(path):
    ep = endpoints.UNIXClientEndpoint(reactor, path)
    proto = yield endpoints.connectProtocol(ep, amp.AMP())
    failed = 0
    for content in [b"first", b"second", b""]:
        r, w = os.pipe()
        os.write(w, content)
        os.close(w)
        res = yield proto.callRemote(ReadFD, file=r, tag="py")
        os.close(r)
        want = b"py:" + content
        if res["data"] == want:
            print("PASS", content)
        else:
            print("FAIL", content, res["data"])
            failed += 1
    proto.transport.loseConnection()
    return failed


def main():
    mode, path = sys.argv[1], sys.argv[2]
    if mode == "server":
        serve(path)
        return
    result = []

    def done(failed):
        result.append(failed)
        reactor.stop()

    def err(f):
        print("ERROR", f.getTraceback(), file=sys.stderr)
        result.append(1)
        reactor.stop()

    reactor.callWhenRunning(lambda: client(path).addCallbacks(done, err))
    reactor.callLater(30, reactor.stop)
    reactor.run()
    sys.exit(0 if result == [0] else 1)


if __name__ == "__main__":
    main()
