package box

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The golden files are boxes serialized by Twisted itself
// (testdata/gen_golden.py); manifest.json says what each holds.
type goldenManifest struct {
	Files []struct {
		Name  string        `json:"name"`
		Boxes [][][2]string `json:"boxes"`
	} `json:"files"`
	Bad []struct {
		Name        string `json:"name"`
		Description string `json:"description"`
		BoxProtocol struct {
			Boxes            [][][2]string `json:"boxes"`
			ClosesConnection bool          `json:"closes_connection"`
		} `json:"box_protocol"`
	} `json:"bad"`
}

func loadManifest(t *testing.T) goldenManifest {
	raw, err := os.ReadFile("testdata/golden/manifest.json")
	if err != nil {
		t.Fatal(err)
	}
	var m goldenManifest
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

func b64(t *testing.T, s string) string {
	p, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return string(p)
}

// checkBox compares a decoded box with the manifest's pairs, in wire order.
func checkBox(t *testing.T, got *Box, want [][2]string) {
	t.Helper()
	if got.Len() != len(want) {
		t.Fatalf("box has %d fields, want %d: %v", got.Len(), len(want), got)
	}
	for i, kv := range want {
		if k, v := string(got.Key(i)), string(got.Value(i)); k != b64(t, kv[0]) || v != b64(t, kv[1]) {
			t.Fatalf("field %d = %q:%.40q, want %q:%.40q", i, k, v, b64(t, kv[0]), b64(t, kv[1]))
		}
	}
}

func TestGoldenTwistedBoxes(t *testing.T) {
	m := loadManifest(t)
	if len(m.Files) < 10 {
		t.Fatalf("manifest lists %d files", len(m.Files))
	}
	for _, f := range m.Files {
		t.Run(f.Name, func(t *testing.T) {
			raw, err := os.ReadFile(filepath.Join("testdata/golden", f.Name))
			if err != nil {
				t.Fatal(err)
			}
			d := NewDecoder(bytes.NewReader(raw))
			var again []byte
			for i, want := range f.Boxes {
				var b Box
				if err := d.Decode(&b); err != nil {
					t.Fatalf("box %d: %v", i, err)
				}
				checkBox(t, &b, want)
				if again, err = Append(again, &b); err != nil {
					t.Fatal(err)
				}
			}
			var b Box
			if err := d.Next(&b); err != io.EOF {
				t.Fatalf("after the boxes: %v", err)
			}
			if !bytes.Equal(again, raw) {
				t.Fatalf("re-encoded bytes differ from Twisted's")
			}
		})
	}
}

// TestGoldenBadStreams: on streams Twisted rejects or cuts short, we yield
// the same complete boxes first, then a typed error where Twisted gives up.
// One deliberate difference: a duplicate key, which Twisted silently
// resolves (last value wins), is an error here.
func TestGoldenBadStreams(t *testing.T) {
	m := loadManifest(t)
	for _, f := range m.Bad {
		t.Run(f.Name, func(t *testing.T) {
			raw, err := os.ReadFile(filepath.Join("testdata/golden", f.Name))
			if err != nil {
				t.Fatal(err)
			}
			d := NewDecoder(bytes.NewReader(raw))
			dup := strings.Contains(f.Name, "duplicate")
			want := f.BoxProtocol.Boxes
			if dup {
				want = want[:len(want)-1]
			}
			for i, wb := range want {
				var b Box
				if err := d.Decode(&b); err != nil {
					t.Fatalf("box %d: %v", i, err)
				}
				// Twisted reports these as dicts: compare as sets.
				wantBox := &Box{}
				for _, kv := range wb {
					wantBox.SetString(b64(t, kv[0]), b64(t, kv[1]))
				}
				if !b.Equal(wantBox) {
					t.Fatalf("box %d = %v, want %v", i, &b, wantBox)
				}
			}
			var b Box
			err = d.Next(&b)
			var tl *TooLongError
			switch {
			case dup:
				if !errors.Is(err, ErrDuplicateKey) {
					t.Fatalf("duplicate key: %v", err)
				}
			case strings.Contains(f.Name, "truncated"):
				if !errors.Is(err, io.ErrUnexpectedEOF) {
					t.Fatalf("truncated: %v", err)
				}
			case strings.Contains(f.Name, "key_length"):
				if !errors.As(err, &tl) || !tl.Key || tl.Local {
					t.Fatalf("long key: %v", err)
				}
			default:
				if err != io.EOF {
					t.Fatalf("at end: %v", err)
				}
			}
		})
	}
}
