package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/ampmux/ampmux/amp"
	"github.com/ampmux/ampmux/amp/box"
)

func init() {
	c := &command{
		name:    "call",
		usage:   "COMMAND [key=value ...]",
		summary: "Call one AMP command and print its answer as JSON (curl for AMP; any AMP server, Twisted's included).",
		example: `  ampmux call --server 127.0.0.1:1234 Sum a=13 b=81
  {"total":"94"}

  ampmux call --server 127.0.0.1:1234 Divide numerator=1 denominator=0
  ZERO_DIVISION: division by zero        (on stderr; exit status 3)

  # over TLS (any TLS flag makes it StartTLS first):
  ampmux call --server gw.example.com:443 --ca ca.pem Sum a=1 b=2

Values are sent as raw strings: the AMP schema is the server's business
(Integer 13 is "13", Boolean is "True"/"False"). An argument splits at its
first '='; a value may be empty, a key may not be empty, start with '_' or
repeat. Flags go before COMMAND.

The answer is one JSON object on one line, keys sorted, every value a JSON
string, without "_answer". Bytes that are not UTF-8 (in keys or values) are
written as the escapes \udc80 to \udcff, one per byte, as Python's
"surrogateescape" does; valid UTF-8 never produces those, so the exact bytes
come back with json.loads(s)[k].encode("utf-8", "surrogateescape").

Exit status: 0 answer printed; 3 error answer ("CODE: description" on stderr);
1 connection failure or timeout; 2 bad usage.`,
	}
	c.run = func(e *env, args []string) error { return runCall(c, e, args) }
	register(c)
}

func runCall(c *command, e *env, args []string) error {
	fs := c.newFlags(e)
	server := fs.String("server", "", "`HOST:PORT` of the AMP server (required)")
	timeout := fs.Duration("timeout", 10*time.Second, "bound on connecting, StartTLS and the answer")
	var tf tlsFlags
	tf.register(fs)
	if err := parseQuiet(fs, args); err != nil {
		return err
	}
	if *server == "" {
		return usagef("--server is required")
	}
	if err := checkHostPort(*server); err != nil {
		return err
	}
	if *timeout <= 0 {
		return usagef("--timeout must be positive")
	}
	if fs.NArg() == 0 {
		return usagef("missing COMMAND")
	}
	name := fs.Arg(0)
	if err := checkCallName(name); err != nil {
		return err
	}
	callArgs, err := parseCallArgs(fs.Args()[1:])
	if err != nil {
		return err
	}
	var tlsCfg *tls.Config
	if tf.given() {
		cfg, err := tf.config(*server)
		if err != nil {
			return err
		}
		tlsCfg = cfg
	}

	ctx := e.ctx
	if ctx == nil {
		ctx = context.Background()
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	ac, err := startAMP(ctx, *server, tlsCfg)
	if err != nil {
		return err
	}
	defer ac.Close()
	reply, err := ac.Call(ctx, name, callArgs)
	if err != nil {
		var re *amp.RemoteError
		if errors.As(err, &re) {
			fmt.Fprintln(e.stderr, remoteErrorLine(re))
			return exitError{code: exitRemoteErr, err: errors.New("")}
		}
		if ctx.Err() != nil {
			return fmt.Errorf("%s: no answer from %s within %v", name, *server, *timeout)
		}
		return fmt.Errorf("%s: %v", name, err)
	}
	reply.Delete(amp.KeyAnswer)
	_, err = e.stdout.Write(appendBoxJSON(nil, reply))
	return err
}

// checkCallName refuses command names no server can answer.
func checkCallName(name string) error {
	switch {
	case name == "":
		return usagef("empty COMMAND")
	case len(name) > box.MaxValueLength:
		return usagef("COMMAND is longer than %d bytes", box.MaxValueLength)
	case strings.HasPrefix(name, "-"):
		return usagef("flags go before COMMAND: %q", name)
	}
	return nil
}

// parseCallArgs turns key=value arguments into a box.
func parseCallArgs(args []string) (*box.Box, error) {
	b := &box.Box{}
	for _, a := range args {
		k, v, ok := strings.Cut(a, "=")
		switch {
		case !ok && strings.HasPrefix(a, "-"):
			return nil, usagef("argument %q is not key=value (flags go before COMMAND)", a)
		case !ok:
			return nil, usagef("argument %q is not key=value", a)
		case k == "":
			return nil, usagef("argument %q has an empty key", a)
		case k[0] == '_':
			return nil, usagef("key %q starts with '_': those keys belong to the protocol", k)
		case len(k) > box.MaxKeyLength:
			return nil, usagef("key %.20q... is longer than %d bytes", k, box.MaxKeyLength)
		case len(v) > box.MaxValueLength:
			return nil, usagef("value of %q is longer than %d bytes", k, box.MaxValueLength)
		case b.Has(k):
			return nil, usagef("key %q given twice", k)
		}
		b.SetString(k, v)
	}
	return b, nil
}

// appendBoxJSON writes b as one JSON object with its keys sorted (by
// bytes) and a newline.
func appendBoxJSON(dst []byte, b *box.Box) []byte {
	idx := make([]int, b.Len())
	for i := range idx {
		idx[i] = i
	}
	sort.Slice(idx, func(x, y int) bool { return bytes.Compare(b.Key(idx[x]), b.Key(idx[y])) < 0 })
	dst = append(dst, '{')
	for n, i := range idx {
		if n > 0 {
			dst = append(dst, ',')
		}
		dst = appendJSONString(dst, b.Key(i))
		dst = append(dst, ':')
		dst = appendJSONString(dst, b.Value(i))
	}
	return append(dst, '}', '\n')
}

// appendJSONString writes p as a JSON string. Valid UTF-8 is written as
// is, apart from the escapes JSON requires; each byte that is not part of
// valid UTF-8 becomes \udc80-\udcff (Python's surrogateescape), which no
// valid UTF-8 text produces, so the bytes can be recovered exactly.
func appendJSONString(dst, p []byte) []byte {
	const hex = "0123456789abcdef"
	dst = append(dst, '"')
	for i := 0; i < len(p); {
		c := p[i]
		if c < utf8.RuneSelf {
			switch {
			case c == '"' || c == '\\':
				dst = append(dst, '\\', c)
			case c == '\n':
				dst = append(dst, '\\', 'n')
			case c == '\r':
				dst = append(dst, '\\', 'r')
			case c == '\t':
				dst = append(dst, '\\', 't')
			case c < 0x20 || c == 0x7f:
				dst = append(dst, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
			default:
				dst = append(dst, c)
			}
			i++
			continue
		}
		r, size := utf8.DecodeRune(p[i:])
		if r == utf8.RuneError && size == 1 {
			dst = append(dst, '\\', 'u', 'd', 'c', hex[c>>4], hex[c&0xf])
			i++
			continue
		}
		if r == '\u2028' || r == '\u2029' { // valid JSON, but not in JavaScript strings
			dst = append(dst, '\\', 'u', '2', '0', '2', hex[r&0xf])
		} else {
			dst = append(dst, p[i:i+size]...)
		}
		i += size
	}
	return append(dst, '"')
}
