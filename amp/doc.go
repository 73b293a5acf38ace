// Package amp declares AMP commands and converts their arguments, the
// Go side of Twisted's amp.Command and amp.Argument.
//
// A command is declared once, with Go structs for its arguments and its
// response whose `amp:"key"` tags name the wire keys:
//
//	type SumArgs struct {
//		A int64 `amp:"a"`
//		B int64 `amp:"b"`
//	}
//	type SumReply struct {
//		Total int64 `amp:"total"`
//	}
//	var Sum = amp.NewCommand[SumArgs, SumReply]("Sum", amp.Spec{})
//
// The conversion for each struct type is built once, on first use; the
// text forms are Twisted's exactly. Responders are registered on a Mux
// with Handle or HandleInline, and a connection (package amp/conn) serves
// them and makes calls.
//
// # Calls
//
// Command.Call sends a command and waits for its response. Command.Go is
// the pipelined form, as Twisted's callRemote: it returns once the call is
// queued and hands the decoded response (or the error Call would return)
// to a callback, so one goroutine can keep thousands of calls in flight.
// With *conn.Conn the callback runs on the connection's reader goroutine:
// it must not block, and it may call Go again, best with the context it is
// given (the call then leaves with the reader's other writes, with no
// hand-off to the writer goroutine). Neither allocates per call
// in steady state when the fields need no heap (int64, float64, bool;
// strings, byte slices, *big.Int and time.Time values allocate as they
// are decoded).
//
// A declared error answer reaches the caller as a *RemoteError that
// errors.Is the Go error the Spec declares for its code; UNHANDLED and
// UNKNOWN match ErrUnhandledCommand and ErrUnknownRemote.
//
// # Argument types
//
// Each tagged field's Go type picks its AMP argument type:
//
//	AMP type    Go field type                          wire text
//	Integer     int, int8…int64, uint…uint64, uintptr  decimal, as Python's "%d"
//	Integer     *big.Int                               the same, any size (Python ints are unbounded)
//	String      []byte, or string with option String   the bytes as they are
//	Unicode     string                                 UTF-8
//	Path        string with option Path                UTF-8
//	Float       float64, float32                       Python's str(float): 1e-05, 1e+16, nan, inf, -0.0
//	Boolean     bool                                   True, False
//	Decimal     Decimal                                Python's str(Decimal), exactly: 1.50, 1E+2, -NaN, sNaN
//	DateTime    time.Time                              2012-01-23T12:34:56.054321+01:00 (UTC as -00:00)
//	Descriptor  *os.File                               an ordinal; the file travels as SCM_RIGHTS
//	ListOf(T)   []T, T any of these but Descriptor     each element behind a 2-byte length
//	AmpList     []S, S a struct with amp tags          S's boxes, back to back
//	as T        *T, T any of these                     as T; nil is absent (refused in a list)
//
// Decoding accepts what Twisted's fromString accepts and nothing more. A
// value that does not fit the Go type (an Integer beyond int64, a Float
// beyond float32) is an error wrapping ErrOutOfRange, never a truncated
// value; text that is not of the type's form (invalid UTF-8 in Unicode, an
// Integer that is not a number) wraps ErrInvalidValue. Twisted refuses
// Integers of more than 4300 digits (CPython's int_max_str_digits), and so
// does decoding here.
//
// Descriptor works only over Unix sockets, whose connections provide an
// FDTransport; a sent file is closed once it has gone. ListOf(Descriptor)
// is refused: Twisted's ListOf would send bare numbers, no descriptors.
//
// Options follow the key in the tag, comma-separated: "optional" lets the
// argument be absent (it then decodes to the zero value, and nil pointers
// and nil slices are not sent); "String", "Unicode" or "Path" picks the
// AMP type where the Go type allows more than one. Use a pointer (*string,
// *float64, …) to tell an absent argument from a zero one. Keys the struct
// does not declare are ignored when decoding, as Twisted ignores them.
//
// The Append and Parse functions (AppendInt, ParseFloat, ParseDateTime,
// …) convert single values for code that works on raw boxes.
package amp
