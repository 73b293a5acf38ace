package mux

import (
	"errors"
	"io"
	"net"
)

// Class is a kind of connection the mux tells apart.
type Class int

const (
	ClassAMP   Class = iota // first bytes 0x00, then 0x01..0xff
	ClassTLS                // a TLS handshake record: 0x16 0x03
	ClassHTTP2              // the HTTP/2 connection preface (h2c, prior knowledge)
	ClassHTTP1              // an HTTP/1.x request line
	ClassOther              // anything else, when Config.Other is set
	numClasses
)

var classNames = [...]string{"amp", "tls", "http2", "http1", "other"}

func (c Class) String() string {
	if c >= 0 && c < numClasses {
		return classNames[c]
	}
	return "unknown"
}

// firstRead is how much the first matcher asks for: whatever has arrived,
// up to this, comes in one read, and the later matchers find it buffered.
const firstRead = 256

// matchAMP: a box starts with a 2-byte key length of 1..255.
func matchAMP(r io.Reader) bool {
	var b [firstRead]byte
	n := 0
	for n < 2 {
		m, err := r.Read(b[n:])
		n += m
		if err != nil && n < 2 {
			return false
		}
	}
	return b[0] == 0 && b[1] != 0
}

// matchTLS: a handshake record of TLS 1.0 to 1.3 (record version 3.x).
func matchTLS(r io.Reader) bool {
	var b [2]byte
	if _, err := io.ReadFull(r, b[:]); err != nil {
		return false
	}
	return b[0] == 0x16 && b[1] == 0x03
}

const http2Preface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

// matchHTTP2 fails as soon as the bytes differ from the preface: a whole
// HTTP/1 request can be shorter than it ("GET / HTTP/1.0\r\n\r\n" is 18
// bytes), and its client waits for an answer, not to send more.
func matchHTTP2(r io.Reader) bool {
	var b [len(http2Preface)]byte
	n := 0
	for n < len(b) {
		m, err := r.Read(b[n:])
		n += m
		if string(b[:n]) != http2Preface[:n] {
			return false
		}
		if err != nil && n < len(b) {
			return false
		}
	}
	return true
}

// maxMethod is the longest method matchHTTP1 takes (RFC 9110's longest is
// 7 bytes, WebDAV's 16).
const maxMethod = 20

// matchHTTP1 accepts a request line that starts with a method token (RFC
// 9110's methods, PATCH, WebDAV's, any extension in upper case) followed by
// a space and the start of a request target. It reads at most
// maxMethod+2 bytes, a few at a time.
func matchHTTP1(r io.Reader) bool {
	var b [maxMethod + 2]byte
	n := 0
	for n < len(b) {
		m, err := r.Read(b[n:min(n+8, len(b))])
		n += m
		for i := 0; i < n; i++ {
			c := b[i]
			switch {
			case c == ' ':
				if i < 3 || i > maxMethod { // the longest fits with the target's first byte in b
					return false
				}
				if i+1 < n {
					return isTargetStart(b[i+1])
				}
				return readTargetStart(r)
			case c >= 'A' && c <= 'Z' || c == '-' || c == '_':
			default:
				return false
			}
		}
		if err != nil {
			return false
		}
	}
	return false
}

func readTargetStart(r io.Reader) bool {
	var b [1]byte
	if _, err := io.ReadFull(r, b[:]); err != nil {
		return false
	}
	return isTargetStart(b[0])
}

// isTargetStart: origin-form "/", asterisk-form "*", absolute-form
// "http:", authority-form (CONNECT) "host:port".
func isTargetStart(c byte) bool {
	return c == '/' || c == '*' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '['
}

func matchAny(io.Reader) bool { return true }

// matchTimedOut matches a connection whose sniffing deadline has passed:
// it reads past what the other matchers saw until the read fails.
func matchTimedOut(r io.Reader) bool {
	var b [64]byte
	for range sniffCap / len(b) {
		_, err := r.Read(b[:])
		if err != nil {
			var ne net.Error
			return errors.As(err, &ne) && ne.Timeout()
		}
	}
	return false
}
