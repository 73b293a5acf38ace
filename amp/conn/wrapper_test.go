package conn_test

import (
	"context"
	"net"
	"sync/atomic"
	"testing"

	"github.com/ampmux/ampmux/amp/box"
	"github.com/ampmux/ampmux/amp/conn"
)

// countingConn counts the bytes through its Write and Read. It embeds the
// *net.TCPConn, so SyscallConn is promoted: the connection must still not
// write around Write.
type countingConn struct {
	*net.TCPConn
	written, read atomic.Int64
}

func (c *countingConn) Write(p []byte) (int, error) {
	n, err := c.TCPConn.Write(p)
	c.written.Add(int64(n))
	return n, err
}

func (c *countingConn) Read(p []byte) (int, error) {
	n, err := c.TCPConn.Read(p)
	c.read.Add(int64(n))
	return n, err
}

// A wrapper that overrides Write sees every byte, at every concurrency
// (one call in flight is where the fast path would apply).
func TestWrapperSeesEveryByte(t *testing.T) {
	for _, inflight := range []int{1, 16} {
		a, b := tcpPair(t)
		ca, cb := &countingConn{TCPConn: a.(*net.TCPConn)}, &countingConn{TCPConn: b.(*net.TCPConn)}
		server := conn.New(cb, &conn.Config{Handler: demoMux(), Logger: quietLogger()})
		client := conn.New(ca, nil)
		errs := make(chan error, inflight)
		for range inflight {
			go func() {
				var err error
				for i := 0; i < 200 && err == nil; i++ {
					var reply box.Box
					err = client.CallBox(context.Background(), "Sum", sumArgs(i, 1), &reply)
				}
				errs <- err
			}()
		}
		for range inflight {
			if err := <-errs; err != nil {
				t.Fatal(err)
			}
		}
		client.Close()
		<-server.Done()
		server.Close()
		if w, r := ca.written.Load(), cb.read.Load(); w == 0 || w != r {
			t.Errorf("%d in flight: client wrote %d bytes through Write, server read %d", inflight, w, r)
		}
		if w, r := cb.written.Load(), ca.read.Load(); w == 0 || w != r {
			t.Errorf("%d in flight: server wrote %d bytes through Write, client read %d", inflight, w, r)
		}
	}
}

// writeThroughConn says its writes go to the TCP socket unchanged, as
// mux.Conn does: the fast path may then write to that socket itself.
type writeThroughConn struct{ countingConn }

func (c *writeThroughConn) WriteConn() net.Conn { return c.TCPConn }

// At one call in flight, calls leave through the fast path: on a
// connection that names its socket, most bytes skip its Write, and every
// byte still arrives.
func TestWriteConnOpensFastPath(t *testing.T) {
	a, b := tcpPair(t)
	ca := &writeThroughConn{countingConn{TCPConn: a.(*net.TCPConn)}}
	cb := &countingConn{TCPConn: b.(*net.TCPConn)}
	server := conn.New(cb, &conn.Config{Handler: demoMux(), Logger: quietLogger()})
	client := conn.New(ca, nil)
	for i := range 200 {
		var reply box.Box
		if err := client.CallBox(context.Background(), "Sum", sumArgs(i, 1), &reply); err != nil {
			t.Fatal(err)
		}
	}
	client.Close()
	<-server.Done()
	server.Close()
	if w, r := ca.written.Load(), cb.read.Load(); w >= r/2 || r == 0 {
		t.Errorf("%d of %d bytes went through Write: the fast path was not used", w, r)
	}
}
