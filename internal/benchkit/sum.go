package benchkit

import (
	"context"
	"errors"
	"fmt"
	"io"
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

// ErrWrongAnswer is what CheckSum's errors wrap.
var ErrWrongAnswer = errors.New("benchkit: wrong answer")

// CheckSum checks an answer to Sum(13, 81).
func CheckSum(reply *box.Box) error {
	if v, _ := reply.Get("total"); string(v) != "94" {
		return fmt.Errorf("%w: Sum(13, 81) answered %s, want total 94", ErrWrongAnswer, reply.String())
	}
	return nil
}

// FloorMessages are the wire bytes of a Sum(13, 81) call box (tag f4240)
// and its answer, 44 and 29 bytes: what the raw TCP floors move, built
// with the codec so that they are the real bytes.
func FloorMessages() (req, resp []byte) {
	var q, r box.Box
	q.SetString(amp.KeyAsk, "f4240")
	q.SetString(amp.KeyCommand, "Sum")
	q.SetString("a", "13")
	q.SetString("b", "81")
	r.SetString(amp.KeyAnswer, "f4240")
	r.SetString("total", "94")
	req, err1 := box.Append(nil, &q)
	resp, err2 := box.Append(nil, &r)
	if err1 != nil || err2 != nil {
		panic(fmt.Sprintf("benchkit: floor messages: %v, %v", err1, err2))
	}
	return req, resp
}

// CloseAll closes every element of cs.
func CloseAll[T io.Closer](cs []T) {
	for _, c := range cs {
		c.Close()
	}
}
