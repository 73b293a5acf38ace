package amp

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/big"
	"os"
	"reflect"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/ampmux/ampmux/amp/box"
)

// The mapping from Go types to AMP argument types, and the tag options,
// are documented in the package doc (doc.go); typeFor implements them.

// argType is one AMP argument type bound to one Go type.
type argType interface {
	name() string
	appendText(dst []byte, v reflect.Value, st *codecState) ([]byte, error)
	parse(src []byte, v reflect.Value, st *codecState) error
}

// codecState carries what a conversion needs beyond the value: scratch
// space and, for Descriptor, the connection's descriptor channel.
type codecState struct {
	scratch []byte
	fds     FDTransport
}

// FDTransport passes file descriptors alongside boxes, for Descriptor
// arguments. Connections over Unix sockets provide one.
type FDTransport interface {
	// SendFD arranges for f to travel with the next box written and returns
	// its ordinal on the connection. The transport owns f from then on and
	// closes it once sent (Twisted leaves the sender's copy open).
	SendFD(f *os.File) (ordinal int, err error)
	// ReceivedFD returns the descriptor received with the given ordinal.
	ReceivedFD(ordinal int) (*os.File, error)
}

type fdKey struct{}

// WithFDTransport returns a context whose codec conversions pass
// Descriptor arguments through t. Connections set it for responders.
func WithFDTransport(ctx context.Context, t FDTransport) context.Context {
	return context.WithValue(ctx, fdKey{}, t)
}

func fdTransportFrom(ctx context.Context) FDTransport {
	t, _ := ctx.Value(fdKey{}).(FDTransport)
	return t
}

var statePool = sync.Pool{New: func() any { return &codecState{scratch: make([]byte, 0, 256)} }}

func getState(fds FDTransport) *codecState {
	st := statePool.Get().(*codecState)
	st.fds = fds
	return st
}

func putState(st *codecState) {
	st.fds = nil
	if cap(st.scratch) <= 64<<10 {
		st.scratch = st.scratch[:0]
		statePool.Put(st)
	}
}

type field struct {
	key      string
	index    int
	typ      argType
	optional bool
	nilable  bool
}

// schema converts one struct type to and from boxes. It is built once per
// type and cached.
type schema struct {
	goType reflect.Type
	fields []field
}

var schemas sync.Map // reflect.Type -> *schema or error

func schemaFor(t reflect.Type) (*schema, error) {
	if s, ok := schemas.Load(t); ok {
		if err, isErr := s.(error); isErr {
			return nil, err
		}
		return s.(*schema), nil
	}
	s, err := buildSchema(t, map[reflect.Type]bool{})
	if err != nil {
		schemas.Store(t, err)
		return nil, err
	}
	schemas.Store(t, s)
	return s, nil
}

// SchemaError reports a Go type that cannot serve as an argument or
// response struct.
type SchemaError struct {
	Type  reflect.Type
	Field string
	Msg   string
}

func (e *SchemaError) Error() string {
	if e.Field == "" {
		return fmt.Sprintf("amp: type %v: %s", e.Type, e.Msg)
	}
	return fmt.Sprintf("amp: type %v, field %s: %s", e.Type, e.Field, e.Msg)
}

