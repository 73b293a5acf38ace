package conn_test

import (
	"net"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ampmux/ampmux/amp/conn"
)

// 50 clients on loopback send large calls and read no answer: the heap
// they pin together stays under their allowances (Allowance of queued
// answers and box.ReadAhead of read buffer each) plus the shared budget,
// where each used to pin MaxWriteQueue (4 MiB, 200 MiB for all). The
// sockets' buffers are kept small so that the kernel absorbs little.
func TestNonReadingClientsHeap(t *testing.T) {
	if testing.Short() {
		t.Skip("sends ~100 MB over loopback")
	}
	const clients = 50
	const budgetSize = 8 << 20
	budget := conn.NewBudget(budgetSize)
	srv := &conn.Server{Config: conn.Config{Handler: echoMux(), Logger: quietLogger(), Budget: budget,
		WriteTimeout: time.Minute}}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	go func() {
		for {
			nc, err := l.Accept()
			if err != nil {
				return
			}
			tc := nc.(*net.TCPConn)
			tc.SetWriteBuffer(64 << 10)
			tc.SetReadBuffer(64 << 10)
			srv.ServeConn(nc)
		}
	}()
	t.Cleanup(func() {
		l.Close()
		srv.Close()
		require.Zero(t, budget.InUse(), "the connections gave back what they drew")
	})
	before := heapNow()
	call := qbCall("Echo", 1, qbValue)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var sent int64
	for range clients {
		nc, err := net.Dial("tcp", l.Addr().String())
		require.NoError(t, err)
		nc.(*net.TCPConn).SetReadBuffer(64 << 10)
		nc.(*net.TCPConn).SetWriteBuffer(64 << 10)
		t.Cleanup(func() { nc.Close() }) // before srv.Close: the writers fail at once
		wg.Go(func() {
			n := 0
			for {
				// The server has stopped reading once a write waits this long.
				nc.SetWriteDeadline(time.Now().Add(300 * time.Millisecond))
				m, err := nc.Write(call)
				n += m
				if err != nil {
					break
				}
			}
			mu.Lock()
			sent += int64(n)
			mu.Unlock()
		})
	}
	wg.Wait()
	pinned := heapNow() - before
	t.Logf("%d non-reading clients: %.1f MiB sent before the server stopped reading, heap pinned %.1f MiB, budget in use %.1f of %.1f MiB",
		clients, float64(sent)/(1<<20), float64(pinned)/(1<<20), float64(budget.InUse())/(1<<20), float64(budget.Limit())/(1<<20))
	// Per client: Allowance queued, a read buffer and a box or two in
	// flight; plus the budget, and room for the rest of the heap.
	require.Less(t, pinned, int64(clients*(conn.Allowance+384<<10)+budgetSize+8<<20))
	require.LessOrEqual(t, budget.InUse(), budget.Limit())
}
