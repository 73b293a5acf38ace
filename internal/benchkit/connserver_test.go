package benchkit

import (
	"io"
	"net"
	"testing"
)

// TestConnServer: each connection is served; Close ends the open ones
// (the client reads EOF) and their goroutines (goleak, TestMain).
func TestConnServer(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := ServeConns(l, func(nc net.Conn) { io.Copy(nc, nc) })
	c, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 4)
	if _, err := io.ReadFull(c, got); err != nil || string(got) != "ping" {
		t.Fatalf("echo %q, %v", got, err)
	}
	s.Close()
	if n, err := c.Read(got); err == nil {
		t.Fatalf("read %d bytes after Close, want EOF or reset", n)
	}
	if _, err := net.Dial("tcp", l.Addr().String()); err == nil {
		t.Error("dial after Close succeeded")
	}
}
