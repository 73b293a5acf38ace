package amp_test

import (
	"bytes"
	"errors"
	"math/big"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/ampmux/ampmux/amp"
	"github.com/ampmux/ampmux/amp/box"
	"github.com/ampmux/ampmux/internal/demo"
)

func readGolden(t *testing.T, name string) []byte {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join("box", "testdata", "golden", name))
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

// Twisted's own Echo call with every argument type decodes into Go values
// that encode back to Twisted's exact bytes.
func TestGoldenEchoArgumentsRoundTrip(t *testing.T) {
	for _, name := range []string{"echo_call_all.amp", "echo_answer_all.amp", "amplist_argument.amp", "empty_amplist_argument.amp"} {
		t.Run(name, func(t *testing.T) {
			raw := readGolden(t, name)
			var in box.Box
			if err := box.NewDecoder(bytes.NewReader(raw)).Decode(&in); err != nil {
				t.Fatal(err)
			}
			var v demo.EchoValues
			if err := demo.Echo.DecodeArgs(&in, &v, nil); err != nil {
				t.Fatal(err)
			}
			var out box.Box
			if err := demo.Echo.EncodeArgs(&out, &v, nil); err != nil {
				t.Fatal(err)
			}
			for _, k := range []string{amp.KeyAsk, amp.KeyCommand, amp.KeyAnswer} {
				if val, ok := in.Get(k); ok {
					out.Set(k, val)
				}
			}
			again, err := box.Append(nil, &out)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(again, raw) {
				t.Fatalf("re-encoded:\n%q\nTwisted:\n%q", again, raw)
			}
		})
	}
}

type allKinds struct {
	I8    int8    `amp:"i8"`
	U16   uint16  `amp:"u16"`
	F32   float32 `amp:"f32"`
	S     string  `amp:"s,String"`
	Opt   *int64  `amp:"opt,optional"`
	List  [][]int `amp:"list,optional"`
	Items []struct {
		N int `amp:"n"`
	} `amp:"items,optional"`
	Skip string
}

type empty struct{}

func TestConversions(t *testing.T) {
	cmd, err := amp.DeclareCommand[allKinds, empty]("K", amp.Spec{})
	if err != nil {
		t.Fatal(err)
	}
	in := allKinds{I8: -128, U16: 65535, F32: 0.5, S: "\xff\x00", List: [][]int{{1, 2}, {}}, Skip: "x"}
	in.Items = append(in.Items, struct {
		N int `amp:"n"`
	}{N: 7})
	var b box.Box
	if err := cmd.EncodeArgs(&b, &in, nil); err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"i8": "-128", "u16": "65535", "f32": "0.5", "s": "\xff\x00",
		"list":  "\x00\x06\x00\x011\x00\x012\x00\x00",
		"items": "\x00\x01n\x00\x017\x00\x00",
	}
	if got := b.Map(); !reflect.DeepEqual(got, want) {
		t.Fatalf("encoded %q, want %q", got, want)
	}
	var out allKinds
	if err := cmd.DecodeArgs(&b, &out, nil); err != nil {
		t.Fatal(err)
	}
	in.Skip = ""
	if !reflect.DeepEqual(in, out) {
		t.Fatalf("decoded %+v, want %+v", out, in)
	}
}

func TestDecodeErrors(t *testing.T) {
	cmd := amp.NewCommand[allKinds, empty]("K", amp.Spec{})
	base := map[string]string{"i8": "1", "u16": "1", "f32": "1.0", "s": ""}
	tests := []struct {
		name  string
		key   string
		value string
		is    error
	}{
		{"int8 overflow", "i8", "128", amp.ErrOutOfRange},
		{"uint16 negative", "u16", "-1", amp.ErrOutOfRange},
		{"float32 overflow", "f32", "1e39", amp.ErrOutOfRange},
		{"not a number", "i8", "x", amp.ErrInvalidValue},
		{"list truncated", "list", "\x00\x05ab", amp.ErrInvalidValue},
		{"list half length", "list", "\x00", amp.ErrInvalidValue},
		{"amplist garbage", "items", "\x00\x01n", amp.ErrInvalidValue},
		{"amplist missing key", "items", "\x00\x01m\x00\x017\x00\x00", amp.ErrMissingArgument},
		{"missing required", "i8", "", amp.ErrMissingArgument},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := map[string]string{}
			for k, v := range base {
				m[k] = v
			}
			if tt.is == amp.ErrMissingArgument && tt.key == "i8" {
				delete(m, "i8")
			} else {
				m[tt.key] = tt.value
			}
			var out allKinds
			err := cmd.DecodeArgs(box.FromMap(m), &out, nil)
			if !errors.Is(err, tt.is) {
				t.Fatalf("err = %v, want %v", err, tt.is)
			}
			var ae *amp.ArgumentError
			if !errors.As(err, &ae) || ae.Command != "K" || ae.Argument != tt.key {
				t.Fatalf("err = %#v, want ArgumentError for K.%s", err, tt.key)
			}
			if !strings.HasPrefix(err.Error(), "amp: ") {
				t.Fatalf("error %q lacks prefix", err)
			}
		})
	}
}

