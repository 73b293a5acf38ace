package switching

import (
	"context"
	"errors"
	"net"
	"sync"
)

// Listen registers protocol name and returns a net.Listener whose Accept
// returns the connections switched to it, so that an http.Server, a
// grpc.Server or an SSH server can Serve them unchanged. While the
// listener is not accepting fast enough, up to backlog switches wait;
// beyond that, and after Close, clients are refused with UNAVAILABLE.
func (r *Registry) Listen(name string, p Policy, addr net.Addr) net.Listener {
	l := &Listener{
		conns: make(chan net.Conn, 128),
		done:  make(chan struct{}),
		addr:  addr,
		name:  name,
		reg:   r,
	}
	p.Prepare = l.prepare(p.Prepare)
	r.Register(name, l.deliver, p)
	return l
}

// Listener is a net.Listener of switched connections.
type Listener struct {
	conns chan net.Conn
	done  chan struct{}
	once  sync.Once
	addr  net.Addr
	name  string
	reg   *Registry
}

var errFull = errors.New("listener backlog full")

func (l *Listener) prepare(next func(ctx context.Context, info Info) (any, error)) func(ctx context.Context, info Info) (any, error) {
	return func(ctx context.Context, info Info) (any, error) {
		select {
		case <-l.done:
			return nil, net.ErrClosed
		default:
		}
		if len(l.conns) == cap(l.conns) {
			return nil, errFull
		}
		if next != nil {
			return next(ctx, info)
		}
		return nil, nil
	}
}

func (l *Listener) deliver(c net.Conn, _ Info) {
	select {
	case l.conns <- c:
	case <-l.done:
		c.Close()
	}
}

// Accept waits for the next switched connection.
func (l *Listener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

// Close stops the listener and unregisters its protocol; connections
// queued and not accepted are closed.
func (l *Listener) Close() error {
	l.once.Do(func() {
		close(l.done)
		l.reg.Unregister(l.name)
		for {
			select {
			case c := <-l.conns:
				c.Close()
			default:
				return
			}
		}
	})
	return nil
}

// Addr returns the address given to Listen, or a placeholder.
func (l *Listener) Addr() net.Addr {
	if l.addr != nil {
		return l.addr
	}
	return switchAddr(l.name)
}

type switchAddr string

func (a switchAddr) Network() string { return "ampswitch" }
func (a switchAddr) String() string  { return string(a) }
