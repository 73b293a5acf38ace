package mux

import (
	"container/list"
	"math"
	"net"
	"net/netip"
	"sync"
	"time"
)

// The source table decides which connections the mux keeps while they are
// sniffed, and which one goes when a cap is reached.
//
// Invariant: table.mu guards every field of table and of source (but
// source.key, which never changes), and the elem, talking and state
// fields of every sniffConn (whose src is set before anyone else sees it).
// A sniffConn is counted in table.open and in its source's conns from
// admit until its state becomes stateGone (release or an eviction), which
// happens once. While its state is stateSniffing it is also counted in
// table.sniffing and sits in exactly one of its source's lists (silent, by
// accept time, or talking, by first byte), and a source with n > 0
// connections sniffing sits in table.byCount[n]. A source with no
// connections left is deleted. Every operation is O(1) but closeAll;
// nothing under mu blocks or closes a socket (the caller closes evicted
// connections after Unlock).

// source is one client for the per-source caps.
type source struct {
	key     netip.Prefix
	silent  list.List // *sniffConn sniffing that have sent no byte, by accept time
	talking list.List // *sniffConn sniffing that have, by their first byte's time
	conns   int       // sniffing plus handed out and not yet closed
	rank    *list.Element
}

func (s *source) sniffing() int { return s.silent.Len() + s.talking.Len() }

// oldest is the sniffer to evict: the oldest silent one, else the talker
// that started longest ago. Its caller knows that s has one.
func (s *source) oldest() *sniffConn {
	if e := s.silent.Front(); e != nil {
		return e.Value.(*sniffConn)
	}
	return s.talking.Front().Value.(*sniffConn)
}

// sourceOf is the client a connection counts against: its IP address, or
// for IPv6 its /64 (one subscriber's allocation, in which a host may pick
// any address). Connections that are not IP (a unix socket, a pipe) are one
// source. Everything keys through here so that issue 13 (the PROXY
// protocol) can substitute the address the proxy reports.
func sourceOf(a net.Addr) netip.Prefix {
	var ip netip.Addr
	switch a := a.(type) {
	case *net.TCPAddr:
		ip = a.AddrPort().Addr()
	case nil:
	default:
		if ap, err := netip.ParseAddrPort(a.String()); err == nil {
			ip = ap.Addr()
		}
	}
	ip = ip.Unmap().WithZone("")
	bits := 32
	if ip.Is6() {
		bits = 64
	}
	p, _ := ip.Prefix(bits) // the zero Prefix when ip is not valid
	return p
}

// limits are a Server's caps with the defaults applied; math.MaxInt is no
// cap.
type limits struct {
	sniffing, sniffingPerSource int
	conns, connsPerSource       int
	timeout, short              time.Duration
}

func (cfg *Config) limits() limits {
	capOf := func(n, def int) int {
		switch {
		case n < 0:
			return math.MaxInt
		case n == 0:
			return def
		}
		return n
	}
	lim := limits{
		sniffing:          capOf(cfg.MaxSniffing, DefaultMaxSniffing),
		sniffingPerSource: capOf(cfg.MaxSniffingPerSource, DefaultMaxSniffingPerSource),
		conns:             capOf(cfg.MaxConns, math.MaxInt),
		connsPerSource:    capOf(cfg.MaxConnsPerSource, math.MaxInt),
		timeout:           cfg.SniffTimeout,
		short:             cfg.MinSniffTimeout,
	}
	if cfg.MaxConns == 0 {
		if n := descriptorLimit(); n > 0 {
			lim.conns = max(n/2, 1)
		}
	}
	if lim.short <= 0 {
		lim.short = max(lim.timeout/10, DefaultMinSniffTimeout)
	}
	lim.short = min(lim.short, lim.timeout)
	return lim
}

// Stats counts what the connection limits did since New, and what is open
// now. Server.Stats returns a copy.
type Stats struct {
	// Sniffing connections have been accepted and their class is not yet
	// known.
	Sniffing int64
	// Silent ones of those sniffing have sent no byte yet.
	Silent int64
	// Open connections count against MaxConns: those sniffing and those
	// handed out to a class and not yet closed.
	Open int64
	// Sources have at least one connection open.
	Sources int64
	// EvictedPerSource sniffing connections were closed because their
	// source reached MaxSniffingPerSource.
	EvictedPerSource int64
	// EvictedGlobal sniffing connections (of the source sniffing most)
	// were closed to stay under MaxSniffing or MaxConns.
	EvictedGlobal int64
	// RefusedPerSource new connections were closed at once: their source
	// had MaxConnsPerSource open.
	RefusedPerSource int64
	// RefusedTotal new connections were closed at once: MaxConns were
	// open and none of them was sniffing.
	RefusedTotal int64
	// DeadlinesShortened connections were given MinSniffTimeout instead
	// of SniffTimeout, being accepted under pressure.
	DeadlinesShortened int64
}

// Stats returns the connection limits' counters.
func (s *Server) Stats() Stats { return s.root.t.stats() }

// verdict is what admit did beyond counting a connection in.
type verdict int

const (
	admitted verdict = iota
	evictedSource
	evictedSniffing
	evictedConns
	refusedSource
	refusedConns
	refusedClosed
)

type table struct {
	lim      limits
	mu       sync.Mutex
	sources  map[netip.Prefix]*source
	byCount  []*list.List // byCount[n]: *source with n sniffing, in the order they got there
	most     int          // the highest n with byCount[n] not empty; 0 if none sniffs
	sniffing int
	silent   int // of sniffing
	open     int
	closed   bool // by closeAll: admit refuses
	st       Stats
}

