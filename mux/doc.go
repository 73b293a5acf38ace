// Package mux shares one listening port between AMP, HTTP/1.x, HTTP/2
// with prior knowledge (h2c), TLS and, if asked, anything else. It is built
// on github.com/soheilhy/cmux and closes cmux's known gaps: sniffing is
// bounded in time, in bytes and in concurrent connections; temporary
// Accept errors back off instead of spinning; closing one class's listener
// does not close the port; HTTP methods beyond cmux's fast list (PATCH,
// the rest of RFC 9110, WebDAV) are recognised; and Shutdown drains.
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
package mux
