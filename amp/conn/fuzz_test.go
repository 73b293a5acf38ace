package conn_test

import (
	"crypto/tls"
	"net"
	"testing"
	"time"

	"github.com/ampmux/ampmux/amp/box"
	"github.com/ampmux/ampmux/amp/conn"
	"github.com/ampmux/ampmux/amp/switching"
)

// FuzzServerInput feeds arbitrary bytes to a server connection that serves
// the demo commands, StartTLS and switching: whatever arrives, the
// connection answers or closes, and never panics or hangs. Its limits are
// small (fields, a budget and allowances, the write queue) and the
// heartbeat is on, so that those paths see hostile input too; once it has
// ended, the connection has given back all it drew from the budget.
func FuzzServerInput(f *testing.F) {
	seed := func(kv ...string) []byte {
		b := &box.Box{}
		for i := 0; i < len(kv); i += 2 {
			b.SetString(kv[i], kv[i+1])
		}
		out, _ := box.Append(nil, b)
		return out
	}
	f.Add(seed("_command", "Sum", "_ask", "1", "a", "1", "b", "2"))
	f.Add(seed("_command", "Echo", "_ask", "2", "items", "\x00\x01n\x00\x00\x00\x00"))
	f.Add(seed("_command", "StartTLS", "_ask", "3"))
	f.Add(append(seed("_command", "ProtocolSwitch", "_ask", "4", "protocol", "plain"), "inner"...))
	f.Add(seed("_answer", "1"))
	f.Add(seed("_error", "1", "_error_code", "X"))
	f.Add([]byte("\x00\x00"))
	f.Add(seed("_command", "Echo", "_ask", "5", "a", "1", "b", "2", "c", "3", "d", "4", "e", "5", "f", "6", "g", "7", "h", "8", "i", "9"))
	f.Add(seed("_command", "Nope", "_ask", "6", "v", string(make([]byte, 60000)), "w", string(make([]byte, 60000))))
	f.Add(seed("_command", "_ampmux_heartbeat", "_ask", "7"))
	m := demoMux()
	reg := switching.NewRegistry()
	reg.Register("plain", func(c net.Conn, _ switching.Info) { c.Close() }, switching.Policy{AllowPlaintext: true})
	reg.Install(m)
	p := newPKIForFuzz(f)
	f.Fuzz(func(t *testing.T, input []byte) {
		a, b := net.Pipe()
		// A 1 KiB allowance: the handlers' requests and the write queue
		// reach the budget too.
		budget := conn.NewTestBudget(1<<10, 1<<10)
		c := conn.New(b, &conn.Config{Handler: m, TLS: p, Logger: quietLogger(), HandshakeTimeout: 200 * time.Millisecond,
			MaxFields: 8, Budget: budget, MaxWriteQueue: 4 << 10, Heartbeat: 5 * time.Millisecond})
		go func() {
			a.Write(input)
			a.Close()
		}()
		go func() {
			buf := make([]byte, 4096)
			for {
				if _, err := a.Read(buf); err != nil {
					return
				}
			}
		}()
		select {
		case <-c.Done():
		case <-time.After(5 * time.Second):
			t.Fatal("connection did not end after its input did")
		}
		c.Close()
		if n := budget.InUse(); n != 0 {
			t.Fatalf("the connection ended holding %d bytes of its budget", n)
		}
	})
}

func newPKIForFuzz(f *testing.F) *tls.Config {
	ca, err := pkiNewCA()
	if err != nil {
		f.Fatal(err)
	}
	srv, err := ca.Server("localhost")
	if err != nil {
		f.Fatal(err)
	}
	return &tls.Config{Certificates: []tls.Certificate{srv.TLS()}}
}
