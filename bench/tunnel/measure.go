package main

// The client side of each measurement. Every one dials a fresh
// connection, is bounded by a deadline, and fails loudly on a wrong byte
// count or a corrupted byte.

import (
	"context"
	"crypto/tls"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"time"

	"github.com/ampmux/ampmux/amp/switching"
)

// bulkTimeout bounds one bulk transfer of n bytes: generous (10 MB/s).
func bulkTimeout(n int64) time.Duration {
	return 30*time.Second + time.Duration(n/10e6)*time.Second
}

const setupTimeout = 10 * time.Second

func dial(ctx context.Context, addr string, timeout time.Duration) (net.Conn, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	c.SetDeadline(time.Now().Add(timeout))
	stop := context.AfterFunc(ctx, func() { c.Close() })
	return &ctxConn{Conn: c, stop: stop}, nil
}

// ctxConn closes the connection when the run's context ends, so that an
// interrupted run does not wait for a deadline.
type ctxConn struct {
	net.Conn
	stop func() bool
}

func (c *ctxConn) Close() error {
	c.stop()
	return c.Conn.Close()
}

func (c *ctxConn) CloseWrite() error {
	return c.Conn.(*net.TCPConn).CloseWrite()
}

// startTransfer connects to addr and asks the backend for op on n bytes.
func startTransfer(ctx context.Context, addr string, op byte, n int64) (net.Conn, error) {
	c, err := dial(ctx, addr, bulkTimeout(n))
	if err != nil {
		return nil, err
	}
	var hdr [9]byte
	hdr[0] = op
	binary.BigEndian.PutUint64(hdr[1:], uint64(n))
	if _, err := c.Write(hdr[:]); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// upload sends n bytes to the backend's sink through addr and waits for
// its report: the time from before connecting to the report.
func upload(ctx context.Context, addr string, n int64) (time.Duration, error) {
	t0 := time.Now()
	c, err := startTransfer(ctx, addr, opUpload, n)
	if err != nil {
		return 0, fmt.Errorf("upload: %w", err)
	}
	defer c.Close()
	if err := writePattern(c, n); err != nil {
		return 0, fmt.Errorf("upload: %w", err)
	}
	var rep [reportLen]byte
	if _, err := io.ReadFull(c, rep[:]); err != nil {
		return 0, fmt.Errorf("upload of %d bytes: no report from the sink: %w", n, err)
	}
	d := time.Since(t0)
	got := int64(binary.BigEndian.Uint64(rep[1:]))
	switch {
	case rep[0] == reportCorrupt:
		return 0, fmt.Errorf("upload: WRONG DATA: the sink received %d bytes, not all as sent", got)
	case rep[0] != reportOK || got != n:
		return 0, fmt.Errorf("upload: WRONG BYTE COUNT: sent %d bytes, the sink received %d (status %q)", n, got, rep[0])
	}
	return d, nil
}

// download asks the backend's source for n bytes through addr and reads
// them to EOF: the time from before connecting to the last byte.
func download(ctx context.Context, addr string, n int64) (time.Duration, error) {
	t0 := time.Now()
	c, err := startTransfer(ctx, addr, opDownload, n)
	if err != nil {
		return 0, fmt.Errorf("download: %w", err)
	}
	defer c.Close()
	got, ok, err := readPattern(c, n)
	d := time.Since(t0)
	if err != nil {
		return 0, fmt.Errorf("download: WRONG BYTE COUNT: got %d of %d bytes: %w", got, n, err)
	}
	if got != n {
		return 0, fmt.Errorf("download: WRONG BYTE COUNT: got %d bytes, want %d", got, n)
	}
	if !ok {
		return 0, fmt.Errorf("download: WRONG DATA: %d bytes arrived, not all as the source sent them", got)
	}
	// Then EOF, and nothing more.
	extra, _, err := readPattern(c, -1)
	if err != nil {
		return 0, fmt.Errorf("download: waiting for EOF after %d bytes: %w", n, err)
	}
	if extra != 0 {
		return 0, fmt.Errorf("download: WRONG BYTE COUNT: got %d bytes, want %d", n+extra, n)
	}
	return d, nil
}

// echoOnce times connect → one byte sent → the byte back.
func echoOnce(ctx context.Context, addr string) (time.Duration, error) {
	t0 := time.Now()
	c, err := dial(ctx, addr, setupTimeout)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	d, err := echoByte(c, t0)
	return d, err
}

// echoByte sends opEcho on c and waits for it to come back; the time
// since t0.
func echoByte(c net.Conn, t0 time.Time) (time.Duration, error) {
	if _, err := c.Write([]byte{opEcho}); err != nil {
		return 0, fmt.Errorf("echo: %w", err)
	}
	var b [1]byte
	if _, err := io.ReadFull(c, b[:]); err != nil {
		return 0, fmt.Errorf("echo: no byte back: %w", err)
	}
	d := time.Since(t0)
	if b[0] != opEcho {
		return 0, fmt.Errorf("echo: WRONG DATA: got %q back, want %q", b[0], opEcho)
	}
	return d, nil
}

// libTiming is one library-path connection: until the dial returned
// (the connection is ready for the inner protocol), and until a 1-byte
// echo came back through the backend.
type libTiming struct {
	dial, echo time.Duration
	state      tls.ConnectionState
}

// dialSwitch times switching.Dial (connect + StartTLS + ProtocolSwitch)
// to ampmux serve, then an echo; optimistic does not wait for the switch's
// answer.
func dialSwitch(ctx context.Context, addr, protocol string, cfg *tls.Config, optimistic bool) (libTiming, error) {
	ctx, cancel := context.WithTimeout(ctx, setupTimeout)
	defer cancel()
	d := switching.Dialer{TLSConfig: cfg, Optimistic: optimistic}
	t0 := time.Now()
	c, err := d.Dial(ctx, addr, protocol)
	if err != nil {
		return libTiming{}, err
	}
	defer c.Close()
	var t libTiming
	t.dial = time.Since(t0)
	c.SetDeadline(time.Now().Add(setupTimeout))
	stop := context.AfterFunc(ctx, func() { c.Close() })
	defer stop()
	if t.echo, err = echoByte(c, t0); err != nil {
		return libTiming{}, err
	}
	if info, ok := switching.InfoOf(c); ok && info.TLS != nil {
		t.state = *info.TLS
	}
	return t, nil
}

// dialTLS times a crypto/tls dial (connect + handshake) to the TLS proxy
// server, then an echo.
func dialTLS(ctx context.Context, addr string, cfg *tls.Config) (libTiming, error) {
	ctx, cancel := context.WithTimeout(ctx, setupTimeout)
	defer cancel()
	d := &tls.Dialer{Config: cfg}
	t0 := time.Now()
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return libTiming{}, err
	}
	defer c.Close()
	var t libTiming
	t.dial = time.Since(t0)
	c.SetDeadline(time.Now().Add(setupTimeout))
	stop := context.AfterFunc(ctx, func() { c.Close() })
	defer stop()
	if t.echo, err = echoByte(c, t0); err != nil {
		return libTiming{}, err
	}
	t.state = c.(*tls.Conn).ConnectionState()
	return t, nil
}
