// Package box is the AMP wire codec: it encodes and decodes boxes, the
// length-prefixed key/value messages of Twisted's Asynchronous Messaging
// Protocol, and knows nothing of connections, commands or argument types.
//
// On the wire a box is a sequence of (key, value) pairs, each written as a
// 2-byte big-endian length followed by the bytes, ended by a zero length.
// Keys are 1..255 bytes and values 0..65535 bytes. Twisted writes keys in
// sorted byte order; Append does the same, so a box encoded here is byte for
// byte what Twisted would write.
//
// Decoding is streaming: a Decoder reads from an io.Reader into its own
// buffer. Next yields boxes that alias that buffer (no allocation, valid until
// the next call); Decode copies into the caller's Box.
//
// A Decoder bounds what a hostile stream can cost: a box's size
// (SetMaxBoxSize, 16 MiB) and its number of fields (SetMaxFields, 1024),
// each refused as soon as the limit is passed. Its buffer grows past
// ReadAhead only for a box that needs it and shrinks back once that box is
// consumed; SetGrowHook reports every change, so that a server can share a
// memory budget among many decoders.
package box
