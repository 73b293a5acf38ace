//go:build !unix

package conn

import (
	"errors"
	"io"
	"net"
	"os"

	"github.com/ampmux/ampmux/amp"
)

// Descriptor passing needs Unix sockets: on other systems every
// connection reports amp.ErrNoDescriptors.

type fdQueue struct{}

func descriptorReader(net.Conn) (io.Reader, *fdQueue) { return nil, nil }

// SendFD implements amp.FDTransport.
func (c *Conn) SendFD(*os.File) (int, error) { return 0, amp.ErrNoDescriptors }

// ReceivedFD implements amp.FDTransport.
func (c *Conn) ReceivedFD(int) (*os.File, error) { return nil, amp.ErrNoDescriptors }

func (c *Conn) writeWithFDs([]byte, []int) error {
	return errors.New("conn: descriptor passing needs a Unix socket")
}

func (c *Conn) releaseFDs() {}

var _ amp.FDTransport = (*Conn)(nil)