func TestSchemaErrors(t *testing.T) {
	type recursive struct {
		Self []recursive `amp:"self"`
	}
	tests := map[string]func() error{
		"not a struct": func() error { _, err := amp.DeclareCommand[int, empty]("X", amp.Spec{}); return err },
		"unsupported type": func() error {
			_, err := amp.DeclareCommand[struct {
				M map[string]int `amp:"m"`
			}, empty]("X", amp.Spec{})
			return err
		},
		"reserved key": func() error {
			_, err := amp.DeclareCommand[struct {
				A int `amp:"_ask"`
			}, empty]("X", amp.Spec{})
			return err
		},
		"duplicate key": func() error {
			_, err := amp.DeclareCommand[struct {
				A int `amp:"a"`
				B int `amp:"a"`
			}, empty]("X", amp.Spec{})
			return err
		},
		"unknown option": func() error {
			_, err := amp.DeclareCommand[struct {
				A int `amp:"a,bogus"`
			}, empty]("X", amp.Spec{})
			return err
		},
		"option on wrong type": func() error {
			_, err := amp.DeclareCommand[struct {
				A int `amp:"a,Path"`
			}, empty]("X", amp.Spec{})
			return err
		},
		"recursive amplist": func() error { _, err := amp.DeclareCommand[recursive, empty]("X", amp.Spec{}); return err },
		"empty name":        func() error { _, err := amp.DeclareCommand[empty, empty]("", amp.Spec{}); return err },
		"nil declared error": func() error {
			_, err := amp.DeclareCommand[empty, empty]("X", amp.Spec{Errors: map[string]error{"E": nil}})
			return err
		},
	}
	for name, f := range tests {
		t.Run(name, func(t *testing.T) {
			err := f()
			if err == nil || !strings.HasPrefix(err.Error(), "amp: ") {
				t.Fatalf("err = %v", err)
			}
		})
	}
}

func TestEncodeErrors(t *testing.T) {
	type req struct {
		P *int64    `amp:"p"`
		T time.Time `amp:"t,optional"`
		B []byte    `amp:"b,optional"`
	}
	cmd := amp.NewCommand[req, empty]("E", amp.Spec{})
	var b box.Box
	err := cmd.EncodeArgs(&b, &req{}, nil)
	if !errors.Is(err, amp.ErrMissingArgument) {
		t.Fatalf("nil required pointer: %v", err)
	}
	one := int64(1)
	err = cmd.EncodeArgs(&b, &req{P: &one, T: time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC)}, nil)
	if !errors.Is(err, amp.ErrOutOfRange) {
		t.Fatalf("year 10000: %v", err)
	}
	b.Reset()
	err = cmd.EncodeArgs(&b, &req{P: &one, T: time.Now(), B: make([]byte, 70000)}, nil)
	var tl *box.TooLongError
	if !errors.As(err, &tl) {
		t.Fatalf("70000-byte value: %v", err)
	}
}

func TestBigIntegers(t *testing.T) {
	type req struct {
		N *big.Int `amp:"n"`
		I int64    `amp:"i"`
	}
	cmd := amp.NewCommand[req, empty]("B", amp.Spec{})
	var out req
	err := cmd.DecodeArgs(box.FromMap(map[string]string{"n": "-" + strings.Repeat("9", 200), "i": "9223372036854775808"}), &out, nil)
	if !errors.Is(err, amp.ErrOutOfRange) {
		t.Fatalf("int64 overflow: %v", err)
	}
	err = cmd.DecodeArgs(box.FromMap(map[string]string{"n": "-" + strings.Repeat("9", 200), "i": "-9223372036854775808"}), &out, nil)
	if err != nil || out.N.String() != "-"+strings.Repeat("9", 200) || out.I != -9223372036854775808 {
		t.Fatalf("got %v %v %v", out.N, out.I, err)
	}
}

