package mux

import (
	"bytes"
	"io"
	"os"
	"testing"

	"github.com/pires/go-proxyproto"
)

// replay gives each matcher what cmux's bufferedReader gives it: first
// the bytes the matchers before it read (one copy per Read, with the error
// that ended them, if any), then the connection's.
type replay struct {
	src       *chunked
	buf       []byte
	off, size int // the next byte to replay, and where the replay ends
	lastErr   error
	given     int // bytes this matcher got
}

// reset starts the replay for the next matcher.
func (r *replay) reset() { r.off, r.size, r.given = 0, len(r.buf), 0 }

func (r *replay) Read(p []byte) (int, error) {
	if r.off < r.size {
		n := copy(p, r.buf[r.off:r.size])
		r.off += n
		r.given += n
		return n, r.lastErr
	}
	n, err := r.src.Read(p)
	r.given += n
	if n > 0 {
		r.lastErr = err
		r.buf = append(r.buf, p[:n]...)
	}
	return n, err
}

// chunked is a connection's bytes arriving at most chunk at a time, then
// end: io.EOF if the client closed, a timeout if the deadline passed.
type chunked struct {
	data  []byte
	chunk int
	end   error
	read  int
}

func (c *chunked) Read(p []byte) (int, error) {
	if c.read == len(c.data) {
		return 0, c.end
	}
	n := copy(p[:min(len(p), c.chunk)], c.data[c.read:])
	c.read += n
	return n, nil
}

// matchers are the mux's, in its order, OnTimeout's (as ClassOther) last,
// each with the most its comment says it reads.
var matchers = []struct {
	c    Class
	f    func(io.Reader) bool
	most int
}{
	{ClassAMP, matchAMP, firstRead},
	{ClassTLS, matchTLS, 2},
	{classProxy, matchProxyHeader, 12},
	{ClassHTTP2, matchHTTP2, len(http2Preface)},
	{ClassHTTP1, matchHTTP1, maxMethod + 2},
	{ClassOther, matchTimedOut, sniffCap},
}

// sniff runs the matchers and returns the class that took the connection
// (-1: none) and how many bytes they read from it; it fails t if one reads
// more than its share.
func sniff(t *testing.T, data []byte, chunk int, end error) (Class, int) {
	src := &chunked{data: data, chunk: chunk, end: end}
	r := &replay{src: src}
	for _, m := range matchers {
		r.reset()
		matched := m.f(r)
		if r.given > m.most {
			t.Fatalf("the %v matcher read %d bytes; it reads at most %d", m.c, r.given, m.most)
		}
		if matched {
			return m.c, src.read
		}
	}
	return -1, src.read
}

// classProxy stands for the refusal of a PROXY header in the sniffed bytes.
const classProxy Class = -2

// expected is the class by the rules in match.go's comments, read off the
// whole input: what the matchers see is a prefix of it. ClassOther stands
// for the OnTimeout route.
func expected(b []byte, timedOut bool) (c Class, sure bool) {
	switch {
	case len(b) >= 2 && b[0] == 0 && b[1] != 0:
		return ClassAMP, true
	case len(b) >= 2 && b[0] == 0x16 && b[1] == 0x03:
		return ClassTLS, true
	case bytes.HasPrefix(b, proxyproto.SIGV1) || bytes.HasPrefix(b, proxyproto.SIGV2):
		return classProxy, true
	case bytes.HasPrefix(b, []byte(http2Preface)):
		return ClassHTTP2, true
	case isRequestLine(b):
		return ClassHTTP1, true
	case timedOut:
		// matchTimedOut reads 64 bytes at a time, sniffCap in all: a
		// stream that ends within that many reads, however it arrives, is
		// sure to be seen ending.
		return ClassOther, len(b) < sniffCap/64
	}
	return -1, true
}

// isRequestLine: a method of 3..maxMethod bytes of A-Z, '-', '_', a space,
// and a byte that can start a request target.
func isRequestLine(b []byte) bool {
	for i, c := range b {
		switch {
		case c == ' ':
			return i >= 3 && i <= maxMethod && i+1 < len(b) && isTargetStart(b[i+1])
		case c >= 'A' && c <= 'Z' || c == '-' || c == '_':
		default:
			return false
		}
	}
	return false
}

// FuzzSniff feeds the matchers a connection's first bytes, in chunks of
// any size, ending with EOF or a timeout: none panics or reads more than
// sniffCap bytes, and the class is the one match.go's rules give.
func FuzzSniff(f *testing.F) {
	seeds := []string{
		"", "\x00", "\x00\x00", "\x00\x04Ping\x00\x00",
		"\x00\x04_ask\x00\x011\x00\x08_command\x00\x03Sum\x00\x00",
		"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", "\x16\x02", "\x16",
		http2Preface, http2Preface[:23], "PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: x\r\n\r\n", "GET / HTTP/1.0\r\n\r\n", "GET", "GET ", "GE /",
		"PATCH /x HTTP/1.1\r\n", "PROPFIND / HTTP/1.1\r\n", "OPTIONS * HTTP/1.1\r\n",
		"CONNECT example.com:443 HTTP/1.1\r\n", "GET http://x/ HTTP/1.1\r\n", "M-SEARCH * HTTP/1.1\r\n",
		"ABCDEFGHIJKLMNOPQRST /", "ABCDEFGHIJKLMNOPQRSTU /", "ABCDEFGHIJKLMNOPQRSTUV /",
		"get / HTTP/1.1\r\n", "GET\t/", "GET  /",
		"\x00\x00\x00\x08\x04\xd2\x16\x2f", "\x7fELF", "SSH-2.0-OpenSSH_9.6\r\n",
		"\x00\xff" + string(bytes.Repeat([]byte("k"), 300)),
		"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n", "PROXY", "PROX", "PUT / HTTP/1.1\r\n", string(proxyproto.SIGV2), string(proxyproto.SIGV2[:11]),
	}
	for _, s := range seeds {
		for _, chunk := range []uint16{0, 1, 7} {
			f.Add([]byte(s), chunk, false)
			f.Add([]byte(s), chunk, true)
		}
	}
	f.Add(bytes.Repeat([]byte("A"), sniffCap+100), uint16(0), true)
	f.Fuzz(func(t *testing.T, data []byte, chunk uint16, timedOut bool) {
		end := io.EOF
		if timedOut {
			end = os.ErrDeadlineExceeded
		}
		c := int(chunk)
		if c == 0 {
			c = len(data) + 1 // all at once
		}
		got, read := sniff(t, data, c, end)
		if read > sniffCap {
			t.Fatalf("the matchers read %d bytes; the cap is %d", read, sniffCap)
		}
		want, sure := expected(data, timedOut)
		switch {
		case got == want:
		case !sure && got == -1:
		default:
			t.Fatalf("%q in chunks of %d, timed out %v: class %v, want %v", data, c, timedOut, got, want)
		}
	})
}
