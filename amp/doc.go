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
// text forms are Twisted's exactly (see codec.go for the type mapping).
// Responders are registered on a Mux with Handle or HandleInline, and a
// connection (package amp/conn) serves them and makes calls.
package amp
