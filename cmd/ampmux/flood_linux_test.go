package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ampmux/ampmux/amp/switching"
	"github.com/ampmux/ampmux/internal/proctest"
)

// endlessBox writes the start of an AMP box of 64 KiB values that never
// ends, up to n bytes, and returns when the server stops reading.
func endlessBox(c net.Conn, n int) (int, error) {
	val := bytes.Repeat([]byte{'x'}, 65535)
	var chunk []byte
	sent := 0
	for i := 0; sent < n; i++ {
		chunk = chunk[:0]
		key := fmt.Sprintf("k%06d", i)
		chunk = binary.BigEndian.AppendUint16(chunk, uint16(len(key)))
		chunk = append(chunk, key...)
		chunk = binary.BigEndian.AppendUint16(chunk, uint16(len(val)))
		chunk = append(chunk, val...)
		m, err := c.Write(chunk)
		sent += m
		if err != nil {
			return sent, err
		}
	}
	return sent, nil
}

// TestHugeBoxFlood: 40 anonymous connections each stream a 15 MB box that
// never ends. serve's peak RSS stays under 300 MB and a new call is
// answered, with the default limits and with a per-connection box limit
// as large as the old 16 MiB (where the shared budget for connections
// without a certificate is what holds).
func TestHugeBoxFlood(t *testing.T) {
	for _, tt := range []struct {
		name string
		args []string
	}{
		{"defaults", nil},
		{"16MiB boxes", []string{"--max-box-size", "16MiB"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			p, addr := startServe(t, append([]string{"--demo"}, tt.args...)...)
			pid := p.cmd.Process.Pid
			before := proctest.StatusKB(t, pid, "VmRSS")
			var wg sync.WaitGroup
			conns := make([]net.Conn, 40)
			for i := range conns {
				c, err := net.Dial("tcp", addr)
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { c.Close() })
				conns[i] = c
			}
			for _, c := range conns {
				wg.Go(func() { endlessBox(c, 15<<20) })
			}
			wg.Wait() // every client sent 15 MB, or the server stopped reading it
			out, err := exec.Command(serveTestBinary(t), "call", "--server", addr, "Sum", "a=1", "b=2").CombinedOutput()
			if err != nil || strings.TrimSpace(string(out)) != `{"total":"3"}` {
				t.Fatalf("a new call during the flood: %q %v", out, err)
			}
			peak := proctest.StatusKB(t, pid, "VmHWM")
			t.Logf("serve RSS %d MiB before, peak %d MiB during the flood of 40 × 15 MB boxes", before>>10, peak>>10)
			if peak > 300<<10 {
				t.Fatalf("serve peaked at %d MiB RSS, want under 300 MiB", peak>>10)
			}
		})
	}
}

