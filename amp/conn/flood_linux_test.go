package conn_test

import (
	"bufio"
	"context"
	"encoding/binary"
	"fmt"
	"github.com/ampmux/ampmux/internal/proctest"
	"io"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"

	"github.com/ampmux/ampmux/amp"
	"github.com/ampmux/ampmux/amp/box"
	"github.com/ampmux/ampmux/amp/conn"
)

// floodServerEnv makes the test binary a bare Server for
// TestHugeBoxFloodRSS: it prints its address and serves until its stdin
// closes, so that its peak RSS is the server's alone.
const floodServerEnv = "AMP_CONN_FLOOD_SERVER"

func TestFloodServerProcess(t *testing.T) {
	if os.Getenv(floodServerEnv) == "" {
		t.Skip("the server process of TestHugeBoxFloodRSS")
	}
	m := amp.NewMux()
	m.HandleBoxInline("Echo", func(_ context.Context, req, resp *box.Box) error {
		resp.Set("a", []byte(req.GetString("a")))
		return nil
	})
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &conn.Server{Config: conn.Config{Handler: m, Logger: quietLogger()}}
	go srv.Serve(l)
	fmt.Println(l.Addr())
	io.Copy(io.Discard, os.Stdin)
	srv.Close()
}

// floodBox writes the start of a box of 64 KiB values that never ends,
// up to n bytes, and returns when the server stops reading it.
func floodBox(nc net.Conn, n int) {
	var head []byte
	for _, kv := range [][2]string{{"_ask", "1"}, {"_command", "Echo"}} {
		head = binary.BigEndian.AppendUint16(head, uint16(len(kv[0])))
		head = append(head, kv[0]...)
		head = binary.BigEndian.AppendUint16(head, uint16(len(kv[1])))
		head = append(head, kv[1]...)
	}
	if _, err := nc.Write(head); err != nil {
		return
	}
	chunk := binary.BigEndian.AppendUint16(nil, 7)
	chunk = append(chunk, "k000000"...)
	chunk = binary.BigEndian.AppendUint16(chunk, box.MaxValueLength)
	chunk = append(chunk, make([]byte, box.MaxValueLength)...)
	for i := 0; i*len(chunk) < n; i++ {
		copy(chunk[3:9], fmt.Sprintf("%06d", i))
		if _, err := nc.Write(chunk); err != nil {
			return
		}
	}
}

// TestHugeBoxFloodRSS: 40 anonymous connections each stream a 15 MB box
// that never ends, to a Server with the defaults in a process of its own.
// Its peak RSS stays under 300 MB (the shared Budget holds; without it,
// 930 MB) and a new call is answered.
func TestHugeBoxFloodRSS(t *testing.T) {
	if testing.Short() || raceEnabled {
		t.Skip("streams 600 MB over loopback; its RSS means nothing under the race detector")
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestFloodServerProcess$")
	cmd.Env = append(os.Environ(), floodServerEnv+"=1")
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		stdin.Close()
		cmd.Wait()
	})
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		t.Fatalf("the server's address: %v", err)
	}
	addr := strings.TrimSpace(line)
	pid := cmd.Process.Pid
	before := proctest.StatusKB(t, pid, "VmRSS")

	var wg sync.WaitGroup
	for range 40 {
		nc, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { nc.Close() })
		wg.Go(func() { floodBox(nc, 15<<20) })
	}
	wg.Wait() // every client sent 15 MB, or the server stopped reading it

	c, err := conn.Dial(ctxT(t), "tcp", addr, &conn.Config{Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	args := new(box.Box)
	args.SetString("a", "b")
	reply, err := c.Call(ctxT(t), "Echo", args)
	if err != nil || reply.GetString("a") != "b" {
		t.Fatalf("a new call during the flood: %v %v", reply, err)
	}
	peak := proctest.StatusKB(t, pid, "VmHWM")
	t.Logf("server RSS %d MiB before, peak %d MiB during the flood of 40 × 15 MB boxes", before>>10, peak>>10)
	if peak > 300<<10 {
		t.Fatalf("the server peaked at %d MiB RSS, want under 300 MiB", peak>>10)
	}
}
