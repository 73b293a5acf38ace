package interop

import (
	"bufio"
	"context"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ampmux/ampmux/amp"
	"github.com/ampmux/ampmux/amp/conn"
)

type readFDArgs struct {
	File *os.File `amp:"file"`
	Tag  string   `amp:"tag"`
}

type readFDReply struct {
	Data []byte `amp:"data"`
}

var readFD = amp.NewCommand[readFDArgs, readFDReply]("ReadFD", amp.Spec{})

func pipeWith(t *testing.T, content string) *os.File {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	w.WriteString(content)
	w.Close()
	return r
}

// TestDescriptorGoClientTwistedServer passes pipe descriptors from Go to a
// Twisted AMP server over a Unix socket.
func TestDescriptorGoClientTwistedServer(t *testing.T) {
	py, err := Python()
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "amp.sock")
	cmd := exec.Command(py, "-B", Script("twisted_fd.py"), "server", path)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "LISTENING") {
		t.Fatalf("server: %q %v", line, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, err := conn.Dial(ctx, "unix", path, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for _, content := range []string{"first", "second", ""} {
		r, err := readFD.Call(ctx, c, readFDArgs{File: pipeWith(t, content), Tag: "go"})
		if err != nil {
			t.Fatal(err)
		}
		if string(r.Data) != "go:"+content {
			t.Fatalf("Twisted read %q, want %q", r.Data, "go:"+content)
		}
	}
}

// TestDescriptorTwistedClientGoServer: Twisted passes descriptors to Go.
func TestDescriptorTwistedClientGoServer(t *testing.T) {
	path := filepath.Join(t.TempDir(), "amp.sock")
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	m := amp.NewMux()
	amp.Handle(m, readFD, func(_ context.Context, a readFDArgs) (readFDReply, error) {
		defer a.File.Close()
		data, err := io.ReadAll(a.File)
		return readFDReply{Data: append([]byte(a.Tag+":"), data...)}, err
	})
	srv := &conn.Server{Config: conn.Config{Handler: m, Logger: quietLogger()}}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	out := RunPython(t, "twisted_fd.py", "client", path)
	if strings.Count(string(out), "PASS") != 3 {
		t.Fatalf("Twisted client:\n%s", out)
	}
}
