package conn_test

import (
	"context"
	"crypto/tls"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ampmux/ampmux/amp/box"
	"github.com/ampmux/ampmux/amp/conn"
)

// hbPeer plays the far end of a net.Pipe by hand: it may answer
// heartbeat probes as Twisted does (an UNHANDLED error), read them and
// answer nothing, or do nothing at all.
type hbPeer struct {
	nc     net.Conn
	probes atomic.Int32 // heartbeat probes read
	wmu    sync.Mutex
}

type hbMode int

const (
	hbAnswer hbMode = iota // read, answer probes UNHANDLED
	hbDrain                // read everything, write nothing
	hbSilent               // neither read nor write (a frozen peer, its kernel's buffers full)
)

func (p *hbPeer) run(mode hbMode) {
	if mode == hbSilent {
		return
	}
	dec := box.NewDecoder(p.nc)
	var b box.Box
	for dec.Next(&b) == nil {
		if b.GetString("_command") != conn.HeartbeatCommand {
			continue
		}
		p.probes.Add(1)
		if mode == hbAnswer {
			p.send(map[string]string{"_error": b.GetString("_ask"), "_error_code": "UNHANDLED",
				"_error_description": "Unhandled Command: b'" + conn.HeartbeatCommand + "'"})
		}
	}
}

func (p *hbPeer) send(m map[string]string) error {
	enc, _ := box.Append(nil, box.FromMap(m))
	p.wmu.Lock()
	defer p.wmu.Unlock()
	_, err := p.nc.Write(enc)
	return err
}

// hbEnd starts a Conn with the heartbeat on over net.Pipe against a
// hand-driven peer.
func hbEnd(t *testing.T, cfg conn.Config) (*conn.Conn, *hbPeer, chan error) {
	a, b := net.Pipe()
	errc := make(chan error, 1)
	cfg.OnError = func(_ *conn.Conn, err error) { errc <- err }
	if cfg.Logger == nil {
		cfg.Logger = quietLogger()
	}
	c := conn.New(b, &cfg)
	p := &hbPeer{nc: a}
	t.Cleanup(func() {
		a.Close()
		c.Close()
	})
	return c, p, errc
}

const (
	hbEvery = time.Second
	hbWait  = 2 * time.Second
)

func TestHeartbeat(t *testing.T) {
	// A frozen peer over net.Pipe takes no byte, the probe included: the
	// countdown starts only once a probe is written (queued behind a
	// backlog it could not be answered sooner), so the writer's deadline
	// (WriteTimeout, HeartbeatTimeout here) detects it, in the same time.
	tests := []struct {
		name  string
		mode  hbMode
		chat  bool // the peer also sends a box of its own every 1.5 intervals
		alive bool
		err   error // how a dead peer is detected
	}{
		{"peer answers UNHANDLED", hbAnswer, false, true, nil},
		{"peer silent", hbSilent, false, false, conn.ErrWriteTimeout},
		{"peer reads but never answers", hbDrain, false, false, conn.ErrHeartbeatTimeout},
		{"peer chats but never answers probes", hbDrain, true, true, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				c, p, errc := hbEnd(t, conn.Config{Heartbeat: hbEvery, HeartbeatTimeout: hbWait, WriteTimeout: hbWait})
				go p.run(tt.mode)
				stop := make(chan struct{})
				if tt.chat {
					go func() {
						tick := time.NewTicker(hbEvery * 3 / 2)
						defer tick.Stop()
						for {
							select {
							case <-tick.C:
								p.send(map[string]string{"_command": "Note"}) // no _ask: nothing answers it
							case <-stop:
								return
							}
						}
					}()
				}
				defer close(stop)
				start := time.Now()
				select {
				case err := <-errc:
					if tt.alive {
						t.Fatalf("a live peer lost the connection after %v: %v", time.Since(start), err)
					}
					require.ErrorIs(t, err, tt.err)
					require.LessOrEqual(t, time.Since(start), hbEvery+hbWait, "detected within Heartbeat+HeartbeatTimeout (bubble time)")
					<-c.Done()
				case <-time.After(20 * hbEvery):
					if !tt.alive {
						t.Fatal("a dead peer was not detected")
					}
					require.NoError(t, c.Err())
					switch {
					case tt.chat:
						// A live peer may drop a probe (one that crossed its
						// switch request, TestReview3DroppedProbeNeverRetried):
						// one unanswered for HeartbeatTimeout after its write,
						// while other bytes came, is forgotten and the next
						// silence probes again; one at a time, so at most one
						// per HeartbeatTimeout, and none is a pending call.
						n := p.probes.Load()
						require.GreaterOrEqual(t, n, int32(2), "an unanswered probe is retried")
						require.LessOrEqual(t, n, int32(1+20*hbEvery/hbWait), "at most one probe per HeartbeatTimeout")
					default:
						require.GreaterOrEqual(t, p.probes.Load(), int32(10), "probed about once an interval")
					}
				}
			})
		})
	}
}

// Two Conns with the heartbeat on stay up while idle: each answers the
// other's probes itself, and calls go on.
func TestHeartbeatGoToGo(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		cfg := func() *conn.Config {
			return &conn.Config{Handler: echoMux(), Heartbeat: hbEvery, Logger: quietLogger()}
		}
		client, server := bubblePair(t, cfg(), cfg())
		time.Sleep(30 * hbEvery)
		require.NoError(t, client.Err())
		require.NoError(t, server.Err())
		args := new(box.Box)
		args.SetString("a", "b")
		reply, err := client.Call(context.Background(), "Echo", args)
		require.NoError(t, err)
		require.Equal(t, "b", reply.GetString("a"))
	})
}

