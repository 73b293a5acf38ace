// Package conn runs AMP over a net.Conn: one reader goroutine decoding
// boxes and dispatching them, one writer goroutine that coalesces the boxes
// of many callers into few writes, and a table of calls waiting for their
// answers. Both ends of an AMP connection may call and respond.
//
// Calls: CallBox (and the typed amp.Command.Call) waits for the answer, a
// goroutine per caller; Go sends and hands the answer to a callback on the
// reader goroutine, for pipelining with no goroutine per call.
//
// Responders come from a Locator (usually an *amp.Mux). Inline responders
// run on the reader goroutine, as Twisted runs every responder; the others
// run on a goroutine each, at most Config.MaxHandlers at a time.
//
// Server serves a net.Listener like http.Server, with Shutdown to drain.
package conn
