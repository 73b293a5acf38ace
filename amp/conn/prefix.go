package conn

import "net"

// prefixConn is a net.Conn whose first reads return bytes that were read
// from it earlier (by the AMP decoder) and not consumed.
type prefixConn struct {
	net.Conn
	pre []byte
}

func newPrefixConn(nc net.Conn, pre []byte) net.Conn {
	if len(pre) == 0 {
		return nc
	}
	return &prefixConn{Conn: nc, pre: append([]byte(nil), pre...)}
}

func (p *prefixConn) Read(b []byte) (int, error) {
	if len(p.pre) > 0 {
		n := copy(b, p.pre)
		p.pre = p.pre[n:]
		if len(p.pre) == 0 {
			p.pre = nil
		}
		return n, nil
	}
	return p.Conn.Read(b)
}

// NetConn returns the connection under the replayed bytes.
func (p *prefixConn) NetConn() net.Conn { return p.Conn }
