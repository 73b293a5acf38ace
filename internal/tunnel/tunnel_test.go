package tunnel

import (
	"bytes"
	"crypto/rand"
	"io"
	"net"
	"testing"
)

func tcpPair(t *testing.T) (net.Conn, net.Conn) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	ch := make(chan net.Conn, 1)
	go func() { c, _ := l.Accept(); ch <- c }()
	a, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	return a, <-ch
}

// A client that sends a request, half-closes, then reads the whole answer:
// the half-close must cross the tunnel and the answer come back.
func TestPipeHalfClose(t *testing.T) {
	client, front := tcpPair(t)
	back, backend := tcpPair(t)
	var st Stats
	done := make(chan error, 1)
	go func() { done <- Pipe(front, back, &st) }()
	go func() { // the backend: read to EOF, answer with the reverse
		req, _ := io.ReadAll(backend)
		backend.Write(bytes.Repeat(req, 3))
		backend.Close()
	}()
	req := make([]byte, 300_000)
	rand.Read(req)
	client.Write(req)
	client.(*net.TCPConn).CloseWrite()
	resp, err := io.ReadAll(client)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(resp, bytes.Repeat(req, 3)) {
		t.Fatalf("answer: %d bytes", len(resp))
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if st.AToB.Load() != 300_000 || st.BToA.Load() != 900_000 {
		t.Fatalf("stats %d %d", st.AToB.Load(), st.BToA.Load())
	}
	client.Close()
}