func buildSchema(t reflect.Type, building map[reflect.Type]bool) (*schema, error) {
	if t.Kind() != reflect.Struct {
		return nil, &SchemaError{Type: t, Msg: "not a struct"}
	}
	if building[t] {
		return nil, &SchemaError{Type: t, Msg: "recursive AmpList"}
	}
	building[t] = true
	defer delete(building, t)
	s := &schema{goType: t}
	seen := map[string]bool{}
	for i := range t.NumField() {
		sf := t.Field(i)
		tag, ok := sf.Tag.Lookup("amp")
		if !ok || tag == "-" {
			continue
		}
		if !sf.IsExported() {
			return nil, &SchemaError{Type: t, Field: sf.Name, Msg: "amp tag on unexported field"}
		}
		parts := strings.Split(tag, ",")
		f := field{key: parts[0], index: i}
		if f.key == "" {
			return nil, &SchemaError{Type: t, Field: sf.Name, Msg: "empty key in amp tag"}
		}
		if len(f.key) > box.MaxKeyLength || strings.HasPrefix(f.key, "_") && isReserved(f.key) {
			return nil, &SchemaError{Type: t, Field: sf.Name, Msg: fmt.Sprintf("key %q is too long or reserved", f.key)}
		}
		if seen[f.key] {
			return nil, &SchemaError{Type: t, Field: sf.Name, Msg: fmt.Sprintf("duplicate key %q", f.key)}
		}
		seen[f.key] = true
		typeOpt := ""
		for _, o := range parts[1:] {
			switch o {
			case "optional":
				f.optional = true
			case "String", "Unicode", "Path":
				typeOpt = o
			default:
				return nil, &SchemaError{Type: t, Field: sf.Name, Msg: fmt.Sprintf("unknown tag option %q", o)}
			}
		}
		at, err := typeFor(sf.Type, typeOpt, building)
		if err != nil {
			return nil, &SchemaError{Type: t, Field: sf.Name, Msg: err.Error()}
		}
		f.typ = at
		k := sf.Type.Kind()
		f.nilable = k == reflect.Pointer || k == reflect.Slice
		s.fields = append(s.fields, f)
	}
	return s, nil
}

func isReserved(k string) bool {
	switch k {
	case KeyAsk, KeyAnswer, KeyCommand, KeyError, KeyErrorCode, KeyErrorDescription:
		return true
	}
	return false
}

var (
	bigIntPtrType = reflect.TypeFor[*big.Int]()
	decimalType   = reflect.TypeFor[Decimal]()
	timeType      = reflect.TypeFor[time.Time]()
	filePtrType   = reflect.TypeFor[*os.File]()
)

func typeFor(t reflect.Type, opt string, building map[reflect.Type]bool) (argType, error) {
	switch t {
	case bigIntPtrType:
		return bigIntArg{}, nil
	case decimalType:
		return decimalArg{}, nil
	case timeType:
		return dateTimeArg{}, nil
	case filePtrType:
		return descriptorArg{}, nil
	}
	if opt != "" && t.Kind() != reflect.String && t.Kind() != reflect.Slice && t.Kind() != reflect.Pointer {
		return nil, fmt.Errorf("option %s does not apply to %v", opt, t)
	}
	switch t.Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return intArg{bits: t.Bits()}, nil
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr:
		return uintArg{bits: t.Bits()}, nil
	case reflect.Float32, reflect.Float64:
		return floatArg{bits: t.Bits()}, nil
	case reflect.Bool:
		return boolArg{}, nil
	case reflect.String:
		switch opt {
		case "String":
			return stringArg{}, nil
		case "Path":
			return unicodeArg{typeName: "Path"}, nil
		}
		return unicodeArg{typeName: "Unicode"}, nil
	case reflect.Slice:
		et := t.Elem()
		if et.Kind() == reflect.Uint8 {
			if opt != "" && opt != "String" {
				return nil, fmt.Errorf("option %s does not apply to []byte", opt)
			}
			return bytesArg{}, nil
		}
		if et.Kind() == reflect.Struct && et != timeType && et != decimalType {
			s, err := buildSchema(et, building)
			if err != nil {
				return nil, err
			}
			return ampListArg{s: s, sliceType: t}, nil
		}
		elem, err := typeFor(et, opt, building)
		if err != nil {
			return nil, err
		}
		if _, isFD := elem.(descriptorArg); isFD {
			return nil, fmt.Errorf("ListOf(Descriptor) is not supported")
		}
		return listArg{elem: elem, sliceType: t}, nil
	case reflect.Pointer:
		elem, err := typeFor(t.Elem(), opt, building)
		if err != nil {
			return nil, err
		}
		return ptrArg{elem: elem, elemType: t.Elem()}, nil
	}
	return nil, fmt.Errorf("no AMP argument type for %v", t)
}