func newTable(lim limits) *table {
	return &table{lim: lim, sources: make(map[netip.Prefix]*source)}
}

// admit counts nc in as sniffing from key, making room first if a cap is
// reached. It returns nc's wrapper, nil if nc is refused, and the sniffer
// evicted to make room, which the caller closes.
func (t *table) admit(nc net.Conn, key netip.Prefix, now time.Time) (sc, victim *sniffConn, v verdict) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return nil, nil, refusedClosed
	}
	src := t.sources[key]
	// One eviction makes room under every cap: it uncounts a connection
	// that was sniffing, from the open total and from its source.
	switch {
	case src != nil && src.conns >= t.lim.connsPerSource:
		// Refused, not evicted: a source at its cap cannot churn its own.
		t.st.RefusedPerSource++
		return nil, nil, refusedSource
	case src != nil && src.sniffing() >= t.lim.sniffingPerSource:
		victim, v = src.oldest(), evictedSource
		t.st.EvictedPerSource++
	case t.sniffing >= t.lim.sniffing:
		victim, v = t.biggest().oldest(), evictedSniffing
		t.st.EvictedGlobal++
	case t.open >= t.lim.conns:
		if t.sniffing == 0 {
			t.st.RefusedTotal++
			return nil, nil, refusedConns
		}
		victim, v = t.biggest().oldest(), evictedConns
		t.st.EvictedGlobal++
	}
	if victim != nil {
		t.drop(victim)
		src = t.sources[key] // drop may have deleted it
	}
	if src == nil {
		src = &source{key: key}
		t.sources[key] = src
	}
	sc = &sniffConn{Conn: nc, t: t, src: src}
	sc.elem = src.silent.PushBack(sc)
	src.conns++
	t.open++
	t.sniffing++
	t.silent++
	t.rerank(src, src.sniffing()-1)
	timeout := t.lim.timeout
	if t.lim.short < timeout && (t.sniffing > t.lim.sniffing/2 || src.sniffing() > t.lim.sniffingPerSource/2) {
		timeout = t.lim.short
		sc.shortened = true
		t.st.DeadlinesShortened++
	}
	sc.deadline = now.Add(timeout)
	return sc, victim, v
}

// biggest is the source with the most sniffing; some connection sniffs.
func (t *table) biggest() *source { return t.byCount[t.most].Front().Value.(*source) }

// rerank moves src from byCount[old] to byCount[src.sniffing()], which
// differ by one.
func (t *table) rerank(src *source, old int) {
	if src.rank != nil {
		t.byCount[old].Remove(src.rank)
		src.rank = nil
	}
	n := src.sniffing()
	if n > 0 {
		for len(t.byCount) <= n {
			t.byCount = append(t.byCount, list.New())
		}
		src.rank = t.byCount[n].PushBack(src)
	}
	t.most = max(t.most, n)
	if t.most > 0 && t.byCount[t.most].Len() == 0 {
		t.most-- // a count moved down by one, so the next one down has it
	}
}

// unsniff takes c, sniffing, out of the sniffing lists and counts.
func (t *table) unsniff(c *sniffConn) {
	src := c.src
	if c.talking {
		src.talking.Remove(c.elem)
	} else {
		src.silent.Remove(c.elem)
		t.silent--
	}
	c.elem = nil
	t.sniffing--
	t.rerank(src, src.sniffing()+1)
}

// drop uncounts c altogether; again is a no-op.
func (t *table) drop(c *sniffConn) {
	switch c.state {
	case stateGone:
		return
	case stateSniffing:
		t.unsniff(c)
	}
	c.state = stateGone
	c.src.conns--
	t.open--
	if c.src.conns == 0 {
		delete(t.sources, c.src.key)
	}
}

// release uncounts c, closed by whoever held it.
func (t *table) release(c *sniffConn) {
	t.mu.Lock()
	t.drop(c)
	t.mu.Unlock()
}

// handOut marks c matched: it still counts as open, no longer as
// sniffing. It reports false if c was evicted or closed meanwhile.
func (t *table) handOut(c *sniffConn) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if c.state != stateSniffing {
		return false
	}
	t.unsniff(c)
	c.state = stateHanded
	c.handed.Store(true)
	return true
}

// spoke moves c, sniffing, from its source's silent list to the talkers.
func (t *table) spoke(c *sniffConn) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if c.state != stateSniffing || c.talking {
		return
	}
	c.src.silent.Remove(c.elem)
	c.elem = c.src.talking.PushBack(c)
	c.talking = true
	t.silent--
}

// closeAll makes admit refuse from now on and returns the connections
// still sniffing, for Shutdown to close.
func (t *table) closeAll() []*sniffConn {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.closed = true
	conns := make([]*sniffConn, 0, t.sniffing)
	for _, src := range t.sources {
		for _, l := range []*list.List{&src.silent, &src.talking} {
			for e := l.Front(); e != nil; e = e.Next() {
				conns = append(conns, e.Value.(*sniffConn))
			}
		}
	}
	return conns
}

func (t *table) stats() Stats {
	t.mu.Lock()
	defer t.mu.Unlock()
	st := t.st
	st.Sniffing, st.Silent, st.Open = int64(t.sniffing), int64(t.silent), int64(t.open)
	st.Sources = int64(len(t.sources))
	return st
}
