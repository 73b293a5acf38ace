package switching_test

import (
	"context"
	"errors"
	"net"
	"sync/atomic"
	"testing"
	"testing/synctest"

	"github.com/ampmux/ampmux/amp"
	"github.com/ampmux/ampmux/amp/box"
	"github.com/ampmux/ampmux/amp/conn"
	"github.com/ampmux/ampmux/amp/switching"
)

// countingCloser is a Prepare state that counts its closes.
type countingCloser struct{ closed *atomic.Int32 }

func (c countingCloser) Close() error { c.closed.Add(1); return nil }

// A ProtocolSwitch without _ask (sent as a no-answer box) is a protocol
// error, and the backend Prepare opened is closed: before, each such box
// left one backend connection open until the garbage collector found it.
func TestSwitchWithoutAskClosesPrepared(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var prepared, closed atomic.Int32
		reg := switching.NewRegistry()
		reg.Register("svc", func(c net.Conn, _ switching.Info) { c.Close() }, switching.Policy{
			AllowPlaintext: true,
			Prepare: func(context.Context, switching.Info) (any, error) {
				prepared.Add(1)
				return countingCloser{&closed}, nil
			},
		})
		m := amp.NewMux()
		reg.Install(m)
		a, b := net.Pipe()
		server := conn.New(b, &conn.Config{Handler: m, Logger: quiet()})
		client := conn.New(a, &conn.Config{Logger: quiet()})
		defer func() {
			client.Close()
			server.Close()
		}()
		var args box.Box
		args.SetString("protocol", "svc")
		for range 3 { // the first one ends the connection
			if err := client.SendBox(context.Background(), switching.CommandProtocolSwitch, &args); err != nil {
				break
			}
		}
		<-server.Done()
		synctest.Wait()
		var pe *conn.ProtocolError
		if !errors.As(server.Err(), &pe) || !errors.Is(pe, conn.ErrSwitchWithoutAsk) {
			t.Errorf("server ended with %v, want ErrSwitchWithoutAsk", server.Err())
		}
		if prepared.Load() != 1 || closed.Load() != 1 {
			t.Errorf("prepared %d, closed %d; want 1 and 1", prepared.Load(), closed.Load())
		}
	})
}
