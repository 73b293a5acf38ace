package box

import (
	"bytes"
	"slices"
	"strconv"
	"strings"
)

// Wire limits, as in Twisted's amp module.
const (
	MaxKeyLength   = 0xff
	MaxValueLength = 0xffff
)

// span locates one field in a Box's storage.
type span struct {
	k, kl, v, vl uint32
}

// Box is one AMP box: a set of distinct byte-string keys with byte-string
// values. The zero value is an empty box ready to use.
//
// A Box owns the bytes it stores, except one filled by Decoder.Next, which
// aliases the decoder's buffer until the decoder's next call. Reset keeps the
// storage, so a Box reused for many messages stops allocating.
type Box struct {
	data   []byte
	fields []span
	alias  bool // data is a Decoder's buffer, capacity clipped
}

// Len returns the number of fields.
func (b *Box) Len() int { return len(b.fields) }

// Key returns the i'th key, in no particular order (wire order after
// decoding, sorted after Append).
func (b *Box) Key(i int) []byte {
	f := b.fields[i]
	return b.data[f.k : f.k+f.kl : f.k+f.kl]
}

// Value returns the i'th value.
func (b *Box) Value(i int) []byte {
	f := b.fields[i]
	return b.data[f.v : f.v+f.vl : f.v+f.vl]
}

func (b *Box) index(key string) int {
	for i, f := range b.fields {
		if string(b.data[f.k:f.k+f.kl]) == key {
			return i
		}
	}
	return -1
}

// Get returns the value stored under key. The bytes must not be modified.
func (b *Box) Get(key string) ([]byte, bool) {
	if i := b.index(key); i >= 0 {
		return b.Value(i), true
	}
	return nil, false
}

// GetString is Get returning a string copy (empty when absent).
func (b *Box) GetString(key string) string {
	v, _ := b.Get(key)
	return string(v)
}

// Has reports whether key is present.
func (b *Box) Has(key string) bool { return b.index(key) >= 0 }

// Set stores a copy of value under key, replacing any earlier value. Limits
// are checked by Append, not here, so that a caller can report them with the
// argument's name.
func (b *Box) Set(key string, value []byte) {
	v := b.appendBytes(value)
	b.setSpan(key, v, uint32(len(value)))
}

// SetString is Set for a string value.
func (b *Box) SetString(key, value string) {
	v := uint32(len(b.data))
	b.data = append(b.data, value...)
	b.setSpan(key, v, uint32(len(value)))
}

// AppendValue stores under key the bytes that fn appends to the slice it is
// given; fn must only append. It lets encoders write a value in place,
// without a scratch buffer.
func (b *Box) AppendValue(key string, fn func(dst []byte) []byte) {
	start := len(b.data)
	b.data = fn(b.data)
	b.setSpan(key, uint32(start), uint32(len(b.data)-start))
}

func (b *Box) appendBytes(p []byte) uint32 {
	v := uint32(len(b.data))
	b.data = append(b.data, p...)
	return v
}

func (b *Box) setSpan(key string, v, vl uint32) {
	if i := b.index(key); i >= 0 {
		b.fields[i].v, b.fields[i].vl = v, vl
		return
	}
	k := uint32(len(b.data))
	b.data = append(b.data, key...)
	b.fields = append(b.fields, span{k: k, kl: uint32(len(key)), v: v, vl: vl})
}

// Delete removes key, if present.
func (b *Box) Delete(key string) {
	if i := b.index(key); i >= 0 {
		b.fields = slices.Delete(b.fields, i, i+1)
	}
}

// Reset empties the box and keeps its storage for reuse. A box that
// aliased a decoder's buffer stops doing so.
func (b *Box) Reset() {
	if b.alias {
		b.data, b.alias = nil, false
	}
	b.data = b.data[:0]
	b.fields = b.fields[:0]
}

// spanSize is the size of one entry of a Box's field index.
const spanSize = 16

// Footprint returns the bytes of storage b holds, used or not: its data
// and its field index. A pool of boxes uses it to drop a box that grew
// large rather than keep that memory for its next user.
func (b *Box) Footprint() int { return cap(b.data) + cap(b.fields)*spanSize }

// Clone returns a deep copy that owns its bytes.
func (b *Box) Clone() *Box {
	c := &Box{}
	c.CopyFrom(b)
	return c
}

// CopyFrom makes b an owning copy of src, reusing b's storage.
func (b *Box) CopyFrom(src *Box) {
	b.alias = false
	b.data = append(b.data[:0], src.data...)
	b.fields = append(b.fields[:0], src.fields...)
}

// Equal reports whether both boxes hold the same keys and values.
func (b *Box) Equal(o *Box) bool {
	if b.Len() != o.Len() {
		return false
	}
	for i := range b.fields {
		v, ok := o.Get(string(b.Key(i)))
		if !ok || !bytes.Equal(v, b.Value(i)) {
			return false
		}
	}
	return true
}

// Map returns the fields as a map of strings, for tools and tests.
func (b *Box) Map() map[string]string {
	m := make(map[string]string, len(b.fields))
	for i := range b.fields {
		m[string(b.Key(i))] = string(b.Value(i))
	}
	return m
}

// FromMap builds a box from a map of strings.
func FromMap(m map[string]string) *Box {
	b := &Box{}
	for k, v := range m {
		b.SetString(k, v)
	}
	return b
}

// String renders the box for logs, sorted, values quoted.
func (b *Box) String() string {
	idx := make([]int, len(b.fields))
	for i := range idx {
		idx[i] = i
	}
	slices.SortFunc(idx, func(x, y int) int { return bytes.Compare(b.Key(x), b.Key(y)) })
	var sb strings.Builder
	sb.WriteString("Box{")
	for n, i := range idx {
		if n > 0 {
			sb.WriteString(", ")
		}
		sb.WriteString(string(b.Key(i)))
		sb.WriteString(": ")
		v := b.Value(i)
		if len(v) > 64 {
			sb.WriteString(strconv.Quote(string(v[:64])) + "...")
		} else {
			sb.WriteString(strconv.Quote(string(v)))
		}
	}
	sb.WriteString("}")
	return sb.String()
}
