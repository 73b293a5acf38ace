package box

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"runtime"
	"strings"
	"testing"
	"testing/iotest"
	"unsafe"
)

// tinyFieldsBox is one box of n distinct 3-byte keys with empty values: 7
// bytes a field, the costliest shape per byte for a decoder.
func tinyFieldsBox(n int) []byte {
	out := make([]byte, 0, 7*n+2)
	for i := range n {
		out = append(out, 0, 3, byte(i>>16), byte(i>>8), byte(i), 0, 0)
	}
	return append(out, 0, 0)
}

// largeValuesBox is one box of about size bytes of maximal values.
func largeValuesBox(size int) []byte {
	val := strings.Repeat("v", MaxValueLength)
	var out []byte
	for i := 0; len(out)+4+2+MaxValueLength+2 <= size; i++ {
		out = binary.BigEndian.AppendUint16(out, 2)
		out = binary.BigEndian.AppendUint16(out, uint16(i))
		out = binary.BigEndian.AppendUint16(out, MaxValueLength)
		out = append(out, val...)
	}
	return append(out, 0, 0)
}

func TestSpanSize(t *testing.T) {
	if n := unsafe.Sizeof(span{}); n != spanSize {
		t.Fatalf("span is %d bytes, spanSize says %d", n, spanSize)
	}
}

func TestDecodeMaxFields(t *testing.T) {
	small := encodeAll(t, mk("a", "1"))
	tests := []struct {
		name   string
		limit  int // passed to SetMaxFields; 0 leaves the default
		fields int
		ok     bool
	}{
		{"default, at the limit", 0, DefaultMaxFields, true},
		{"default, one over", 0, DefaultMaxFields + 1, false},
		{"lowered, at the limit", 8, 8, true},
		{"lowered, one over", 8, 9, false},
		{"lowered past the map's threshold", linearDupLimit + 4, linearDupLimit + 5, false},
		{"raised", 5000, 5000, true},
		{"restored by zero", -1, DefaultMaxFields + 1, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			stream := append(tinyFieldsBox(tt.fields), small...)
			d := NewDecoder(iotest.HalfReader(bytes.NewReader(stream)))
			switch {
			case tt.limit > 0:
				d.SetMaxFields(tt.limit)
			case tt.limit < 0:
				d.SetMaxFields(3)
				d.SetMaxFields(0)
			}
			var b Box
			err := d.Next(&b)
			if tt.ok {
				if err != nil || b.Len() != tt.fields {
					t.Fatalf("Next = %v with %d fields, want %d fields", err, b.Len(), tt.fields)
				}
				if err := d.Next(&b); err != nil || b.GetString("a") != "1" {
					t.Fatalf("the box after it: %v %v", err, &b)
				}
				return
			}
			limit := max(tt.limit, 0)
			if limit == 0 {
				limit = DefaultMaxFields
			}
			var tf *TooManyFieldsError
			if !errors.Is(err, ErrTooManyFields) || !errors.As(err, &tf) || tf.Limit != limit {
				t.Fatalf("err = %v (%T), want a TooManyFieldsError with limit %d", err, err, limit)
			}
			if !strings.HasPrefix(err.Error(), "box: ") {
				t.Fatalf("error %q lacks the package prefix", err)
			}
			if err2 := d.Next(&b); !errors.Is(err2, ErrTooManyFields) {
				t.Fatalf("error not sticky: %v", err2)
			}
			if len(d.buf) != 0 {
				t.Fatalf("a decoder stopped on an error keeps a %d-byte buffer", len(d.buf))
			}
		})
	}
}

// hookLog checks the grow hook's invariant: the sum of the deltas it was
// told is the size of the buffer, at every call.
type hookLog struct {
	t       *testing.T
	d       *Decoder
	sum     int
	peak    int
	refuse  int // refuse a growth past this size (0: never)
	refused bool
}

func (h *hookLog) hook(delta int) error {
	if delta > 0 && h.sum != len(h.d.buf) {
		h.t.Errorf("before a growth: hook sum %d, buffer %d", h.sum, len(h.d.buf))
	}
	if delta > 0 && h.refuse > 0 && h.sum+delta > h.refuse {
		h.refused = true
		return errRefused
	}
	h.sum += delta
	h.peak = max(h.peak, h.sum)
	if delta < 0 && h.sum != len(h.d.buf) {
		h.t.Errorf("after a shrink: hook sum %d, buffer %d", h.sum, len(h.d.buf))
	}
	return nil
}

var errRefused = errors.New("test: growth refused")

