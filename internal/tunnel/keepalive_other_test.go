//go:build !linux

package tunnel

import (
	"net"
	"testing"
)

// keepAliveOf cannot read keep-alive settings here: net.TCPConn has no
// getter, and the socket options differ by system.
func keepAliveOf(*testing.T, net.Conn) (keepAlive, bool) { return keepAlive{}, false }