// encode sets the box fields for struct value v.
func (s *schema) encode(b *box.Box, v reflect.Value, st *codecState) error {
	for i := range s.fields {
		f := &s.fields[i]
		fv := v.Field(f.index)
		if f.nilable && fv.IsNil() {
			if f.optional {
				continue
			}
			return &ArgumentError{Argument: f.key, Type: f.typ.name(), Err: ErrMissingArgument}
		}
		var err error
		st.scratch, err = f.typ.appendText(st.scratch[:0], fv, st)
		if err != nil {
			return &ArgumentError{Argument: f.key, Type: f.typ.name(), Err: err}
		}
		if len(st.scratch) > box.MaxValueLength {
			return &ArgumentError{Argument: f.key, Type: f.typ.name(),
				Err: &box.TooLongError{Local: true, Name: f.key, Len: len(st.scratch)}}
		}
		b.Set(f.key, st.scratch)
	}
	return nil
}

// decode fills struct value v from the box; keys it does not declare are
// ignored, as Twisted ignores them.
func (s *schema) decode(b *box.Box, v reflect.Value, st *codecState) error {
	for i := range s.fields {
		f := &s.fields[i]
		fv := v.Field(f.index)
		raw, ok := b.Get(f.key)
		if !ok {
			if !f.optional {
				return &ArgumentError{Argument: f.key, Type: f.typ.name(), Err: ErrMissingArgument}
			}
			fv.SetZero()
			continue
		}
		if err := f.typ.parse(raw, fv, st); err != nil {
			return &ArgumentError{Argument: f.key, Type: f.typ.name(), Err: err}
		}
	}
	return nil
}

type intArg struct{ bits int }

func (intArg) name() string { return "Integer" }
func (intArg) appendText(dst []byte, v reflect.Value, _ *codecState) ([]byte, error) {
	return AppendInt(dst, v.Int()), nil
}
func (a intArg) parse(src []byte, v reflect.Value, _ *codecState) error {
	n, err := ParseInt(src, a.bits)
	if err == nil {
		v.SetInt(n)
	}
	return err
}

type uintArg struct{ bits int }

func (uintArg) name() string { return "Integer" }
func (uintArg) appendText(dst []byte, v reflect.Value, _ *codecState) ([]byte, error) {
	return AppendUint(dst, v.Uint()), nil
}
func (a uintArg) parse(src []byte, v reflect.Value, _ *codecState) error {
	n, err := ParseUint(src, a.bits)
	if err == nil {
		v.SetUint(n)
	}
	return err
}

type bigIntArg struct{}

func (bigIntArg) name() string { return "Integer" }
func (bigIntArg) appendText(dst []byte, v reflect.Value, _ *codecState) ([]byte, error) {
	return AppendBigInt(dst, v.Interface().(*big.Int)), nil
}
func (bigIntArg) parse(src []byte, v reflect.Value, _ *codecState) error {
	n, err := ParseBigInt(src)
	if err == nil {
		v.Set(reflect.ValueOf(n))
	}
	return err
}

type floatArg struct{ bits int }

func (floatArg) name() string { return "Float" }
func (floatArg) appendText(dst []byte, v reflect.Value, _ *codecState) ([]byte, error) {
	return AppendFloat(dst, v.Float()), nil
}
func (a floatArg) parse(src []byte, v reflect.Value, _ *codecState) error {
	f, err := ParseFloat(src)
	if err != nil {
		return err
	}
	if a.bits == 32 && v.OverflowFloat(f) {
		return fmt.Errorf("amp: Float %q does not fit float32: %w", src, ErrOutOfRange)
	}
	v.SetFloat(f)
	return nil
}

type boolArg struct{}

func (boolArg) name() string { return "Boolean" }
func (boolArg) appendText(dst []byte, v reflect.Value, _ *codecState) ([]byte, error) {
	return AppendBool(dst, v.Bool()), nil
}
func (boolArg) parse(src []byte, v reflect.Value, _ *codecState) error {
	b, err := ParseBool(src)
	if err == nil {
		v.SetBool(b)
	}
	return err
}

// unicodeArg is Unicode or Path on a Go string: UTF-8 both ways.
type unicodeArg struct{ typeName string }

