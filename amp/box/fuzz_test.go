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
					!errors.Is(err, ErrBoxTooLarge) && !errors.Is(err, ErrDuplicateKey) && !errors.Is(err, ErrTooManyFields) {
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

// FuzzDecodeLimits decodes arbitrary streams under arbitrary field and
// size limits, with a grow hook that refuses growth past a budget: no box
// may pass a limit, the hook's running sum must always be the size of the
// buffer (so an owner that accounts for it never leaks or double-counts),
// the buffer never grows past the budget, and once the decoder stops on
// an error nothing is left charged (at a clean end, a read-ahead buffer
// at most).
func FuzzDecodeLimits(f *testing.F) {
	f.Add([]byte("\x00\x04_ask\x00\x011\x00\x08_command\x00\x03Sum\x00\x00"), uint8(2), uint16(1), uint16(1))
	f.Add([]byte("\x00\x01a\x00\x00\x00\x01b\x00\x00\x00\x01c\x00\x00\x00\x00"), uint8(2), uint16(64), uint16(64))
	f.Add(append([]byte("\x00\x01k\xff\xff"), make([]byte, 0xffff)...), uint8(0), uint16(0), uint16(2))
	f.Add(tinyFieldsBox(3000), uint8(100), uint16(0), uint16(0))
	f.Fuzz(func(t *testing.T, stream []byte, maxFields uint8, maxKB, budgetKB uint16) {
		d := NewDecoder(bytes.NewReader(stream))
		d.SetMaxFields(int(maxFields))
		maxSize := int(maxKB) << 10
		d.SetMaxBoxSize(maxSize)
		if maxSize <= 0 {
			maxSize = DefaultMaxBoxSize
		}
		fieldLimit := int(maxFields)
		if fieldLimit == 0 {
			fieldLimit = DefaultMaxFields
		}
		budget := int(budgetKB) << 10
		sum := 0
		refused := errors.New("refused")
		d.SetGrowHook(func(delta int) error {
			if delta > 0 && sum != len(d.buf) {
				t.Fatalf("before a growth: hook sum %d, buffer %d", sum, len(d.buf))
			}
			if delta > 0 && budget > 0 && sum+delta > budget {
				return refused
			}
			sum += delta
			if delta < 0 && sum != len(d.buf) {
				t.Fatalf("after a shrink: hook sum %d, buffer %d", sum, len(d.buf))
			}
			return nil
		})
		for range 1000 {
			var b Box
			err := d.Next(&b)
			if sum != len(d.buf) {
				t.Fatalf("after Next: hook sum %d, buffer %d", sum, len(d.buf))
			}
			if budget > 0 && sum > budget {
				t.Fatalf("buffer %d past the budget %d", sum, budget)
			}
			if err != nil {
				var tl *TooLongError
				if err != io.EOF && err != refused && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.As(err, &tl) &&
					!errors.Is(err, ErrBoxTooLarge) && !errors.Is(err, ErrDuplicateKey) && !errors.Is(err, ErrTooManyFields) {
					t.Fatalf("unexpected error type %T: %v", err, err)
				}
				if err != io.EOF && sum != 0 || sum > ReadAhead {
					t.Fatalf("stopped (%v) with %d bytes still charged", err, sum)
				}
				return
			}
			if b.Len() > fieldLimit || b.EncodedLen() > maxSize {
				t.Fatalf("box of %d fields, %d bytes passed the limits %d, %d", b.Len(), b.EncodedLen(), fieldLimit, maxSize)
			}
		}
	})
}
