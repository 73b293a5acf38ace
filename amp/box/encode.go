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
