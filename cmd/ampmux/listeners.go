package main

import (
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"

	"github.com/coreos/go-systemd/v22/activation"
)

// systemdListen is the --listen value that takes the sockets systemd
// passes (socket activation: LISTEN_FDS, as in examples/systemd).
const systemdListen = "systemd"

// listenFlag is --listen: repeatable, the first one given replacing the
// default; a value may also list addresses separated by commas.
type listenFlag struct {
	v   *string
	set bool
}

func (f *listenFlag) String() string {
	if f.v == nil {
		return ""
	}
	return *f.v
}

func (f *listenFlag) Set(s string) error {
	if !f.set || *f.v == "" {
		*f.v, f.set = s, true
		return nil
	}
	*f.v += "," + s
	return nil
}

// listenAll opens every address of spec (comma-separated; "systemd": the
// sockets systemd passed) and returns them as one listener.
func listenAll(spec string) (net.Listener, []string, error) {
	var ls []net.Listener
	fail := func(err error) (net.Listener, []string, error) {
		for _, l := range ls {
			l.Close()
		}
		return nil, nil, err
	}
	for _, a := range strings.Split(spec, ",") {
		a = strings.TrimSpace(a)
		switch {
		case a == "":
		case a == systemdListen:
			got, err := activation.Listeners()
			if err != nil {
				return fail(fmt.Errorf("--listen systemd: %w", err))
			}
			n := 0
			for _, l := range got {
				if l != nil { // not a stream socket
					ls = append(ls, l)
					n++
				}
			}
			if n == 0 {
				return fail(errors.New("--listen systemd: systemd passed no listening stream socket (LISTEN_FDS; see examples/systemd)"))
			}
		default:
			l, err := net.Listen("tcp", a)
			if err != nil {
				return fail(err)
			}
			ls = append(ls, l)
		}
	}
	if len(ls) == 0 {
		return fail(errors.New("--listen: no address"))
	}
	addrs := make([]string, len(ls))
	for i, l := range ls {
		addrs[i] = l.Addr().String()
	}
	if len(ls) == 1 {
		return ls[0], addrs, nil
	}
	return newMultiListener(ls), addrs, nil
}

// multiListener accepts from several listeners as one: a goroutine per
// listener hands its connections over; Close closes them all and waits
// for those goroutines. Its Addr is the first's.
type multiListener struct {
	ls    []net.Listener
	conns chan net.Conn
	errs  chan error
	done  chan struct{}
	once  sync.Once
	wg    sync.WaitGroup
}

func newMultiListener(ls []net.Listener) *multiListener {
	m := &multiListener{ls: ls, conns: make(chan net.Conn), errs: make(chan error, len(ls)), done: make(chan struct{})}
	for _, l := range ls {
		m.wg.Add(1)
		go m.pump(l)
	}
	return m
}

func (m *multiListener) pump(l net.Listener) {
	defer m.wg.Done()
	for {
		c, err := l.Accept()
		if err != nil {
			var ne interface{ Temporary() bool }
			if errors.As(err, &ne) && ne.Temporary() {
				// The caller's Accept sees it and backs off; this pump
				// waits for that Accept before trying again.
				select {
				case m.errs <- err:
				case <-m.done:
					return
				}
				continue
			}
			select {
			case m.errs <- err:
			case <-m.done:
			}
			return
		}
		select {
		case m.conns <- c:
		case <-m.done:
			c.Close()
			return
		}
	}
}

func (m *multiListener) Accept() (net.Conn, error) {
	select {
	case c := <-m.conns:
		return c, nil
	case err := <-m.errs:
		return nil, err
	case <-m.done:
		return nil, net.ErrClosed
	}
}

func (m *multiListener) Close() error {
	m.once.Do(func() {
		close(m.done)
		for _, l := range m.ls {
			l.Close()
		}
		m.wg.Wait()
	})
	return nil
}

func (m *multiListener) Addr() net.Addr { return m.ls[0].Addr() }