// FuzzDecodeEcho: any box decodes into Echo's arguments or fails with a
// typed error, and what decodes re-encodes to a box that decodes the same.
func FuzzDecodeEcho(f *testing.F) {
	if raw, err := os.ReadFile(filepath.Join("box", "testdata", "golden", "echo_call_all.amp")); err == nil {
		f.Add(raw)
	}
	f.Add([]byte("\x00\x05items\x00\x03\x00\x01n\x00\x00"))
	f.Add([]byte("\x00\x04list\x00\x03\x00\x05a\x00\x00"))
	f.Fuzz(func(t *testing.T, wire []byte) {
		var in box.Box
		if err := box.NewDecoder(bytes.NewReader(wire)).Decode(&in); err != nil {
			return
		}
		var v demo.EchoValues
		if err := demo.Echo.DecodeArgs(&in, &v, nil); err != nil {
			var ae *amp.ArgumentError
			if !errors.As(err, &ae) {
				t.Fatalf("untyped error %T: %v", err, err)
			}
			return
		}
		var out box.Box
		if err := demo.Echo.EncodeArgs(&out, &v, nil); err != nil {
			return // e.g. a value that grew past 65535 bytes when made canonical
		}
		var v2 demo.EchoValues
		if err := demo.Echo.DecodeArgs(&out, &v2, nil); err != nil {
			t.Fatalf("re-decode: %v", err)
		}
		var out2 box.Box
		if err := demo.Echo.EncodeArgs(&out2, &v2, nil); err != nil || !out2.Equal(&out) {
			t.Fatalf("not stable: %v\n%v\n%v", err, &out, &out2)
		}
	})
}

// A nil pointer inside a list has no wire form: an error, not a panic (and
// not a *big.Int silently sent as 0).
func TestEncodeNilElements(t *testing.T) {
	one, s := int64(1), "s"
	p := &one
	tests := []struct {
		name string
		enc  func(*box.Box) error
	}{
		{"ListOf(*int64)", func(b *box.Box) error {
			type req struct {
				L []*int64 `amp:"l"`
			}
			return amp.NewCommand[req, empty]("N", amp.Spec{}).EncodeArgs(b, &req{L: []*int64{&one, nil}}, nil)
		}},
		{"ListOf(*string)", func(b *box.Box) error {
			type req struct {
				L []*string `amp:"l"`
			}
			return amp.NewCommand[req, empty]("N", amp.Spec{}).EncodeArgs(b, &req{L: []*string{nil, &s}}, nil)
		}},
		{"ListOf(*big.Int)", func(b *box.Box) error {
			type req struct {
				L []*big.Int `amp:"l"`
			}
			return amp.NewCommand[req, empty]("N", amp.Spec{}).EncodeArgs(b, &req{L: []*big.Int{big.NewInt(1), nil}}, nil)
		}},
		{"**int64", func(b *box.Box) error {
			type req struct {
				P **int64 `amp:"p"`
			}
			var nilp *int64
			return amp.NewCommand[req, empty]("N", amp.Spec{}).EncodeArgs(b, &req{P: &nilp}, nil)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var b box.Box
			err := tt.enc(&b)
			var ae *amp.ArgumentError
			if !errors.As(err, &ae) || !errors.Is(err, amp.ErrInvalidValue) {
				t.Fatalf("err = %v, want an *ArgumentError wrapping ErrInvalidValue", err)
			}
		})
	}
	// Non-nil pointers in lists still go as their values.
	type req struct {
		L []*int64 `amp:"l"`
	}
	var b box.Box
	if err := amp.NewCommand[req, empty]("N", amp.Spec{}).EncodeArgs(&b, &req{L: []*int64{p, p}}, nil); err != nil {
		t.Fatal(err)
	}
	if got := b.GetString("l"); got != "\x00\x011\x00\x011" {
		t.Fatalf("l = %q", got)
	}
}
