package amp

import (
	"errors"
	"fmt"
)

// Sentinels for local failures. Errors returned by this package wrap one of
// them (test with errors.Is) and name the argument or value at fault.
var (
	// ErrInvalidValue: a wire value is not in the text form its type
	// requires (an Integer that is not a number, bad UTF-8 in Unicode...).
	ErrInvalidValue = errors.New("amp: invalid value")
	// ErrOutOfRange: a value is well formed but does not fit the Go type
	// asked for (an Integer beyond int64, a year Python cannot represent).
	ErrOutOfRange = errors.New("amp: value out of range")
	// ErrMissingArgument: a required argument is absent from a box.
	ErrMissingArgument = errors.New("amp: missing argument")
	// ErrUnhandledCommand: the peer has no responder for the command
	// (Twisted's UNHANDLED error code).
	ErrUnhandledCommand = errors.New("amp: unhandled command")
	// ErrUnknownRemote: the peer failed with an error it did not declare
	// (Twisted's UNKNOWN error code).
	ErrUnknownRemote = errors.New("amp: unknown remote error")
)

// ArgumentError reports a value that could not be encoded or decoded for
// the named argument.
type ArgumentError struct {
	Command  string // command name, when known
	Argument string // wire key
	Type     string // AMP type name ("Integer", "ListOf(Unicode)", ...)
	Err      error  // wraps ErrInvalidValue, ErrOutOfRange or ErrMissingArgument
}

func (e *ArgumentError) Error() string {
	where := e.Argument
	if e.Command != "" {
		where = e.Command + "." + e.Argument
	}
	return fmt.Sprintf("amp: argument %s (%s): %v", where, e.Type, e.Err)
}

func (e *ArgumentError) Unwrap() error { return e.Err }

// RemoteError is an error answer from the peer: its _error_code and
// _error_description. Err is the local error the command declares for Code
// (so errors.Is(err, ErrZeroDivision) works), ErrUnhandledCommand,
// ErrUnknownRemote, or nil for a code the command does not declare.
//
// A responder may also return a *RemoteError to answer with any code; Fatal
// then closes the connection after the answer is sent.
type RemoteError struct {
	Code        string
	Description string
	Fatal       bool
	Err         error
}

func (e *RemoteError) Error() string {
	if e.Description == "" {
		return "amp: remote error " + e.Code
	}
	return "amp: remote error " + e.Code + ": " + e.Description
}

func (e *RemoteError) Unwrap() error { return e.Err }
