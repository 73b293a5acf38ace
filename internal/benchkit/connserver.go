package benchkit

import (
	"net"
	"sync"
)

// ConnServer serves every connection a listener accepts on a goroutine of
// its own, until Close: the raw TCP floor's and net/rpc's servers.
type ConnServer struct {
	L     net.Listener
	serve func(net.Conn) // returns when the connection is done with

	mu    sync.Mutex
	conns map[net.Conn]struct{}
	done  bool
	wg    sync.WaitGroup
}

// ServeConns starts accepting on l; serve runs for each connection, which
// is closed when serve returns.
func ServeConns(l net.Listener, serve func(net.Conn)) *ConnServer {
	s := &ConnServer{L: l, serve: serve, conns: map[net.Conn]struct{}{}}
	s.wg.Add(1)
	go s.accept()
	return s
}

func (s *ConnServer) accept() {
	defer s.wg.Done()
	for {
		nc, err := s.L.Accept()
		if err != nil {
			return
		}
		s.mu.Lock()
		if s.done {
			s.mu.Unlock()
			nc.Close()
			return
		}
		s.conns[nc] = struct{}{}
		s.wg.Add(1)
		s.mu.Unlock()
		go func() {
			defer s.wg.Done()
			s.serve(nc)
			nc.Close()
			s.mu.Lock()
			delete(s.conns, nc)
			s.mu.Unlock()
		}()
	}
}

// Close stops accepting, closes every connection and waits for their
// goroutines.
func (s *ConnServer) Close() error {
	s.mu.Lock()
	s.done = true
	s.L.Close()
	for nc := range s.conns {
		nc.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
	return nil
}
