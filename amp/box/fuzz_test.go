package box

import (
	"bytes"
	"errors"
	"io"
	"testing"
)

// FuzzDecode feeds arbitrary streams to the decoder: it must never panic,
// every box it returns must re-encode to a stream that decodes to the same
// box, and a clean EOF must only come between boxes.
func FuzzDecode(f *testing.F) {
	f.Add([]byte("\x00\x04_ask\x00\x011\x00\x08_command\x00\x03Sum\x00\x01a\x00\x0213\x00\x00"))
	f.Add([]byte("\x00\x00"))
	f.Add([]byte("\x00"))
	f.Add([]byte("\x01\x00"))
	f.Add([]byte("\x00\x01a\x00\x00\x00\x01a\x00\x00\x00\x00"))
	f.Add([]byte("\x00\x01k\xff\xff"))
	f.Fuzz(func(t *testing.T, stream []byte) {
		d := NewDecoder(bytes.NewReader(stream))
		d.SetMaxBoxSize(1 << 16)
		for range 1000 {
			var b Box
			err := d.Next(&b)
			if err == io.EOF {
				return
			}
			if err != nil {
				var tl *TooLongError
				if !errors.Is(err, io.ErrUnexpectedEOF) && !errors.As(err, &tl) &&
					!errors.Is(err, ErrBoxTooLarge) && !errors.Is(err, ErrDuplicateKey) {
					t.Fatalf("unexpected error type %T: %v", err, err)
				}
				return
			}
			enc, err := Append(nil, b.Clone())
			if err != nil {
				t.Fatalf("decoded box does not encode: %v", err)
			}
			var again Box
			if err := NewDecoder(bytes.NewReader(enc)).Decode(&again); err != nil || !again.Equal(&b) {
				t.Fatalf("re-decode: %v %v vs %v", err, &again, &b)
			}
		}
	})
}