func (a unicodeArg) name() string { return a.typeName }
func (a unicodeArg) appendText(dst []byte, v reflect.Value, _ *codecState) ([]byte, error) {
	s := v.String()
	if !utf8.ValidString(s) {
		return dst, fmt.Errorf("amp: %s value is not valid UTF-8: %w", a.typeName, ErrInvalidValue)
	}
	return append(dst, s...), nil
}
func (a unicodeArg) parse(src []byte, v reflect.Value, _ *codecState) error {
	if !utf8.Valid(src) {
		return fmt.Errorf("amp: %s value %q is not valid UTF-8: %w", a.typeName, truncated(src), ErrInvalidValue)
	}
	v.SetString(string(src))
	return nil
}

// stringArg is String (bytes) carried in a Go string.
type stringArg struct{}

func (stringArg) name() string { return "String" }
func (stringArg) appendText(dst []byte, v reflect.Value, _ *codecState) ([]byte, error) {
	return append(dst, v.String()...), nil
}
func (stringArg) parse(src []byte, v reflect.Value, _ *codecState) error {
	v.SetString(string(src))
	return nil
}

type bytesArg struct{}

func (bytesArg) name() string { return "String" }
func (bytesArg) appendText(dst []byte, v reflect.Value, _ *codecState) ([]byte, error) {
	return append(dst, v.Bytes()...), nil
}
func (bytesArg) parse(src []byte, v reflect.Value, _ *codecState) error {
	// A non-nil empty slice, so that an optional empty String stays
	// distinguishable from an absent one.
	v.SetBytes(append(make([]byte, 0, len(src)), src...))
	return nil
}

type decimalArg struct{}

func (decimalArg) name() string { return "Decimal" }
func (decimalArg) appendText(dst []byte, v reflect.Value, _ *codecState) ([]byte, error) {
	return v.Interface().(Decimal).AppendText(dst)
}
func (decimalArg) parse(src []byte, v reflect.Value, _ *codecState) error {
	d, err := ParseDecimal(string(src))
	if err == nil {
		v.Set(reflect.ValueOf(d))
	}
	return err
}

type dateTimeArg struct{}

func (dateTimeArg) name() string { return "DateTime" }
func (dateTimeArg) appendText(dst []byte, v reflect.Value, _ *codecState) ([]byte, error) {
	return AppendDateTime(dst, v.Interface().(time.Time))
}
func (dateTimeArg) parse(src []byte, v reflect.Value, _ *codecState) error {
	t, err := ParseDateTime(src)
	if err == nil {
		v.Set(reflect.ValueOf(t))
	}
	return err
}

// ErrNoDescriptors: a Descriptor argument on a connection that cannot pass
// file descriptors (only Unix sockets can).
var ErrNoDescriptors = fmt.Errorf("amp: connection cannot pass file descriptors: %w", ErrInvalidValue)

type descriptorArg struct{}

func (descriptorArg) name() string { return "Descriptor" }
func (descriptorArg) appendText(dst []byte, v reflect.Value, st *codecState) ([]byte, error) {
	if st.fds == nil {
		return dst, ErrNoDescriptors
	}
	n, err := st.fds.SendFD(v.Interface().(*os.File))
	if err != nil {
		return dst, err
	}
	return AppendInt(dst, int64(n)), nil
}
func (descriptorArg) parse(src []byte, v reflect.Value, st *codecState) error {
	if st.fds == nil {
		return ErrNoDescriptors
	}
	n, err := ParseInt(src, 32)
	if err != nil {
		return err
	}
	f, err := st.fds.ReceivedFD(int(n))
	if err == nil {
		v.Set(reflect.ValueOf(f))
	}
	return err
}

// errNilElement: a nil pointer where a value must be sent, as in a list.
var errNilElement = fmt.Errorf("amp: nil pointer has no wire form: %w", ErrInvalidValue)

type ptrArg struct {
	elem     argType
	elemType reflect.Type
}

