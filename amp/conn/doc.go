// Package conn runs AMP over a net.Conn: one reader goroutine decoding
// boxes and dispatching them, one writer goroutine that owns the socket and
// coalesces the boxes of many callers into few writes, and a table of calls
// waiting for their answers. Both ends of an AMP connection may call and
// respond.
//
// Calls: CallBox (and the typed amp.Command.Call) waits for the answer, a
// goroutine per caller; Go sends and hands the answer to a callback on the
// reader goroutine, for pipelining with no goroutine per call.
//
// Responders come from a Locator (usually an *amp.Mux). Inline responders
// run on the reader goroutine, as Twisted runs every responder; the others
// run on goroutines of their own, at most Config.MaxHandlers at a time.
// Commands beyond that wait in a queue of Config.MaxQueuedCommands; past
// it, or past what the Budget covers of their requests for a peer that
// has not authenticated, they are answered with CodeOverloaded. The
// reader never waits for a handler, so a responder may call the peer back.
//
// Server serves a net.Listener like http.Server, with Shutdown to drain.
//
// # Design
//
// Goroutines, and what each owns:
//
//   - The reader (readLoop) owns the decoder and the box it decodes into,
//     runs inline responders and Go callbacks, and is the only goroutine
//     that reads the socket and sets its read deadline. It also runs the
//     StartTLS handshake, hands the connection over after a switch,
//     accounts for its read buffer and for the requests it hands to
//     handlers against the Budget, and sends the heartbeat probes.
//   - The writer (writeLoop) owns the socket's write side. It takes what is
//     queued in one piece and writes it, with a write deadline.
//   - Handler goroutines run responders that are not inline, one command
//     after another from the handler queue.
//   - Callers (any goroutine) encode their boxes into the write queue and
//     wait for answers on channels of their own.
//
// The write queue (fields w*, under wmu) holds the bytes not yet written
// and says who may write the socket now (writeState.owner):
//
//   - ownerNone: nobody; the writer takes it when woken.
//   - ownerWriter: the writer goroutine, for one batch.
//   - ownerFast: the fast path, for one non-blocking attempt (below).
//   - ownerLent: a StartTLS or switch request (or answer) has been written
//     up to its mark, and the socket is lent to the goroutine doing the
//     handshake or taking the connection over. The writer does not write
//     until resumeWriter gives the socket back, or exits.
//
// The one fast path (tryFastWrite) spares the hand-off to the writer at low
// concurrency: whoever finds the socket unowned, nothing marked, no
// descriptors to pass and the connection a plain *net.TCPConn or
// *net.UnixConn (Unix only, no TLS yet; or a wrapper that names such a
// socket as the one its writes go to, through a WriteConn() net.Conn
// method, as mux.Conn does) takes the queue and writes it with one
// non-blocking system call. Whatever the socket does not take goes back
// to the front of the queue, in order, and the writer is woken for it. It
// never blocks and never waits, so it cannot outlive a caller's context.
// Connections of any other type (wrappers that count or limit bytes, TLS,
// net.Pipe) are only ever written through their Write method, by the
// writer.
//
// A writer that makes no progress for Config.WriteTimeout (default 30 s)
// fails the connection with ErrWriteTimeout; CallBox and Go return when
// their context ends, whatever the writer is doing.
//
// Memory. What is queued for the peer counts the batch being written
// (w.inflight) until it is written. Calls wait for room under
// MaxWriteBuffer (1 MiB), answers under MaxWriteQueue (4 MiB): a peer
// that reads nothing pins at most that plus one box, and the reader, once
// an answer waits, stops reading, so the peer's own sends stall. The
// reader waits for room only for answers, and only while the writer can
// write, so that the write deadline bounds its wait; while the socket is
// lent for a StartTLS the reader must finish, an answer past
// MaxWriteQueue closes the connection with ErrWriteQueueFull instead. A
// call made on the reader (with its token: from a Go callback or an
// inline responder) never waits for room, since two peers chaining calls
// from their callbacks would each wait for the other's reader: it may go
// past MaxWriteBuffer up to MaxWriteQueue, as answers do, and past that
// it fails at once with ErrWriteQueueFull (the connection goes on).
// Answers wait as long as the connection lives (closing ends the wait),
// whatever BaseContext does. Because answers wait, two peers that both
// answer more than the other's MaxWriteQueue at once can stall each other
// until WriteTimeout (each reader waits for room, neither reads): give a
// peer room for what it may have in flight (the defaults hold 4 MiB). On the read side the decoder
// refuses boxes past MaxBoxSize or MaxFields, and reports each change of
// its buffer to the reader (bufferResized). Pooled boxes and the reader's
// answer box are not kept once they grew past 64 KiB.
//
// The Budget. A connection that is not Config.Trusted draws on the Budget
// shared by its Server (64 MiB) for what it holds past its own share in
// three places, and gives the bytes back as it lets them go, the rest
// when it ends (finish):
//
//   - Its read buffer past box.ReadAhead (64 KiB), on the reader
//     (bufferResized): given back once the large box has been consumed or
//     the reader exits. Growth the budget cannot cover closes the
//     connection with ErrBufferBudget.
//   - The copies of the requests its handlers hold, running or queued,
//     past Allowance (256 KiB), drawn by the reader before it copies a
//     request (holdLocked, under hmu; hq.held, hq.charged) and given back
//     as each handler finishes its task. A command the budget cannot cover
//     is answered OVERLOADED at once, uncopied: the reader does not wait,
//     and the connection goes on.
//   - The bytes queued for its peer (len(w.buf)+w.inflight) past
//     Allowance, drawn by whoever queues a box (enqueue, under wmu;
//     w.charged) and given back as the writer or the fast path sends them
//     (settleLocked). An answer (or probe) the budget cannot cover is
//     taken out again and waits, as one past MaxWriteQueue does, for the
//     writer to send some of what is queued, and tries again: the reader
//     stops reading, and WriteTimeout bounds the wait. Nothing ever waits
//     for the budget itself, which only other connections could give
//     back: where there is nothing queued to wait for (one answer needs
//     more than the allowance and what is left), or the reader finds the
//     socket lent, the answer closes the connection with ErrBufferBudget
//     (a probe is skipped). Calls made on this end (CallBox, Go, SendBox,
//     StartTLS, Switch) are never refused nor held for the budget, so that
//     a peer on another connection cannot stop them: they draw what the
//     budget has left and go, MaxWriteBuffer alone bounding them
//     (MaxWriteQueue those made on the reader); the answers queued
//     behind them must then cover what they could not.
//
// Peers that do not authenticate thus pin their own shares (64 KiB + 2 ×
// 256 KiB each, and the reader's few boxes) and together at most the
// budget besides, however many connections they open and whatever they
// send or fail to read; what this end calls them with is its own to
// bound. The charges count bytes, not the spare capacity of the slices
// that hold them. Budget is atomic, under no lock; Config.Trusted is
// asked only where a connection would draw, with no lock held.
//
// Lock order: no two of pmu (pending calls), wmu (write queue), hmu
// (handler queue) and tlsMu are ever held together, and none is held
// across network I/O, a blocking channel operation or user code.
//
// States:
//
//	open ──StartTLS──▶ TLS pending ──handshake──▶ open (over TLS)
//	   │                    └──fails──▶ closed
//	   ├──switch request──▶ switch pending ──accepted──▶ switched
//	   │                         └──refused──▶ open
//	   ├──Close, peer hang-up, bad input, fatal error──▶ closing ──▶ closed
//	   └──write error, TLS failure, abandoned switch──▶ closed
//
// One StartTLS or switch is pending at a time: a second is refused with
// ErrTLSPending or ErrSwitchPending. While TLS is pending, boxes queue and
// leave encrypted afterwards; while a switch is pending they are refused
// with ErrSwitchPending, and a StartTLS once TLS is on with ErrTLSActive.
// If both ends ask at once (each one's request, one this end would serve,
// arrives while its own is pending) the connection closes with ErrCrossed
// rather than wait for contexts to end. Any other command that arrives
// while this end's switch is pending cannot be answered on the locked
// stream: it is dropped with a log line, and the peer's call ends with
// the switch or its context. A StartTLS or switch refused before the
// writer reached its mark drops the mark. Closing dispatches no more
// commands, refuses new boxes and lets the writer send what is queued by
// one absolute deadline, however slowly the peer reads; closed fails the
// calls still pending with a *LostError. Switched stops both goroutines,
// clears the write deadline and leaves the socket to its new owner: no AMP
// byte is written after the switch's mark.
//
// Heartbeat (Config.Heartbeat, off by default). The reader alone runs it,
// with the read deadline, only while it waits between boxes (inside a
// box, BoxTimeout governs, each box its own from when the reader first
// finds it partly read; while the reader runs code or waits for room,
// nothing is measured): after Heartbeat without a byte it queues one
// probe (HeartbeatCommand), never waiting for room: with the queue past
// MaxWriteQueue it sends none, and tries again after the next Heartbeat.
// The countdown of HeartbeatTimeout starts once the probe has been
// written (the writer and the fast path count the bytes the socket takes,
// Conn.wsent, and time the probe's last one, Conn.probeMark): queued
// behind a backlog it could not be answered sooner, and until then the
// writer's deadline watches a peer that takes nothing. Any byte received,
// or bytes queued after the probe taken by the peer, end the wait; none
// by then fails the connection with ErrHeartbeatTimeout. One probe is out
// at a time; it is no pending call (its tag has probeTag set, and the
// reader takes its answer), so that one left unanswered while other bytes
// came (dropped by the peer, as a Conn drops what crosses its switch
// request) is forgotten HeartbeatTimeout after its write, and the next
// silence probes again. Probes go only in the open state: not while a
// StartTLS or switch is pending (the request's context bounds that wait),
// not while closing; before a StartTLS handshake the deadline is cleared
// and the heartbeat starts again over TLS; a switch stops the reader and
// clears the deadline. This end answers a peer's probe itself, with an
// empty answer; Twisted answers it UNHANDLED.
package conn
