package box

import (
	"bytes"
	"testing"
)

// A Sum call as Twisted sends it: 44 bytes on the wire.
func sumBox() *Box { return mk("_ask", "1f", "_command", "Sum", "a", "13", "b", "81") }

func BenchmarkAppendSum(b *testing.B) {
	req := sumBox()
	buf := make([]byte, 0, 256)
	b.ReportAllocs()
	for b.Loop() {
		buf, _ = Append(buf[:0], req)
	}
	b.SetBytes(int64(len(buf)))
}

func benchDecode(b *testing.B, copying bool) {
	one, _ := Append(nil, sumBox())
	stream := bytes.Repeat(one, 1000)
	r := bytes.NewReader(stream)
	d := NewDecoder(r)
	var box Box
	b.SetBytes(int64(len(one)))
	b.ReportAllocs()
	for b.Loop() {
		var err error
		if copying {
			err = d.Decode(&box)
		} else {
			err = d.Next(&box)
		}
		if err != nil {
			r.Reset(stream)
			d.Reset(r)
		}
	}
}

func BenchmarkNextSum(b *testing.B)   { benchDecode(b, false) }
func BenchmarkDecodeSum(b *testing.B) { benchDecode(b, true) }

// A Sum call built from the caller's arguments plus _ask and _command, as
// a connection sends it.
func BenchmarkAppendWithSum(b *testing.B) {
	args := mk("a", "13", "b", "81")
	buf := make([]byte, 0, 256)
	tag := []byte("1f")
	b.ReportAllocs()
	for b.Loop() {
		buf, _ = AppendWith(buf[:0], args, Field{"_ask", tag}, Field{"_command", []byte("Sum")})
	}
	b.SetBytes(int64(len(buf)))
}
