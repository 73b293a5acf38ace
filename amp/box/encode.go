package box

import (
	"bytes"
	"io"
	"slices"
)

// Append appends the wire form of b to dst and returns the extended slice.
// Keys are written in sorted byte order, as Twisted writes them; Append sorts
// b's fields in place to do so, so a Box must not be encoded by two
// goroutines at once. On error dst is returned unchanged.
func Append(dst []byte, b *Box) ([]byte, error) {
	if err := b.check(); err != nil {
		return dst, err
	}
	b.sort()
	for _, f := range b.fields {
		dst = append(dst, byte(f.kl>>8), byte(f.kl))
		dst = append(dst, b.data[f.k:f.k+f.kl]...)
		dst = append(dst, byte(f.vl>>8), byte(f.vl))
		dst = append(dst, b.data[f.v:f.v+f.vl]...)
	}
	return append(dst, 0, 0), nil
}

// Encode writes the wire form of b to w in one Write.
func Encode(w io.Writer, b *Box) error {
	buf, err := Append(make([]byte, 0, b.EncodedLen()), b)
	if err != nil {
		return err
	}
	_, err = w.Write(buf)
	return err
}

// EncodedLen returns the number of bytes Append would write.
func (b *Box) EncodedLen() int {
	n := 2
	for _, f := range b.fields {
		n += 4 + int(f.kl) + int(f.vl)
	}
	return n
}

// check enforces the wire limits before anything is written, so that a bad
// box fails at the caller, as in Twisted.
func (b *Box) check() error {
	for _, f := range b.fields {
		switch {
		case f.kl == 0:
			return ErrEmptyKey
		case f.kl > MaxKeyLength:
			return &TooLongError{Key: true, Local: true, Name: truncate(b.data[f.k : f.k+f.kl]), Len: int(f.kl)}
		case f.vl > MaxValueLength:
			return &TooLongError{Local: true, Name: truncate(b.data[f.k : f.k+f.kl]), Len: int(f.vl)}
		}
	}
	return nil
}

func (b *Box) less(x, y span) bool {
	return bytes.Compare(b.data[x.k:x.k+x.kl], b.data[y.k:y.k+y.kl]) < 0
}

// sort orders fields by key. Boxes are small, so insertion sort (no
// allocation, no closure) covers the common case.
func (b *Box) sort() {
	fs := b.fields
	if len(fs) > 16 {
		slices.SortFunc(fs, func(x, y span) int {
			return bytes.Compare(b.data[x.k:x.k+x.kl], b.data[y.k:y.k+y.kl])
		})
		return
	}
	for i := 1; i < len(fs); i++ {
		for j := i; j > 0 && b.less(fs[j], fs[j-1]); j-- {
			fs[j], fs[j-1] = fs[j-1], fs[j]
		}
	}
}

// Field is a key and value for AppendWith.
type Field struct {
	Key   string
	Value []byte
}

// mergeLimit bounds the boxes AppendWith orders on the stack; larger ones
// take a copy.
const mergeLimit = 32

// noFields is the box a nil *Box stands for in AppendWith; never written.
var noFields Box

// AppendWith appends the wire form of b (nil: no fields) plus the extra fields, in key
// order, without changing b: what a connection does to add _ask and
// _command to a caller's arguments, which may be shared by other
// goroutines. An extra key that b holds too is a *DuplicateKeyError.
func AppendWith(dst []byte, b *Box, extra ...Field) ([]byte, error) {
	if b == nil {
		b = &noFields // a call without arguments
	}
	start := len(dst)
	if err := b.check(); err != nil {
		return dst, err
	}
	for _, f := range extra {
		switch {
		case len(f.Key) == 0:
			return dst, ErrEmptyKey
		case len(f.Key) > MaxKeyLength:
			return dst, &TooLongError{Key: true, Local: true, Name: truncate([]byte(f.Key)), Len: len(f.Key)}
		case len(f.Value) > MaxValueLength:
			return dst, &TooLongError{Local: true, Name: truncate([]byte(f.Key)), Len: len(f.Value)}
		}
	}
	if len(b.fields) > mergeLimit || len(extra) > mergeLimit {
		var c Box
		c.CopyFrom(b)
		for _, f := range extra {
			if _, ok := c.Get(f.Key); ok {
				return dst, &DuplicateKeyError{Key: truncate([]byte(f.Key))}
			}
			c.Set(f.Key, f.Value)
		}
		return Append(dst, &c)
	}
	// Both orders as indexes on the stack, by insertion sort: boxes are
	// small, and often sorted already.
	var bi, ei [mergeLimit]uint8
	bo, eo := bi[:len(b.fields)], ei[:len(extra)]
	for i := range bo {
		bo[i] = uint8(i)
		for j := i; j > 0 && b.less(b.fields[bo[j]], b.fields[bo[j-1]]); j-- {
			bo[j], bo[j-1] = bo[j-1], bo[j]
		}
	}
	for i := range eo {
		eo[i] = uint8(i)
		for j := i; j > 0 && extra[eo[j]].Key < extra[eo[j-1]].Key; j-- {
			eo[j], eo[j-1] = eo[j-1], eo[j]
		}
	}
	for len(bo) > 0 || len(eo) > 0 {
		if len(eo) > 0 {
			f := &extra[eo[0]]
			c := -1
			if len(bo) > 0 {
				s := b.fields[bo[0]]
				c = compareKey(f.Key, b.data[s.k:s.k+s.kl])
			}
			if c == 0 || len(eo) > 1 && extra[eo[1]].Key == f.Key {
				return dst[:start], &DuplicateKeyError{Key: truncate([]byte(f.Key))}
			}
			if c < 0 {
				dst = append(dst, byte(len(f.Key)>>8), byte(len(f.Key)))
				dst = append(dst, f.Key...)
				dst = append(dst, byte(len(f.Value)>>8), byte(len(f.Value)))
				dst = append(dst, f.Value...)
				eo = eo[1:]
				continue
			}
		}
		s := b.fields[bo[0]]
		dst = append(dst, byte(s.kl>>8), byte(s.kl))
		dst = append(dst, b.data[s.k:s.k+s.kl]...)
		dst = append(dst, byte(s.vl>>8), byte(s.vl))
		dst = append(dst, b.data[s.v:s.v+s.vl]...)
		bo = bo[1:]
	}
	return append(dst, 0, 0), nil
}

// compareKey is bytes.Compare for a string and a byte slice, without
// converting either.
func compareKey(a string, b []byte) int {
	for i := 0; i < len(a) && i < len(b); i++ {
		if a[i] != b[i] {
			if a[i] < b[i] {
				return -1
			}
			return 1
		}
	}
	switch {
	case len(a) < len(b):
		return -1
	case len(a) > len(b):
		return 1
	}
	return 0
}
