package box

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
	"testing/iotest"
)

func mk(kv ...string) *Box {
	b := &Box{}
	for i := 0; i < len(kv); i += 2 {
		b.SetString(kv[i], kv[i+1])
	}
	return b
}

func TestAppendWireBytes(t *testing.T) {
	tests := []struct {
		name string
		box  *Box
		want string
	}{
		{"empty", mk(), "\x00\x00"},
		{"one", mk("a", "b"), "\x00\x01a\x00\x01b\x00\x00"},
		{"empty value", mk("k", ""), "\x00\x01k\x00\x00\x00\x00"},
		{"sorted bytewise", mk("b", "2", "_ask", "1", "B", "3", "a", "4"),
			"\x00\x01B\x00\x013\x00\x04_ask\x00\x011\x00\x01a\x00\x014\x00\x01b\x00\x012\x00\x00"},
		{"high bytes sort last", mk("\xff", "x", "\x01", "y"), "\x00\x01\x01\x00\x01y\x00\x01\xff\x00\x01x\x00\x00"},
		{"binary value", mk("v", "\x00\x00\xff"), "\x00\x01v\x00\x03\x00\x00\xff\x00\x00"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Append(nil, tt.box)
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != tt.want {
				t.Fatalf("Append = %q, want %q", got, tt.want)
			}
			if n := tt.box.EncodedLen(); n != len(got) {
				t.Fatalf("EncodedLen = %d, wrote %d", n, len(got))
			}
		})
	}
}

func TestAppendLimits(t *testing.T) {
	tests := []struct {
		name    string
		box     *Box
		wantErr error
		isKey   bool
		length  int
	}{
		{"key 255 ok", mk(strings.Repeat("k", 255), "v"), nil, false, 0},
		{"key 256", mk(strings.Repeat("k", 256), "v"), nil, true, 256},
		{"value 65535 ok", mk("k", strings.Repeat("v", 65535)), nil, false, 0},
		{"value 65536", mk("k", strings.Repeat("v", 65536)), nil, false, 65536},
		{"empty key", mk("", "v"), ErrEmptyKey, false, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dst := []byte("keep")
			got, err := Append(dst, tt.box)
			var tl *TooLongError
			switch {
			case tt.wantErr != nil:
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("err = %v, want %v", err, tt.wantErr)
				}
			case tt.length != 0:
				if !errors.As(err, &tl) || tl.Key != tt.isKey || !tl.Local || tl.Len != tt.length {
					t.Fatalf("err = %#v, want TooLongError key=%v len=%d", err, tt.isKey, tt.length)
				}
				if !strings.HasPrefix(err.Error(), "box: ") {
					t.Fatalf("error text %q lacks package prefix", err)
				}
			default:
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if string(got) != "keep" {
				t.Fatalf("dst changed on error: %q", got)
			}
		})
	}
}

func TestBoxSetGetDelete(t *testing.T) {
	b := mk("a", "1", "b", "2")
	b.SetString("a", "one")
	b.Set("c", []byte{0, 1})
	if v, ok := b.Get("a"); !ok || string(v) != "one" {
		t.Fatalf("Get(a) = %q %v", v, ok)
	}
	if b.Len() != 3 {
		t.Fatalf("Len = %d", b.Len())
	}
	b.Delete("b")
	if b.Has("b") || b.Len() != 2 {
		t.Fatalf("after Delete: %v", b)
	}
	b.AppendValue("d", func(dst []byte) []byte { return append(dst, "appended"...) })
	if b.GetString("d") != "appended" {
		t.Fatalf("AppendValue: %v", b)
	}
	want := map[string]string{"a": "one", "c": "\x00\x01", "d": "appended"}
	if !b.Equal(FromMap(want)) {
		t.Fatalf("Equal: %v vs %v", b, want)
	}
	if got := b.String(); got != `Box{a: "one", c: "\x00\x01", d: "appended"}` {
		t.Fatalf("String = %s", got)
	}
	b.Reset()
	if b.Len() != 0 || b.Has("a") {
		t.Fatal("Reset left fields")
	}
}

func encodeAll(t testing.TB, boxes ...*Box) []byte {
	var out []byte
	for _, b := range boxes {
		var err error
		if out, err = Append(out, b); err != nil {
			t.Fatal(err)
		}
	}
	return out
}

