package conn

import (
	"errors"
	"fmt"
)

var (
	// ErrConnectionLost: the connection ended before the call was
	// answered. The *LostError carrying it says why.
	ErrConnectionLost = errors.New("conn: connection lost")
	// ErrServerClosed is returned by Server.Serve after Shutdown or Close.
	ErrServerClosed = errors.New("conn: server closed")
	// ErrEmptyBox: the peer sent a box with none of _answer, _error and
	// _command (Twisted's NoEmptyBoxes).
	ErrEmptyBox = errors.New("conn: box is neither command, answer nor error")
	// ErrUnknownTag: the peer answered a call that was never made (or was
	// answered already).
	ErrUnknownTag = errors.New("conn: answer for unknown tag")
	// ErrMalformedError: an error box lacks _error_code.
	ErrMalformedError = errors.New("conn: error box without _error_code")
	// ErrOverloaded: the peer answered CodeOverloaded (its handlers were
	// all busy); a *amp.RemoteError with that code matches it.
	ErrOverloaded = errors.New("conn: peer overloaded")
	// ErrWriteTimeout: a write to the peer made no progress for
	// Config.WriteTimeout (the peer reads nothing); the connection is
	// closed. The error also matches os.ErrDeadlineExceeded.
	ErrWriteTimeout = errors.New("conn: peer stopped reading (write timeout)")
	// ErrWriteQueueFull: the write queue held Config.MaxWriteQueue bytes
	// for the peer at a moment the writer could not send them (a StartTLS
	// request awaiting its answer), or when a call made on the reader
	// (which never waits for room, see Conn.Go) was queued. An answer that
	// finds it so closes the connection; a call gets it and is not sent.
	ErrWriteQueueFull = errors.New("conn: write queue full")
)

// LostError fails calls that were pending (or made) when the connection
// ended; it matches ErrConnectionLost and unwraps to the cause (net.ErrClosed
// after Close, io.EOF when the peer hung up, a *ProtocolError, ...).
type LostError struct{ Cause error }

func (e *LostError) Error() string        { return "conn: connection lost: " + e.Cause.Error() }
func (e *LostError) Unwrap() error        { return e.Cause }
func (e *LostError) Is(target error) bool { return target == ErrConnectionLost }

// ProtocolError reports bad input from the peer; the connection it came on
// is closed, and nothing else is affected.
type ProtocolError struct {
	Box string // the offending box, shortened, when there is one
	Err error  // ErrEmptyBox, ErrUnknownTag, a box decoding error, ...
}

func (e *ProtocolError) Error() string {
	if e.Box == "" {
		return fmt.Sprintf("conn: protocol error: %v", e.Err)
	}
	return fmt.Sprintf("conn: protocol error: %v in %s", e.Err, e.Box)
}

func (e *ProtocolError) Unwrap() error { return e.Err }
