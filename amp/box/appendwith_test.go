package box

import (
	"bytes"
	"errors"
	"strings"
	"testing"
)

func TestAppendWith(t *testing.T) {
	long := strings.Repeat("k", 256)
	many := &Box{}
	for i := range 40 {
		many.SetString(string(rune('A'+i%26))+strings.Repeat("x", i), "v")
	}
	tests := []struct {
		name  string
		b     *Box
		extra []Field
		err   error // nil: same bytes as Append of the union
	}{
		{"Sum call", mk("b", "81", "a", "13"), []Field{{"_command", []byte("Sum")}, {"_ask", []byte("1f")}}, nil},
		{"empty box", &Box{}, []Field{{"_command", []byte("Ping")}}, nil},
		{"no extra", mk("z", "1", "a", "2"), nil, nil},
		{"extra sorts last", mk("A", "1"), []Field{{"zz", nil}, {"_ask", []byte("1")}}, nil},
		{"prefix keys", mk("ab", "1", "a", "2"), []Field{{"abc", []byte("3")}, {"aa", nil}}, nil},
		{"large box", many, []Field{{"_ask", []byte("2")}, {"_command", []byte("Big")}}, nil},
		{"duplicate with box", mk("_ask", "1"), []Field{{"_ask", []byte("2")}}, ErrDuplicateKey},
		{"duplicate extras", mk("a", "1"), []Field{{"x", nil}, {"x", nil}}, ErrDuplicateKey},
		{"empty extra key", mk("a", "1"), []Field{{"", nil}}, ErrEmptyKey},
		{"long extra key", mk("a", "1"), []Field{{long, nil}}, nil},
		{"long extra value", mk("a", "1"), []Field{{"v", make([]byte, MaxValueLength+1)}}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := tt.b.String()
			got, err := AppendWith([]byte("prefix"), tt.b, tt.extra...)
			if tt.b.String() != before {
				t.Fatalf("AppendWith changed the box: %s -> %s", before, tt.b.String())
			}
			var tl *TooLongError
			switch {
			case strings.HasPrefix(tt.name, "long"):
				if !errors.As(err, &tl) || !tl.Local {
					t.Fatalf("got %v, want a local *TooLongError", err)
				}
				return
			case tt.err != nil:
				if !errors.Is(err, tt.err) {
					t.Fatalf("got %v, want %v", err, tt.err)
				}
				if string(got) != "prefix" {
					t.Fatalf("a failed AppendWith left %q in dst", got)
				}
				return
			case err != nil:
				t.Fatal(err)
			}
			var union Box
			union.CopyFrom(tt.b)
			for _, f := range tt.extra {
				union.Set(f.Key, f.Value)
			}
			want, err := Append([]byte("prefix"), &union)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want) {
				t.Fatalf("AppendWith wrote\n%q, Append of the union\n%q", got, want)
			}
		})
	}
}

func TestAppendWithDoesNotAllocate(t *testing.T) {
	args := mk("a", "13", "b", "81")
	buf := make([]byte, 0, 256)
	tag := []byte("1f")
	n := testing.AllocsPerRun(100, func() {
		buf, _ = AppendWith(buf[:0], args, Field{"_ask", tag}, Field{"_command", []byte("Sum")})
	})
	if n != 0 {
		t.Fatalf("%v allocations per AppendWith", n)
	}
}

// FuzzAppendWith: for any decodable box and extra keys, AppendWith writes
// what Append writes for the union, or refuses a duplicate.
func FuzzAppendWith(f *testing.F) {
	one, _ := Append(nil, mk("a", "13", "b", "81"))
	f.Add(one, "_ask", "_command")
	f.Add(one, "a", "zz")
	f.Add([]byte{0, 0}, "x", "x")
	f.Fuzz(func(t *testing.T, stream []byte, k1, k2 string) {
		var b Box
		if err := NewDecoder(bytes.NewReader(stream)).Decode(&b); err != nil {
			return
		}
		extra := []Field{{k1, []byte("v1")}, {k2, []byte("v2")}}
		got, err := AppendWith(nil, &b, extra...)
		var union Box
		union.CopyFrom(&b)
		dup := k1 == k2
		for _, f := range extra {
			if _, ok := union.Get(f.Key); ok {
				dup = true
			}
			union.Set(f.Key, f.Value)
		}
		want, werr := Append(nil, &union)
		switch {
		case dup:
			if err == nil && werr == nil {
				t.Fatalf("duplicate key accepted: %q %q in %s", k1, k2, b.String())
			}
		case (err == nil) != (werr == nil):
			t.Fatalf("AppendWith error %v, Append error %v", err, werr)
		case err == nil && !bytes.Equal(got, want):
			t.Fatalf("AppendWith %q != Append %q", got, want)
		}
	})
}

// A nil box is a call without arguments (conn.Call(ctx, "Ping", nil)).
func TestAppendWithNilBox(t *testing.T) {
	got, err := AppendWith(nil, nil, Field{Key: "_command", Value: []byte("Ping")})
	if err != nil {
		t.Fatal(err)
	}
	want, _ := AppendWith(nil, &Box{}, Field{Key: "_command", Value: []byte("Ping")})
	if !bytes.Equal(got, want) {
		t.Fatalf("nil box: %q, want %q", got, want)
	}
}
