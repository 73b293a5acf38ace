package mux

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/pires/go-proxyproto"
)

// bytesConn is a connection whose peer sent data, arriving chunk bytes at
// a time, then closed.
type bytesConn struct {
	net.Conn
	r     *bytes.Reader
	chunk int
}

func (c *bytesConn) Read(p []byte) (int, error) { return c.r.Read(p[:min(len(p), c.chunk)]) }
func (c *bytesConn) RemoteAddr() net.Addr {
	return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 9}
}
func (c *bytesConn) LocalAddr() net.Addr { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 80} }
func (c *bytesConn) Close() error        { return nil }

// FuzzProxyHeader: whatever a trusted source sends, reading it through
// the mux's connection never panics, and it agrees with go-proxyproto's
// own reading: a header it accepts gives its source address and the
// bytes after it intact; one it refuses is a read error; none leaves the
// bytes untouched.
func FuzzProxyHeader(f *testing.F) {
	for _, s := range []string{
		"", "\x00\x04_ask", "GET / HTTP/1.0\r\n\r\n", "PROXY TCP4 203.0.113.7 198.51.100.1 4242 443\r\nrest",
		"PROXY TCP6 2001:db8::1 2001:db8::2 1 2\r\n\x00\x01", "PROXY UNKNOWN\r\nx", "PROXY TCP4 1.2.3.4\r\n",
		"PROXY " + string(bytes.Repeat([]byte("9"), 200)),
	} {
		f.Add([]byte(s), uint8(0))
		f.Add([]byte(s), uint8(3))
	}
	v2, _ := proxyproto.HeaderProxyFromAddrs(2, &net.TCPAddr{IP: net.ParseIP("203.0.113.7"), Port: 4242},
		&net.TCPAddr{IP: net.ParseIP("198.51.100.1"), Port: 443}).Format()
	f.Add(append(v2, "after"...), uint8(0))
	f.Add(v2[:15], uint8(1))
	f.Fuzz(func(t *testing.T, data []byte, chunk uint8) {
		c := int(chunk)
		if c == 0 {
			c = len(data) + 1
		}
		tb := newTable(limits{sniffing: 10, sniffingPerSource: 10, conns: 10, connsPerSource: 10, timeout: time.Hour, short: time.Hour})
		key := netip.MustParsePrefix("127.0.0.1/32")
		sc, _, _ := tb.admit(&bytesConn{r: bytes.NewReader(data), chunk: c}, key, time.Now(), true)
		sc.needHeader = true
		got, err := io.ReadAll(sc)

		// go-proxyproto reads the same arrival: it refuses a v1 header
		// that does not come in one read, as the spec allows.
		br := bufio.NewReaderSize(&bytesConn{r: bytes.NewReader(data), chunk: c}, proxyBuffer)
		h, perr := proxyproto.Read(br)
		rest, _ := io.ReadAll(br)
		switch {
		case errors.Is(perr, proxyproto.ErrNoProxyProtocol):
			if err != nil || !bytes.Equal(got, data) {
				t.Fatalf("no header in %q: read %q, %v", data, got, err)
			}
		case perr != nil:
			if err == nil {
				t.Fatalf("%q: go-proxyproto says %v; the mux read %q without error", data, perr, got)
			}
		default:
			if err != nil {
				t.Fatalf("%q: a header go-proxyproto accepts (%v) refused: %v", data, h, err)
			}
			if _, ok := h.SourceAddr.(*net.TCPAddr); ok && !h.Command.IsLocal() && sc.RemoteAddr().String() != h.SourceAddr.String() {
				t.Fatalf("%q: RemoteAddr %v, the header says %v", data, sc.RemoteAddr(), h.SourceAddr)
			}
			if !bytes.Equal(got, rest) {
				t.Fatalf("%q: read %q after the header, want %q", data, got, rest)
			}
		}
		sc.Close()
		if st := tb.stats(); st.Open != 0 || st.Sources != 0 {
			t.Fatalf("%q: the table still counts %+v", data, st)
		}
	})
}
