//go:build linux

package tunnel

import (
	"net"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// keepAliveOf reads c's keep-alive settings with getsockopt.
func keepAliveOf(t *testing.T, c net.Conn) (keepAlive, bool) {
	t.Helper()
	raw, err := c.(*net.TCPConn).SyscallConn()
	require.NoError(t, err)
	var ka keepAlive
	var errs [4]error
	require.NoError(t, raw.Control(func(fd uintptr) {
		var on, idle, intvl int
		on, errs[0] = syscall.GetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_KEEPALIVE)
		idle, errs[1] = syscall.GetsockoptInt(int(fd), syscall.IPPROTO_TCP, syscall.TCP_KEEPIDLE)
		intvl, errs[2] = syscall.GetsockoptInt(int(fd), syscall.IPPROTO_TCP, syscall.TCP_KEEPINTVL)
		ka.count, errs[3] = syscall.GetsockoptInt(int(fd), syscall.IPPROTO_TCP, syscall.TCP_KEEPCNT)
		ka.on = on != 0
		ka.idle, ka.interval = time.Duration(idle)*time.Second, time.Duration(intvl)*time.Second
	}))
	for _, err := range errs {
		require.NoError(t, err)
	}
	return ka, true
}
