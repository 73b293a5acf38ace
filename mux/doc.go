// Package mux shares one listening port between AMP, HTTP/1.x, HTTP/2
// with prior knowledge (h2c), TLS and, if asked, anything else. It is built
// on github.com/soheilhy/cmux and closes cmux's known gaps: sniffing is
// bounded in time, in bytes and in connections, per client and in all;
// temporary Accept errors back off instead of spinning; closing one
// class's listener does not close the port; HTTP methods beyond cmux's
// fast list (PATCH, the rest of RFC 9110, WebDAV) are recognised; and
// Shutdown drains.
//
// AMP clients are told apart by their first two bytes: an AMP stream
// starts with a key length of 1..255, so the first byte is 0x00 and the
// second is not. Other protocols that start with NUL (a PostgreSQL
// SSLRequest starts 00 00 00 08) are not taken for AMP.
//
// Each class is a net.Listener that existing servers Serve unchanged:
//
//	m := mux.New(l, mux.Config{})
//	go ampServer.Serve(m.AMP())
//	go httpServer.Serve(m.HTTP())
//	m.Serve()
//
// or let the mux run them: Config.AMP (any Service) and Config.HTTP.
//
// # Connection limits
//
// The mux always accepts: a new client never waits behind connections
// that send nothing. Each connection counts against its source (its IP
// address; for IPv6, its /64) from Accept until this side closes it: the
// server it was handed to (once or more), or the mux (a failed sniff, an
// eviction, a class nobody accepts from within SniffTimeout, Shutdown).
// The mux holds a connection while it sniffs it and then, from the moment
// a matcher matches, while it waits for its class's Accept; only those it
// holds are ever evicted, never one a server has taken. Past a cap the
// mux closes the oldest idle connection, as HAProxy and nginx do, rather
// than the new one:
//
//   - a source with MaxSniffingPerSource connections still sniffing loses
//     its oldest sniffing one, preferring one that has sent nothing;
//   - with MaxSniffing sniffing in all, the source with the most sniffing
//     loses its oldest sniffing one, likewise;
//   - with MaxConns open, the source the mux holds most of (sniffing or
//     waiting) loses its oldest that has sent nothing, else the one that
//     has waited longest for an Accept (its class has no server, or one
//     that does not keep up), else its oldest sniffing one;
//   - a source with MaxConnsPerSource open, and any new connection when
//     MaxConns are open and the mux holds none of them, is refused: closed
//     at once.
//
// So a flood from one source (or a few) evicts its own connections, not
// everyone else's, whether it sends nothing, too little to match, or the
// start of a protocol nobody here serves. A waiting connection counts
// against MaxConns and MaxConnsPerSource, not against the sniffing caps or
// the pressure below; Shutdown closes every connection the mux holds.
//
// Under pressure, when more than half of MaxSniffing are sniffing or more
// than half of a source's MaxSniffingPerSource, new connections get
// MinSniffTimeout to show their protocol instead of SniffTimeout. Each
// decision is O(1). Server.Stats counts them; the Logger gets a warning of
// each kind (an eviction, a refusal, a shortened deadline, a connection
// nobody accepted) at most once a second, with a count of those it left
// out.
//
// # PROXY protocol
//
// Behind a load balancer, Config.ProxyFrom names the balancers. A
// connection from one may start with a PROXY protocol header (v1 or v2,
// as HAProxy's send-proxy and send-proxy-v2 send it), read before
// sniffing: the client address it carries is then the connection's
// RemoteAddr, everywhere (servers, logs, authorisation) and in the
// per-source caps above, which a balancer's connections skip until their
// header moves them to their client's source. A connection from anyone
// else that starts with a header is closed, as is one with a malformed
// header or a second one (Stats.ProxyRefused): nobody else may choose the
// address they are known by. A header's bytes later in a stream (inside
// AMP, TLS or HTTP) are that stream's data. A v1 header must arrive in one
// read, as github.com/pires/go-proxyproto (which parses them) requires
// and the protocol's spec allows.
//
// An idle connection being sniffed costs about 4 KiB of the process's
// memory (its goroutine's stack, the socket's and the mux's bookkeeping;
// TestFlood measures it), plus the kernel's for the socket: the default
// 16,384 sniffing cost under 64 MiB. No more than 16 KiB of what a
// connection sends is read while sniffing.
package mux
