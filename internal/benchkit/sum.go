package benchkit

import (
	"context"
	"fmt"
	"strconv"

	"github.com/ampmux/ampmux/amp"
	"github.com/ampmux/ampmux/amp/box"
)

// SumArgs and SumReply are Twisted's Sum with int64 fields: the call every
// benchmark makes (13 + 81 = 94).
type SumArgs struct {
	A int64 `amp:"a"`
	B int64 `amp:"b"`
}

type SumReply struct {
	Total int64 `amp:"total"`
}

// Sum is the typed command; RawSum and CheckSum speak the same boxes.
var Sum = amp.NewCommand[SumArgs, SumReply]("Sum", amp.Spec{})

// RawSum answers Sum through the box API without allocating.
func RawSum(_ context.Context, req, resp *box.Box) error {
	av, okA := req.Get("a")
	bv, okB := req.Get("b")
	if !okA || !okB {
		return &amp.RemoteError{Code: amp.CodeUnknown, Description: "Sum needs a and b"}
	}
	a, err := strconv.ParseInt(string(av), 10, 64)
	if err != nil {
		return &amp.RemoteError{Code: amp.CodeUnknown, Description: "bad a"}
	}
	b, err := strconv.ParseInt(string(bv), 10, 64)
	if err != nil {
		return &amp.RemoteError{Code: amp.CodeUnknown, Description: "bad b"}
	}
	var tmp [24]byte
	resp.Set("total", strconv.AppendInt(tmp[:0], a+b, 10))
	return nil
}

// CheckSum checks an answer to Sum(13, 81).
func CheckSum(reply *box.Box) error {
	if v, _ := reply.Get("total"); string(v) != "94" {
		return fmt.Errorf("Sum(13, 81) answered %s, want total 94", reply.String())
	}
	return nil
}
