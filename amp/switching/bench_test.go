package switching_test

import (
	"context"
	"crypto/tls"
	"io"
	"net"
	"testing"

	"github.com/ampmux/ampmux/amp/switching"
)

// sink reads everything and answers one byte when the peer half-closes.
func sink(c net.Conn, _ switching.Info) {
	defer c.Close()
	io.Copy(io.Discard, c)
	c.Write([]byte{1})
}

type benchEnv struct {
	*env
	tlsAddr string // a plain crypto/tls server with the same certificate and sink
}

func newBenchEnv(b *testing.B) *benchEnv {
	e := newEnvTB(b)
	e.registry.Register("sink", sink, switching.Policy{})
	l, err := tls.Listen("tcp", "127.0.0.1:0", e.serverTLS)
	if err != nil {
		b.Fatal(err)
	}
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go sink(c, switching.Info{})
		}
	}()
	b.Cleanup(func() { l.Close() })
	return &benchEnv{env: e, tlsAddr: l.Addr().String()}
}

// Setup modes: connect + StartTLS + switch, waiting for the answer or
// not, against connect + a crypto/tls handshake.
const (
	modeSwitched   = "switched"
	modeOptimistic = "optimistic"
	modePlainTLS   = "plaintls"
)

func (e *benchEnv) dial(b *testing.B, mode string) net.Conn {
	ctx := context.Background()
	cfg := e.client.Clone()
	cfg.ServerName = "localhost"
	if mode == modePlainTLS {
		d := tls.Dialer{Config: cfg}
		c, err := d.DialContext(ctx, "tcp", e.tlsAddr)
		if err != nil {
			b.Fatal(err)
		}
		return c
	}
	d := switching.Dialer{TLSConfig: cfg, Optimistic: mode == modeOptimistic}
	c, err := d.Dial(ctx, e.addr, "sink")
	if err != nil {
		b.Fatal(err)
	}
	return c
}

// BenchmarkBulk sends 64 KiB writes through StartTLS + ProtocolSwitch and
// through a plain crypto/tls connection to the same kind of sink.
func BenchmarkBulk(b *testing.B) {
	for _, mode := range []string{modeSwitched, modePlainTLS} {
		b.Run(mode, func(b *testing.B) {
			e := newBenchEnv(b)
			c := e.dial(b, mode)
			buf := make([]byte, 64<<10)
			b.SetBytes(int64(len(buf)))
			b.ResetTimer()
			for b.Loop() {
				if _, err := c.Write(buf); err != nil {
					b.Fatal(err)
				}
			}
			closeWrite(c)
			one := make([]byte, 1)
			if _, err := io.ReadFull(c, one); err != nil {
				b.Fatal(err)
			}
			b.StopTimer()
			c.Close()
		})
	}
}

// BenchmarkSetup is connect + StartTLS + switch against connect + TLS:
// "dial" until the connection is returned, "firstbyte" until a byte sent
// on it has come back from the inner protocol.
func BenchmarkSetup(b *testing.B) {
	for _, until := range []string{"dial", "firstbyte"} {
		for _, mode := range []string{modeSwitched, modeOptimistic, modePlainTLS} {
			b.Run(until+"/"+mode, func(b *testing.B) {
				e := newBenchEnv(b)
				one := make([]byte, 1)
				for b.Loop() {
					c := e.dial(b, mode)
					if until == "firstbyte" {
						if _, err := c.Write(one); err != nil {
							b.Fatal(err)
						}
						closeWrite(c)
						if _, err := io.ReadFull(c, one); err != nil {
							b.Fatal(err)
						}
					}
					c.Close()
				}
			})
		}
	}
}

func closeWrite(c net.Conn) {
	type cw interface{ CloseWrite() error }
	if sc, ok := c.(*switching.Conn); ok {
		c = sc.Conn
	}
	if w, ok := c.(cw); ok {
		w.CloseWrite()
	}
}