// Every way a stream can be cut into reads must give the same boxes.
func TestDecodeEveryReadSplit(t *testing.T) {
	boxes := []*Box{
		mk("_ask", "1", "_command", "Sum", "a", "13", "b", "81"),
		mk(),
		mk("big", strings.Repeat("x", 40000), "k", ""),
		mk(strings.Repeat("K", 255), "\x00\x00"),
	}
	stream := encodeAll(t, boxes...)
	readers := map[string]func() io.Reader{
		"whole":      func() io.Reader { return bytes.NewReader(stream) },
		"onebyte":    func() io.Reader { return iotest.OneByteReader(bytes.NewReader(stream)) },
		"halfreader": func() io.Reader { return iotest.HalfReader(bytes.NewReader(stream)) },
		"dataerr":    func() io.Reader { return iotest.DataErrReader(bytes.NewReader(stream)) },
	}
	for name, r := range readers {
		t.Run(name, func(t *testing.T) {
			d := NewDecoder(r())
			for i, want := range boxes {
				var got Box
				if err := d.Decode(&got); err != nil {
					t.Fatalf("box %d: %v", i, err)
				}
				if !got.Equal(want) {
					t.Fatalf("box %d = %v, want %v", i, &got, want)
				}
			}
			var b Box
			if err := d.Next(&b); err != io.EOF {
				t.Fatalf("at end: %v, want io.EOF", err)
			}
			if err := d.Next(&b); err != io.EOF {
				t.Fatalf("again at end: %v, want io.EOF", err)
			}
		})
	}
	// And every split point of the stream into two reads.
	for cut := 0; cut <= len(stream); cut += 97 {
		d := NewDecoder(io.MultiReader(bytes.NewReader(stream[:cut]), bytes.NewReader(stream[cut:])))
		for i, want := range boxes {
			var got Box
			if err := d.Next(&got); err != nil || !got.Equal(want) {
				t.Fatalf("cut %d box %d: %v %v", cut, i, err, &got)
			}
		}
	}
}

func TestDecodeErrors(t *testing.T) {
	ok := encodeAll(t, mk("a", "b"))
	tests := []struct {
		name   string
		stream string
		check  func(error) bool
	}{
		{"eof in key length", string(ok) + "\x00", func(err error) bool { return errors.Is(err, io.ErrUnexpectedEOF) }},
		{"eof in key", string(ok) + "\x00\x05ab", func(err error) bool { return errors.Is(err, io.ErrUnexpectedEOF) }},
		{"eof in value length", string(ok) + "\x00\x01a\x00", func(err error) bool { return errors.Is(err, io.ErrUnexpectedEOF) }},
		{"eof in value", string(ok) + "\x00\x01a\x00\x09xyz", func(err error) bool { return errors.Is(err, io.ErrUnexpectedEOF) }},
		{"eof before terminator", string(ok) + "\x00\x01a\x00\x01b", func(err error) bool { return errors.Is(err, io.ErrUnexpectedEOF) }},
		{"key 256", string(ok) + "\x01\x00", func(err error) bool {
			var tl *TooLongError
			return errors.As(err, &tl) && tl.Key && !tl.Local && tl.Len == 256
		}},
		{"key 0xffff", string(ok) + "\xff\xff", func(err error) bool {
			var tl *TooLongError
			return errors.As(err, &tl) && tl.Key && tl.Len == 0xffff
		}},
		{"duplicate", string(ok) + "\x00\x01a\x00\x00\x00\x01a\x00\x00\x00\x00", func(err error) bool {
			var de *DuplicateKeyError
			return errors.Is(err, ErrDuplicateKey) && errors.As(err, &de) && de.Key == "a"
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := NewDecoder(iotest.OneByteReader(strings.NewReader(tt.stream)))
			var b Box
			if err := d.Next(&b); err != nil {
				t.Fatalf("first box: %v", err)
			}
			err := d.Next(&b)
			if err == nil || !tt.check(err) {
				t.Fatalf("err = %v (%T)", err, err)
			}
			if !strings.HasPrefix(err.Error(), "box: ") {
				t.Fatalf("error %q lacks prefix", err)
			}
			if err2 := d.Next(&b); err2 == nil || err2 == io.EOF {
				t.Fatalf("error not sticky: %v", err2)
			}
		})
	}
}

func TestDecodeDuplicateKeyManyFields(t *testing.T) {
	var sb strings.Builder
	for i := 0; i < 40; i++ {
		k := string(rune('A' + i))
		sb.WriteString("\x00\x01" + k + "\x00\x00")
	}
	sb.WriteString("\x00\x01C\x00\x00\x00\x00") // C again, found by the map
	d := NewDecoder(strings.NewReader(sb.String()))
	var b Box
	if err := d.Next(&b); !errors.Is(err, ErrDuplicateKey) {
		t.Fatalf("err = %v", err)
	}
}