func (a ptrArg) name() string { return a.elem.name() }
func (a ptrArg) appendText(dst []byte, v reflect.Value, st *codecState) ([]byte, error) {
	if v.IsNil() { // fields check for nil; a list element or **T has not
		return dst, errNilElement
	}
	return a.elem.appendText(dst, v.Elem(), st)
}
func (a ptrArg) parse(src []byte, v reflect.Value, st *codecState) error {
	p := reflect.New(a.elemType)
	if err := a.elem.parse(src, p.Elem(), st); err != nil {
		return err
	}
	v.Set(p)
	return nil
}

// listArg is ListOf(T): each element's text behind a 2-byte length.
type listArg struct {
	elem      argType
	sliceType reflect.Type
}

func (a listArg) name() string { return "ListOf(" + a.elem.name() + ")" }
func (a listArg) appendText(dst []byte, v reflect.Value, st *codecState) ([]byte, error) {
	for i := range v.Len() {
		e := v.Index(i)
		if e.Kind() == reflect.Pointer && e.IsNil() { // also *big.Int, which would go as 0
			return dst, fmt.Errorf("element %d: %w", i, errNilElement)
		}
		at := len(dst)
		dst = append(dst, 0, 0)
		var err error
		dst, err = a.elem.appendText(dst, e, st)
		if err != nil {
			return dst, fmt.Errorf("element %d: %w", i, err)
		}
		n := len(dst) - at - 2
		if n > box.MaxValueLength {
			return dst, fmt.Errorf("element %d: %w", i, &box.TooLongError{Local: true, Len: n})
		}
		dst[at], dst[at+1] = byte(n>>8), byte(n)
	}
	return dst, nil
}
func (a listArg) parse(src []byte, v reflect.Value, st *codecState) error {
	n := 0
	for rest := src; len(rest) > 0; n++ {
		if len(rest) < 2 {
			return fmt.Errorf("amp: %s ends inside an element length: %w", a.name(), ErrInvalidValue)
		}
		l := int(rest[0])<<8 | int(rest[1])
		if len(rest) < 2+l {
			return fmt.Errorf("amp: %s element %d is truncated: %w", a.name(), n, ErrInvalidValue)
		}
		rest = rest[2+l:]
	}
	out := reflect.MakeSlice(a.sliceType, n, n)
	for i, rest := 0, src; i < n; i++ {
		l := int(rest[0])<<8 | int(rest[1])
		if err := a.elem.parse(rest[2:2+l], out.Index(i), st); err != nil {
			return fmt.Errorf("element %d: %w", i, err)
		}
		rest = rest[2+l:]
	}
	v.Set(out)
	return nil
}

// ampListArg is AmpList: each element a whole serialized box.
type ampListArg struct {
	s         *schema
	sliceType reflect.Type
}

func (ampListArg) name() string { return "AmpList" }
func (a ampListArg) appendText(dst []byte, v reflect.Value, st *codecState) ([]byte, error) {
	var b box.Box
	for i := range v.Len() {
		b.Reset()
		// Nested values need their own scratch space.
		inner := &codecState{fds: st.fds}
		if err := a.s.encode(&b, v.Index(i), inner); err != nil {
			return dst, fmt.Errorf("element %d: %w", i, err)
		}
		var err error
		if dst, err = box.Append(dst, &b); err != nil {
			return dst, fmt.Errorf("element %d: %w", i, err)
		}
	}
	return dst, nil
}
func (a ampListArg) parse(src []byte, v reflect.Value, st *codecState) error {
	d := box.NewDecoder(bytes.NewReader(src))
	out := reflect.MakeSlice(a.sliceType, 0, 4)
	var b box.Box
	for i := 0; ; i++ {
		err := d.Next(&b)
		if err != nil {
			if errors.Is(err, io.EOF) {
				break
			}
			return fmt.Errorf("amp: AmpList element %d: %v: %w", i, err, ErrInvalidValue)
		}
		out = reflect.Append(out, reflect.Zero(a.sliceType.Elem()))
		if err := a.s.decode(&b, out.Index(i), st); err != nil {
			return fmt.Errorf("element %d: %w", i, err)
		}
	}
	v.Set(out)
	return nil
}

func truncated(b []byte) string {
	if len(b) > 40 {
		return string(b[:40]) + "..."
	}
	return string(b)
}
