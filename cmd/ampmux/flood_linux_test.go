package main

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
)

// procStatus reads a field of /proc/PID/status in KiB (VmRSS, VmHWM).
func procStatus(t *testing.T, pid int, field string) int64 {
	t.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.Lines(string(data)) {
		if rest, ok := strings.CutPrefix(line, field+":"); ok {
			n, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return n
		}
	}
	t.Fatalf("no %s in /proc/%d/status", field, pid)
	return 0
}

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
			before := procStatus(t, pid, "VmRSS")
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
			peak := procStatus(t, pid, "VmHWM")
			t.Logf("serve RSS %d MiB before, peak %d MiB during the flood of 40 × 15 MB boxes", before>>10, peak>>10)
			if peak > 300<<10 {
				t.Fatalf("serve peaked at %d MiB RSS, want under 300 MiB", peak>>10)
			}
		})
	}
}