func TestDecodeMaxBoxSize(t *testing.T) {
	big := encodeAll(t, mk("a", strings.Repeat("x", 60000), "b", strings.Repeat("y", 60000)))
	d := NewDecoder(bytes.NewReader(big))
	d.SetMaxBoxSize(100000)
	var b Box
	if err := d.Next(&b); !errors.Is(err, ErrBoxTooLarge) {
		t.Fatalf("err = %v, want ErrBoxTooLarge", err)
	}
	d = NewDecoder(bytes.NewReader(big))
	d.SetMaxBoxSize(len(big))
	if err := d.Next(&b); err != nil {
		t.Fatalf("box of exactly the limit: %v", err)
	}
}

// A hostile stream of maximal fields must stop at the limit without the
// buffer growing past it.
func TestDecodeHostileGrowthBounded(t *testing.T) {
	field := "\x00\x01k" + "\xff\xff" + strings.Repeat("v", 0xffff)
	r := &countingReader{field: field}
	d := NewDecoder(r)
	d.SetMaxBoxSize(1 << 20)
	var b Box
	err := d.Next(&b)
	if !errors.Is(err, ErrBoxTooLarge) && !errors.Is(err, ErrDuplicateKey) {
		t.Fatalf("err = %v", err)
	}
	if cap(d.buf) > 2<<20 {
		t.Fatalf("buffer grew to %d", cap(d.buf))
	}
}

type countingReader struct {
	field string
	n     int
	pos   int
}

// Read yields distinct keys so only the size limit can stop it.
func (r *countingReader) Read(p []byte) (int, error) {
	if r.pos == 0 {
		r.n++
	}
	f := []byte(r.field)
	f[2] = byte(r.n)
	n := copy(p, f[r.pos:])
	r.pos = (r.pos + n) % len(f)
	return n, nil
}

func TestNextAliasesUntilNextCall(t *testing.T) {
	stream := encodeAll(t, mk("a", "1"), mk("a", "2"))
	d := NewDecoder(bytes.NewReader(stream))
	var b1 Box
	if err := d.Next(&b1); err != nil {
		t.Fatal(err)
	}
	c := b1.Clone()
	b1.SetString("new", "field") // must not scribble on the decoder's buffer
	var b2 Box
	if err := d.Next(&b2); err != nil {
		t.Fatal(err)
	}
	if c.GetString("a") != "1" || b2.GetString("a") != "2" || b1.GetString("a") != "1" {
		t.Fatalf("got %v %v %v", c, &b1, &b2)
	}
}

func TestBuffered(t *testing.T) {
	stream := append(encodeAll(t, mk("_answer", "1")), "inner protocol bytes"...)
	d := NewDecoder(bytes.NewReader(stream))
	var b Box
	if err := d.Next(&b); err != nil {
		t.Fatal(err)
	}
	if got := string(d.Buffered()); got != "inner protocol bytes" {
		t.Fatalf("Buffered = %q", got)
	}
	d.Reset(strings.NewReader(string(encodeAll(t, mk("x", "y")))))
	if err := d.Next(&b); err != nil || b.GetString("x") != "y" {
		t.Fatalf("after Reset: %v %v", err, &b)
	}
}

func TestZeroAllocs(t *testing.T) {
	req := mk("_ask", "1f", "_command", "Sum", "a", "13", "b", "81")
	buf := make([]byte, 0, 256)
	if n := testing.AllocsPerRun(100, func() {
		buf, _ = Append(buf[:0], req)
	}); n != 0 {
		t.Fatalf("Append allocs = %v", n)
	}
	stream := bytes.Repeat(encodeAll(t, req), 200)
	r := bytes.NewReader(stream)
	d := NewDecoder(r)
	var b Box
	_ = d.Next(&b)
	if n := testing.AllocsPerRun(100, func() {
		if err := d.Next(&b); err != nil {
			r.Reset(stream)
			d.Reset(r)
		}
	}); n != 0 {
		t.Fatalf("Next allocs = %v", n)
	}
	var reused Box
	if n := testing.AllocsPerRun(100, func() {
		if err := d.Decode(&reused); err != nil {
			r.Reset(stream)
			d.Reset(r)
		}
	}); n != 0 {
		t.Fatalf("Decode into reused box allocs = %v", n)
	}
	if n := testing.AllocsPerRun(100, func() {
		req.SetString("_ask", "20")
	}); n != 0 {
		t.Fatalf("SetString allocs = %v", n)
	}
}