// No probe while a StartTLS is pending: the request's context, not the
// heartbeat, bounds the wait for its answer.
func TestHeartbeatPausedWhileStartTLSPending(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c, p, errc := hbEnd(t, conn.Config{Heartbeat: hbEvery})
		go p.run(hbDrain)
		ctx, cancel := context.WithTimeout(context.Background(), 10*hbEvery)
		defer cancel()
		err := c.StartTLS(ctx, &tls.Config{InsecureSkipVerify: true})
		require.ErrorIs(t, err, conn.ErrConnectionLost)
		require.ErrorIs(t, err, context.DeadlineExceeded)
		err = <-errc
		require.NotErrorIs(t, err, conn.ErrHeartbeatTimeout)
		require.Zero(t, p.probes.Load())
	})
}

// Inside a box, BoxTimeout governs, not the heartbeat.
func TestHeartbeatNotInsideABox(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c, p, errc := hbEnd(t, conn.Config{Heartbeat: hbEvery, BoxTimeout: 5 * hbEvery})
		go func() {
			p.nc.Write(commandHead("Echo", "1"))
			p.run(hbDrain)
		}()
		start := time.Now()
		err := <-errc
		require.ErrorIs(t, err, os.ErrDeadlineExceeded)
		require.NotErrorIs(t, err, conn.ErrHeartbeatTimeout)
		require.Equal(t, 5*hbEvery, time.Since(start))
		require.Zero(t, p.probes.Load())
		<-c.Done()
	})
}

// readSignalConn signals each read that returned bytes.
type readSignalConn struct {
	net.Conn
	reads chan struct{}
}

func (c *readSignalConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if n > 0 {
		select {
		case c.reads <- struct{}{}:
		default:
		}
	}
	return n, err
}

// Over TLS, a read that times out for the heartbeat is retried: probes
// go and come back encrypted, and the connection goes on.
func TestHeartbeatOverTLS(t *testing.T) {
	p := newPKI(t)
	a, b := tcpPair(t)
	cc := &readSignalConn{Conn: a, reads: make(chan struct{}, 1)}
	clientTLS := p.clientTLS.Clone()
	clientTLS.ServerName = "localhost"
	client, server := startPair(t, cc, b, &conn.Config{Heartbeat: 20 * time.Millisecond, HeartbeatTimeout: 5 * time.Second, Logger: quietLogger()},
		&conn.Config{Handler: echoMux(), TLS: p.serverTLS, Logger: quietLogger()})
	ctx := ctxT(t)
	require.NoError(t, client.StartTLS(ctx, clientTLS))
	for range 5 { // each an answer to a probe: nothing else is sent
		select {
		case <-cc.reads:
		case <-ctx.Done():
			t.Fatal("no probe answered")
		}
	}
	require.NoError(t, client.Err())
	require.NoError(t, server.Err())
	args := new(box.Box)
	args.SetString("a", "b")
	reply, err := client.Call(ctx, "Echo", args)
	require.NoError(t, err)
	require.Equal(t, "b", reply.GetString("a"))
	_, ok := client.ConnectionState()
	require.True(t, ok)
}

// A reader kept busy past the heartbeat's deadline (an inline responder
// that takes its time) does not take the expired deadline for silence:
// the probe goes a whole Heartbeat after it is back reading.
func TestHeartbeatWaitsAWholeIntervalOfReading(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := echoMux()
		m.HandleBoxInline("Busy", func(context.Context, *box.Box, *box.Box) error {
			time.Sleep(3 * hbEvery)
			return nil
		})
		_, p, _ := hbEnd(t, conn.Config{Handler: m, Heartbeat: hbEvery})
		probed := make(chan time.Duration, 1)
		answered := make(chan time.Time, 1)
		start := time.Now()
		go func() {
			dec := box.NewDecoder(p.nc)
			var b box.Box
			for dec.Next(&b) == nil {
				switch {
				case b.GetString("_answer") == "1":
					answered <- time.Now()
				case b.GetString("_command") == conn.HeartbeatCommand:
					select {
					case probed <- time.Since(start):
					default:
					}
				}
			}
		}()
		p.send(map[string]string{"_ask": "1", "_command": "Busy"})
		back := <-answered
		got := <-probed
		require.Equal(t, back.Sub(start)+hbEvery, got, "first probe a whole Heartbeat after the reader was back")
	})
}

// The deadline is re-armed at most every Heartbeat/16 on a busy
// connection; one armed just before the last read began, expiring early,
// is extended to a whole Heartbeat after that read began.
func TestHeartbeatKeptDeadlineExtended(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		_, p, _ := hbEnd(t, conn.Config{Heartbeat: hbEvery})
		probed := make(chan time.Time, 1)
		go func() {
			dec := box.NewDecoder(p.nc)
			var b box.Box
			for dec.Next(&b) == nil {
				if b.GetString("_command") == conn.HeartbeatCommand {
					probed <- time.Now()
					return
				}
			}
		}()
		synctest.Wait() // the reader has armed the deadline and waits
		p.send(map[string]string{"_command": "Note"})
		time.Sleep(hbEvery / 32) // less than Heartbeat/16: the deadline is kept
		p.send(map[string]string{"_command": "Note"})
		last := time.Now()
		require.Equal(t, hbEvery, (<-probed).Sub(last), "probe a whole Heartbeat after the last byte")
	})
}
