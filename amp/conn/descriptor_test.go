//go:build unix

package conn_test

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

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

func unixPair(t *testing.T) (net.Conn, net.Conn) {
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM, 0)
	require.NoError(t, err)
	mk := func(fd int) net.Conn {
		f := os.NewFile(uintptr(fd), "socketpair")
		defer f.Close()
		c, err := net.FileConn(f)
		require.NoError(t, err)
		return c
	}
	return mk(fds[0]), mk(fds[1])
}

func pipeWith(t *testing.T, content string) *os.File {
	r, w, err := os.Pipe()
	require.NoError(t, err)
	_, err = w.WriteString(content)
	require.NoError(t, err)
	require.NoError(t, w.Close())
	return r
}

func TestDescriptorPassing(t *testing.T) {
	m := amp.NewMux()
	amp.Handle(m, readFD, func(_ context.Context, a readFDArgs) (readFDReply, error) {
		defer a.File.Close()
		data, err := io.ReadAll(a.File)
		return readFDReply{Data: append([]byte(a.Tag+":"), data...)}, err
	})
	client, _ := pair(t, unixPair, &conn.Config{Handler: m, Logger: quietLogger()})
	ctx := ctxT(t)
	for _, content := range []string{"first", "second", ""} {
		f := pipeWith(t, content)
		r, err := readFD.Call(ctx, client, readFDArgs{File: f, Tag: "t"})
		require.NoError(t, err)
		require.Equal(t, "t:"+content, string(r.Data))
		// The sender's copy is closed once sent (Twisted leaves it open).
		require.Eventually(t, func() bool {
			_, err := f.Stat()
			return errors.Is(err, os.ErrClosed)
		}, 2*time.Second, time.Millisecond)
	}
}

func TestDescriptorNeedsUnixSocket(t *testing.T) {
	client, _ := pair(t, transports["pipe"], nil)
	f := pipeWith(t, "x")
	defer f.Close()
	_, err := readFD.Call(ctxT(t), client, readFDArgs{File: f})
	require.True(t, errors.Is(err, amp.ErrNoDescriptors), "got %v", err)
}