func TestDecodeGrowHook(t *testing.T) {
	big := largeValuesBox(1 << 20)
	small := encodeAll(t, mk("_ask", "1", "_command", "Sum"))
	tests := []struct {
		name   string
		stream []byte
		refuse int
		want   func(t *testing.T, h *hookLog, d *Decoder)
	}{
		{"small boxes stay within the read-ahead", bytes.Repeat(small, 5000), 0, func(t *testing.T, h *hookLog, d *Decoder) {
			if h.peak > ReadAhead {
				t.Errorf("peak %d past the read-ahead", h.peak)
			}
		}},
		{"a large box grows, then shrinks once consumed", append(append(append([]byte{}, small...), big...), small...), 0, func(t *testing.T, h *hookLog, d *Decoder) {
			if h.peak < len(big) {
				t.Errorf("peak %d, smaller than the box (%d)", h.peak, len(big))
			}
		}},
		{"a refused growth stops the decoder", big, 256 << 10, func(t *testing.T, h *hookLog, d *Decoder) {
			if !h.refused {
				t.Error("the hook never refused")
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := NewDecoder(iotest.HalfReader(bytes.NewReader(tt.stream)))
			h := &hookLog{t: t, d: d, refuse: tt.refuse}
			d.SetGrowHook(h.hook)
			var b Box
			var err error
			for err == nil {
				err = d.Next(&b)
			}
			switch {
			case tt.refuse > 0:
				if !errors.Is(err, errRefused) {
					t.Fatalf("err = %v, want the hook's", err)
				}
				if err := d.Next(&b); !errors.Is(err, errRefused) {
					t.Fatalf("refusal not sticky: %v", err)
				}
			case err != io.EOF:
				t.Fatalf("err = %v", err)
			}
			// A clean end keeps a read-ahead buffer for a Reset; an error
			// lets it go.
			if want := map[bool]int{true: 0, false: len(d.buf)}[tt.refuse > 0]; h.sum != len(d.buf) || h.sum != want || h.sum > ReadAhead {
				t.Errorf("at the end: hook sum %d, buffer %d, want %d", h.sum, len(d.buf), want)
			}
			tt.want(t, h, d)
		})
	}
}

// Between two large boxes a small one shrinks the buffer; a large box
// already half read when the last one is consumed keeps it (no copying
// back and forth).
func TestDecodeShrinksAfterLargeBox(t *testing.T) {
	big := largeValuesBox(1 << 20)
	small := encodeAll(t, mk("a", "1"))
	stream := append(append(append([]byte{}, big...), small...), big...)
	d := NewDecoder(bytes.NewReader(stream))
	var b Box
	if err := d.Next(&b); err != nil || b.Len() < 10 {
		t.Fatalf("big box: %v", err)
	}
	grown := len(d.buf)
	if err := d.Next(&b); err != nil || b.GetString("a") != "1" {
		t.Fatalf("small box: %v %v", err, &b)
	}
	if len(d.buf) != grown {
		t.Fatalf("the buffer shrank while it held most of the next box")
	}
	if err := d.Next(&b); err != nil || b.Len() < 10 {
		t.Fatalf("second big box: %v", err)
	}
	if err := d.Next(&b); err != io.EOF {
		t.Fatalf("end: %v", err)
	}
	if len(d.buf) > ReadAhead {
		t.Fatalf("after the stream: a %d-byte buffer", len(d.buf))
	}
}

// heapInUse returns the live heap after a full collection.
func heapInUse() uint64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

// After a large box has been consumed, the decoder and the box it decodes
// into hold little: no large buffer, field index or key map.
func TestDecodeReleasesLargeBox(t *testing.T) {
	const fields = 300_000 // 2.1 MB on the wire; the index alone is 4.8 MB
	tests := []struct {
		name string
		box  []byte
	}{
		{"tiny fields", tinyFieldsBox(fields)},
		{"large values", largeValuesBox(8 << 20)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			stream := append(tt.box, encodeAll(t, mk("a", "1"))...)
			d := NewDecoder(bytes.NewReader(stream))
			d.SetMaxFields(fields)
			var b Box
			before := heapInUse()
			if err := d.Next(&b); err != nil {
				t.Fatal(err)
			}
			if err := d.Next(&b); err != nil || b.GetString("a") != "1" {
				t.Fatalf("small box: %v", err)
			}
			after := heapInUse()
			runtime.KeepAlive(d)
			runtime.KeepAlive(&b)
			retained := int64(after) - int64(before)
			t.Logf("retained %d bytes after a %d-byte box", retained, len(tt.box))
			// Generous: the decoder keeps a read-ahead buffer and small maps;
			// before the release, this was the box's size or ten times it.
			if retained > 1<<20 {
				t.Fatalf("retained %d bytes after the box", retained)
			}
			if len(d.buf) > ReadAhead || d.seen != nil || cap(b.fields) > keepFields {
				t.Fatalf("kept: buffer %d, key map %d, field index %d", len(d.buf), len(d.seen), cap(b.fields))
			}
		})
	}
}

// BenchmarkTinyFieldsBox decodes a 16.7 MB box of 2.4 million 3-byte
// keys, as a hostile peer may send: with the default limits it is refused
// after DefaultMaxFields fields; with the limit lifted it shows what it
// used to cost. retained-B is the heap the decoder still holds after it
// (and after one small box).
func BenchmarkTinyFieldsBox(b *testing.B) {
	n := (DefaultMaxBoxSize - 2) / 7
	stream := append(tinyFieldsBox(n), "\x00\x01a\x00\x011\x00\x00"...)
	for _, lifted := range []bool{false, true} {
		b.Run(fmt.Sprintf("lifted=%v", lifted), func(b *testing.B) {
			r := bytes.NewReader(stream)
			var d *Decoder
			var box Box
			before := heapInUse()
			if lifted {
				b.SetBytes(int64(len(stream)))
			}
			b.ReportAllocs()
			for b.Loop() {
				r.Reset(stream)
				d = NewDecoder(r)
				if lifted {
					d.SetMaxFields(n)
				}
				err := d.Next(&box)
				if lifted == (err != nil) {
					b.Fatalf("lifted=%v: %v", lifted, err)
				}
				if lifted {
					if err := d.Next(&box); err != nil {
						b.Fatal(err)
					}
				}
			}
			b.StopTimer()
			after := heapInUse()
			runtime.KeepAlive(d)
			runtime.KeepAlive(&box)
			b.ReportMetric(float64(int64(after)-int64(before)), "retained-B")
		})
	}
}
