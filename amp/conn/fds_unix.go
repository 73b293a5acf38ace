//go:build unix

package conn

import (
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"syscall"

	"github.com/ampmux/ampmux/amp"
)

// Descriptor passing, as Twisted does it: each descriptor travels as
// SCM_RIGHTS ancillary data with the stream bytes, and the box carries its
// ordinal (0, 1, 2... per direction per connection).

// fdQueue holds descriptors received and not yet claimed by a box.
type fdQueue struct {
	mu   sync.Mutex
	next int
	fds  map[int]int
}

func (q *fdQueue) add(fds []int) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.fds == nil {
		q.fds = make(map[int]int)
	}
	for _, fd := range fds {
		q.fds[q.next] = fd
		q.next++
	}
}

func (q *fdQueue) take(ordinal int) (int, bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	fd, ok := q.fds[ordinal]
	delete(q.fds, ordinal)
	return fd, ok
}

func (q *fdQueue) closeAll() {
	q.mu.Lock()
	defer q.mu.Unlock()
	for k, fd := range q.fds {
		syscall.Close(fd)
		delete(q.fds, k)
	}
}

// descriptorReader reads a Unix socket's stream with the descriptors sent
// along; nil for any other connection.
func descriptorReader(nc net.Conn) (io.Reader, *fdQueue) {
	uc, ok := nc.(*net.UnixConn)
	if !ok {
		return nil, nil
	}
	q := &fdQueue{}
	return &unixReader{uc: uc, q: q}, q
}

// unixReader reads stream bytes and collects descriptors sent with them.
type unixReader struct {
	uc  *net.UnixConn
	q   *fdQueue
	oob [256]byte
}

func (r *unixReader) Read(p []byte) (int, error) {
	n, oobn, _, _, err := r.uc.ReadMsgUnix(p, r.oob[:])
	if oobn > 0 {
		msgs, perr := syscall.ParseSocketControlMessage(r.oob[:oobn])
		if perr == nil {
			for _, m := range msgs {
				if fds, err := syscall.ParseUnixRights(&m); err == nil {
					r.q.add(fds)
				}
			}
		}
	}
	if n == 0 && err == nil {
		err = io.ErrNoProgress
	}
	return n, err
}

// SendFD implements amp.FDTransport: f goes out with the next write, and
// is closed once sent.
func (c *Conn) SendFD(f *os.File) (int, error) {
	if c.fdIn == nil {
		return 0, amp.ErrNoDescriptors
	}
	if f == nil {
		return 0, fmt.Errorf("conn: nil descriptor: %w", amp.ErrInvalidValue)
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.w.closing {
		return 0, &LostError{Cause: net.ErrClosed}
	}
	c.w.fdsOut = append(c.w.fdsOut, int(f.Fd()))
	c.w.fdsClose = append(c.w.fdsClose, f)
	n := c.w.sentFDs
	c.w.sentFDs++
	return n, nil
}

// ReceivedFD implements amp.FDTransport.
func (c *Conn) ReceivedFD(ordinal int) (*os.File, error) {
	if c.fdIn == nil {
		return nil, amp.ErrNoDescriptors
	}
	fd, ok := c.fdIn.take(ordinal)
	if !ok {
		return nil, fmt.Errorf("conn: no descriptor %d was received: %w", ordinal, amp.ErrInvalidValue)
	}
	return os.NewFile(uintptr(fd), fmt.Sprintf("amp-descriptor-%d", ordinal)), nil
}

func (c *Conn) writeWithFDs(out []byte, fds []int) error {
	uc := c.nc.(*net.UnixConn)
	n, _, err := uc.WriteMsgUnix(out, syscall.UnixRights(fds...), nil)
	if err == nil && n < len(out) {
		_, err = uc.Write(out[n:])
	}
	return err
}

func (c *Conn) releaseFDs() {
	if c.fdIn != nil {
		c.fdIn.closeAll()
	}
	c.wmu.Lock()
	closers := c.w.fdsClose
	c.w.fdsClose, c.w.fdsOut = nil, nil
	c.wmu.Unlock()
	for _, f := range closers {
		f.Close()
	}
}

var _ amp.FDTransport = (*Conn)(nil)
