package switching_test

import (
	"crypto/tls"
	"errors"
	"io"
	"net"
	"os"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ampmux/ampmux/amp"
	"github.com/ampmux/ampmux/amp/switching"
)

func TestOptimisticDialEcho(t *testing.T) {
	e := newEnv(t)
	for _, tt := range []struct {
		name     string
		d        switching.Dialer
		protocol string
	}{
		{"TLS", switching.Dialer{TLSConfig: e.client, Optimistic: true}, "echo"},
		{"plaintext", switching.Dialer{InsecurePlaintext: true, Optimistic: true}, "plain"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c, err := tt.d.Dial(ctxT(t), e.addr, tt.protocol)
			require.NoError(t, err)
			defer c.Close()
			// The first bytes leave before the answer has come.
			_, err = c.Write([]byte("first"))
			require.NoError(t, err)
			got := make([]byte, 5)
			_, err = io.ReadFull(c, got)
			require.NoError(t, err)
			require.Equal(t, "first", string(got))
			roundTrip(t, c, 1<<20+777)
			info, ok := switching.InfoOf(c)
			require.True(t, ok)
			require.Equal(t, tt.name == "TLS", info.TLS != nil)
		})
	}
}

// The server holds its answer (the "gated" Prepare) while the client's
// bytes wait behind the request; they reach the inner protocol once it
// switches.
func TestOptimisticBytesWaitForTheSwitch(t *testing.T) {
	e := newEnv(t)
	d := switching.Dialer{InsecurePlaintext: true, Optimistic: true}
	c, err := d.Dial(ctxT(t), e.addr, "gated")
	require.NoError(t, err)
	defer c.Close()
	_, err = c.Write([]byte("queued"))
	require.NoError(t, err)

	// Before the answer: a read deadline bounds the wait for it.
	require.NoError(t, c.SetReadDeadline(time.Now().Add(50*time.Millisecond)))
	_, err = c.Read(make([]byte, 1))
	require.ErrorIs(t, err, os.ErrDeadlineExceeded)
	var ne net.Error
	require.ErrorAs(t, err, &ne)
	require.True(t, ne.Timeout())

	require.NoError(t, c.SetReadDeadline(time.Time{}))
	close(e.gate)
	got := make([]byte, 6)
	_, err = io.ReadFull(c, got)
	require.NoError(t, err)
	require.Equal(t, "queued", string(got))
}

func TestOptimisticRefusalShowsOnRead(t *testing.T) {
	e := newEnv(t)
	tests := []struct {
		name     string
		d        switching.Dialer
		protocol string
		is       error
	}{
		{"unknown protocol", switching.Dialer{TLSConfig: e.client, Optimistic: true}, "nope", switching.ErrUnknownProtocol},
		{"TLS required", switching.Dialer{InsecurePlaintext: true, Optimistic: true}, "echo", switching.ErrTLSRequired},
		{"name not allowed", switching.Dialer{TLSConfig: e.intruder, Optimistic: true}, "echo", switching.ErrForbidden},
		{"backend down", switching.Dialer{InsecurePlaintext: true, Optimistic: true}, "down", switching.ErrUnavailable},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := tt.d.Dial(ctxT(t), e.addr, tt.protocol)
			require.NoError(t, err, "an optimistic dial returns before the answer")
			defer c.Close()
			// Inner-protocol bytes the server will read as AMP: it refuses
			// the switch first, then drops the connection.
			c.Write([]byte("SSH-2.0-test\r\n"))
			_, err = c.Read(make([]byte, 1))
			var de *switching.DialError
			require.ErrorAs(t, err, &de)
			require.Equal(t, switching.StepSwitch, de.Step)
			require.ErrorIs(t, err, tt.is)
			var re *amp.RemoteError
			require.ErrorAs(t, err, &re)
			// Every later read says the same; writes fail.
			_, err = c.Read(make([]byte, 1))
			require.ErrorIs(t, err, tt.is)
			require.Eventually(t, func() bool {
				_, err := c.Write([]byte("x"))
				return err != nil
			}, 5*time.Second, 10*time.Millisecond)
		})
	}
}

// Closing before the answer ends the AMP connection and its goroutines
// (goleak checks at the end of the package).
func TestOptimisticCloseBeforeAnswer(t *testing.T) {
	e := newEnv(t)
	d := switching.Dialer{InsecurePlaintext: true, Optimistic: true}
	c, err := d.Dial(ctxT(t), e.addr, "gated")
	require.NoError(t, err)
	readErr := make(chan error, 1)
	go func() {
		_, err := c.Read(make([]byte, 1))
		readErr <- err
	}()
	<-e.gated // the server holds the answer: Read is left waiting for it
	require.NoError(t, c.Close())
	select {
	case err := <-readErr:
		require.Error(t, err)
	case <-time.After(5 * time.Second):
		t.Fatal("Read still waiting after Close")
	}
	require.ErrorIs(t, c.Close(), net.ErrClosed)
}

func TestOptimisticStartTLSFailureStillFromDial(t *testing.T) {
	e := newEnv(t)
	d := switching.Dialer{TLSConfig: &tls.Config{}, Optimistic: true} // system roots: our CA is unknown
	c, err := d.Dial(ctxT(t), e.addr, "echo")
	require.Nil(t, c)
	var de *switching.DialError
	require.ErrorAs(t, err, &de)
	require.Equal(t, switching.StepStartTLS, de.Step)
	require.False(t, errors.Is(err, switching.ErrUnknownProtocol))
}