// TestHalfClosedTunnelsEnd: 2,000 clients each send 1 KB and half-close,
// to a backend that accepts and stays silent. Each tunnel ends once
// --half-close-timeout has passed since the client's FIN, and serve's
// descriptors return to where they were.
func TestHalfClosedTunnelsEnd(t *testing.T) {
	const tunnels = 2000
	silent, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	held := make(chan net.Conn, tunnels)
	go func() {
		for {
			c, err := silent.Accept()
			if err != nil {
				return
			}
			held <- c // never read, never written
		}
	}()
	t.Cleanup(func() {
		silent.Close()
		for len(held) > 0 {
			(<-held).Close()
		}
	})
	p, addr := startServe(t, "--allow-anonymous", "--allow-plaintext", "--route", "silent="+silent.Addr().String(),
		"--half-close-timeout", "300ms", "--max-conns-per-source", "4096", "--max-tunnels-per-client", "4096",
		"--max-tunnels-per-route", "4096")
	pid := p.cmd.Process.Pid
	baseline := proctest.OpenFDs(t, pid)

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	work := make(chan int, tunnels)
	for i := range tunnels {
		work <- i
	}
	close(work)
	errs := make(chan error, tunnels)
	var wg sync.WaitGroup
	for range 32 {
		wg.Go(func() {
			for range work {
				errs <- halfCloseAndWait(ctx, addr)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	p.stderr.waitCount(t, "tunnel closed", tunnels)
	if n := proctest.OpenFDs(t, pid); n > baseline+4 {
		t.Fatalf("serve has %d descriptors open after %d half-closed tunnels ended, %d before", n, tunnels, baseline)
	}
}

// halfCloseAndWait opens a tunnel, sends 1 KB, half-closes and waits for
// the server to end it.
func halfCloseAndWait(ctx context.Context, addr string) error {
	d := switching.Dialer{InsecurePlaintext: true}
	c, err := d.Dial(ctx, addr, "silent")
	if err != nil {
		return err
	}
	defer c.Close()
	if _, err := c.Write(make([]byte, 1024)); err != nil {
		return err
	}
	if err := c.(interface{ CloseWrite() error }).CloseWrite(); err != nil {
		return fmt.Errorf("CloseWrite: %w", err)
	}
	stop := context.AfterFunc(ctx, func() { c.SetReadDeadline(time.Now()) })
	defer stop()
	if _, err := io.Copy(io.Discard, c); err != nil && !errors.Is(err, syscall.ECONNRESET) {
		return fmt.Errorf("waiting for the tunnel to end: %w", err)
	}
	return nil
}

// appendAMP appends one AMP box of the given key/value pairs.
func appendAMP(b []byte, kv ...string) []byte {
	for i := 0; i < len(kv); i += 2 {
		b = binary.BigEndian.AppendUint16(b, uint16(len(kv[i])))
		b = append(b, kv[i]...)
		b = binary.BigEndian.AppendUint16(b, uint16(len(kv[i+1])))
		b = append(b, kv[i+1]...)
	}
	return append(b, 0, 0)
}

// TestConnLimitsAtServe: a box of tiny fields and a client that never
// reads each lose their own connection, counted on the admin status page,
// while a new call from someone else is answered.
func TestConnLimitsAtServe(t *testing.T) {
	g := startSecureGateway(t, "--demo", "--max-fields", "64", "--write-timeout", "300ms", "--write-buffer", "256KiB")
	call := func() {
		t.Helper()
		out, err := exec.Command(serveTestBinary(t), "call", "--server", g.addr, "Sum", "a=1", "b=2").CombinedOutput()
		if err != nil || strings.TrimSpace(string(out)) != `{"total":"3"}` {
			t.Fatalf("a call from another client: %q %v", out, err)
		}
	}

	// 10,000 three-byte keys in one box: refused at the 65th field.
	tiny, err := net.Dial("tcp", g.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer tiny.Close()
	var kv []string
	for i := range 10000 {
		kv = append(kv, fmt.Sprintf("%03x", i%4096)+string(rune('a'+i/4096)), "v")
	}
	go tiny.Write(appendAMP(nil, kv...))
	if _, err := io.Copy(io.Discard, tiny); err != nil && !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("tiny-field box: %v, want the connection closed", err)
	}
	call()

	// Pipelined Echo calls of 60 KB, never reading an answer: the server
	// closes the connection once its queue is full or its writes stall.
	deaf, err := net.Dial("tcp", g.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer deaf.Close()
	deaf.(*net.TCPConn).SetReadBuffer(4 << 10)
	payload := strings.Repeat("x", 60000)
	var werr error
	for i := 0; werr == nil && i < 100000; i++ {
		_, werr = deaf.Write(appendAMP(nil, "_command", "Echo", "_ask", fmt.Sprint(i+1), "bytes", payload))
	}
	if werr == nil {
		t.Fatal("6 GB of calls never read, and the server still takes more")
	}
	call()

	st := g.status(t)
	if st.Refused["max_fields"] != 1 || st.Refused["write_timeout"]+st.Refused["write_buffer"] != 1 {
		t.Fatalf("refusals %v, want one max_fields and one write_timeout or write_buffer", st.Refused)
	}
}
