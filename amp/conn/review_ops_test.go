package conn_test

// From the adversarial review of Server.SetConfig.

import (
	"math/big"
	"net"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/ampmux/ampmux/amp/conn"
	"github.com/ampmux/ampmux/internal/demo"
)

// TestReviewOpsSetConfigRace (held): SetConfig from two goroutines, with
// and without a Budget, while connections are served, answered and the
// server shuts down; each connection dialled after a SetConfig returned
// has that config's MaxBoxSize (race detector).
func TestReviewOpsSetConfigRace(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	srv := &conn.Server{Config: conn.Config{Handler: echoMux(), Logger: quietLogger()}}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(l) }()
	small := conn.Config{Handler: echoMux(), Logger: quietLogger(), MaxBoxSize: 4096, Budget: conn.NewBudget(1 << 20)}
	large := conn.Config{Handler: echoMux(), Logger: quietLogger()} // Budget nil: the server's own
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for g := range 2 {
		wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				if (i+g)%2 == 0 {
					srv.SetConfig(small)
				} else {
					srv.SetConfig(large)
				}
			}
		})
	}
	for range 15 {
		c, err := conn.Dial(ctxT(t), "tcp", l.Addr().String(), nil)
		require.NoError(t, err)
		demo.Sum.Call(ctxT(t), c, demo.SumArgs{A: big.NewInt(1), B: big.NewInt(2)})
		c.Close()
	}
	close(stop)
	wg.Wait()
	srv.SetConfig(small)
	c, err := conn.Dial(ctxT(t), "tcp", l.Addr().String(), nil)
	require.NoError(t, err)
	_, err = demo.Echo.Call(ctxT(t), c, demo.EchoValues{Bytes: make([]byte, 8<<10)})
	require.Error(t, err, "dialled after SetConfig(small)")
	c.Close()
	srv.SetConfig(large)
	c, err = conn.Dial(ctxT(t), "tcp", l.Addr().String(), nil)
	require.NoError(t, err)
	_, err = demo.Echo.Call(ctxT(t), c, demo.EchoValues{Bytes: make([]byte, 8<<10)})
	require.NoError(t, err, "dialled after SetConfig(large)")
	c.Close()
	require.NoError(t, srv.Shutdown(ctxT(t)))
	<-served
}
