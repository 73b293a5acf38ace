//go:build unix

package conn_test

import (
	"bufio"
	"bytes"
	"context"
	"net"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ampmux/ampmux/amp"
	"github.com/ampmux/ampmux/amp/box"
	"github.com/ampmux/ampmux/amp/conn"
)

const twistedPython = "/usr/bin/python3"

// requireTwisted skips the test when Twisted is missing, except in CI,
// where it must be there.
func requireTwisted(t *testing.T) {
	t.Helper()
	out, err := exec.Command(twistedPython, "-c", "import twisted.protocols.amp").CombinedOutput()
	if err == nil {
		return
	}
	if os.Getenv("CI") == "" {
		t.Skipf("%s cannot import twisted.protocols.amp: %v %s", twistedPython, err, out)
	}
	t.Fatalf("CI: %s cannot import twisted.protocols.amp: %v %s", twistedPython, err, out)
}

// startTwisted runs testdata/twisted_amp_server.py and returns the
// process and its address. At cleanup it is resumed (if stopped) and
// killed.
func startTwisted(t *testing.T) (*os.Process, string) {
	requireTwisted(t)
	cmd := exec.Command(twistedPython, "testdata/twisted_amp_server.py")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGCONT)
		cmd.Process.Kill()
		cmd.Wait()
		if t.Failed() {
			t.Logf("twisted's stderr: %s", stderr.String())
		}
	})
	line, err := bufio.NewReader(stdout).ReadString('\n')
	require.NoError(t, err, "twisted's port (its stderr is logged at cleanup)")
	return cmd.Process, net.JoinHostPort("127.0.0.1", strings.TrimSpace(line))
}

// Against a real Twisted peer: probes answered UNHANDLED keep the
// connection alive; once the peer is frozen (SIGSTOP: its kernel still
// acknowledges, no FIN ever comes) the connection ends with
// ErrHeartbeatTimeout.
func TestHeartbeatTwisted(t *testing.T) {
	proc, addr := startTwisted(t)
	nc, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	rc := &readSignalConn{Conn: nc, reads: make(chan struct{}, 1)}
	c := conn.New(rc, &conn.Config{Heartbeat: 200 * time.Millisecond, Logger: quietLogger()})
	t.Cleanup(func() { c.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	for range 3 { // each read is the answer to a probe: nothing else is sent
		select {
		case <-rc.reads:
		case <-ctx.Done():
			t.Fatal("no probe answered")
		}
	}
	require.NoError(t, c.Err())
	_, err = c.Call(ctx, "Nope", &box.Box{})
	require.ErrorIs(t, err, amp.ErrUnhandledCommand, "the connection still serves calls")

	require.NoError(t, proc.Signal(syscall.SIGSTOP))
	select {
	case <-c.Done():
	case <-ctx.Done():
		t.Fatal("a frozen peer was not detected")
	}
	require.ErrorIs(t, c.Err(), conn.ErrHeartbeatTimeout)
}
