package mux

import (
	"container/list"
	"math"
	"net"
	"net/netip"
	"sync"
	"time"
)

// The source table decides which connections the mux keeps while it holds
// them (sniffing, then matched and waiting for their class's Accept), and
// which one goes when a cap is reached.
//
// Invariant: table.mu guards every field of table and of source (but
// source.key, which never changes, and the atomic proxy counters), and the
// src, elem, talking, class, gone and state fields of every sniffConn (src
// is set before anyone else sees it, and changes at most once after, in
// rekey, while it sniffs). A sniffConn is counted in table.open and in its source's conns
// from admit until its state becomes stateGone (release, an eviction or
// closeAll), which happens once. While its state is stateSniffing it is
// also counted in table.sniffing and sits in exactly one of its source's
// lists, silent (by accept time) or talking (by first byte); while it is
// stateWaiting (cmux matched it, no Accept has taken it) it is counted in
// table.waiting and sits in its source's waiting list (by match time). A
// source with n > 0 connections sniffing sits in table.bySniffing at n,
// and one with n > 0 held (sniffing or waiting) in table.byHeld at n. A
// source with no connections left is deleted. Every operation is O(1) but
// closeAll; nothing under mu blocks or closes a socket (the caller closes
// evicted connections after Unlock).

// source is one client for the per-source caps.
type source struct {
	key     netip.Prefix
	silent  list.List     // *sniffConn sniffing that have sent no byte, by accept time
	talking list.List     // *sniffConn sniffing that have, by their first byte's time
	waiting list.List     // *sniffConn matched, not yet taken by an Accept, by match time
	conns   int           // held (sniffing or waiting) plus handed out and not yet closed
	rank    *list.Element // in table.bySniffing
	heldAt  *list.Element // in table.byHeld
}

func (s *source) sniffing() int { return s.silent.Len() + s.talking.Len() }

// held is how many of s's connections the mux holds: sniffing, or waiting
// for their class's Accept.
func (s *source) held() int { return s.sniffing() + s.waiting.Len() }

// oldest is the sniffer to evict: the oldest silent one, else the talker
// that started longest ago. Its caller knows that s has one.
func (s *source) oldest() *sniffConn {
	if e := s.silent.Front(); e != nil {
		return e.Value.(*sniffConn)
	}
	return s.talking.Front().Value.(*sniffConn)
}

// idlest is the held connection to evict under MaxConns: the oldest silent
// sniffer, else the connection that has waited longest for an Accept (its
// class has no server, or one that does not keep up), else the oldest
// talker. Its caller knows that s holds one.
func (s *source) idlest() *sniffConn {
	if e := s.silent.Front(); e != nil {
		return e.Value.(*sniffConn)
	}
	if e := s.waiting.Front(); e != nil {
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
	// Waiting connections have been matched to a class and wait for its
	// listener's Accept (at most SniffTimeout); they are not sniffing.
	Waiting int64
	// Open connections count against MaxConns: those sniffing, those
	// waiting, and those handed out to a class and not yet closed.
	Open int64
	// Sources have at least one connection open.
	Sources int64
	// EvictedPerSource sniffing connections were closed because their
	// source reached MaxSniffingPerSource.
	EvictedPerSource int64
	// EvictedGlobal connections of the source the mux held most of were
	// closed: sniffing ones to stay under MaxSniffing, sniffing or waiting
	// ones to stay under MaxConns.
	EvictedGlobal int64
	// EvictedWaiting are those of EvictedGlobal that were waiting for
	// their class's Accept: a class nobody serves, or whose server does
	// not keep up.
	EvictedWaiting int64
	// RefusedPerSource new connections were closed at once: their source
	// had MaxConnsPerSource open.
	RefusedPerSource int64
	// RefusedTotal new connections were closed at once: MaxConns were
	// open and none of them was sniffing or waiting.
	RefusedTotal int64
	// DeadlinesShortened connections were given MinSniffTimeout instead
	// of SniffTimeout, being accepted under pressure.
	DeadlinesShortened int64
	// ProxyHeaders connections from Config.ProxyFrom sent a PROXY header
	// that named their client.
	ProxyHeaders int64
	// ProxyRefused connections were closed for a PROXY header: from a
	// source not in ProxyFrom, a second one, or malformed.
	ProxyRefused int64
}

// Stats returns the connection limits' counters.
func (s *Server) Stats() Stats { return s.root.t.stats() }

// verdict is what admit did beyond counting a connection in.
type verdict int

const (
	admitted verdict = iota
	evictedSource
	evictedSniffing
	evictedConns   // a sniffer
	evictedWaiting // under MaxConns, one waiting for an Accept
	refusedSource
	refusedConns
	refusedClosed
	warnProxyRefused // not admit's: a key for the rate-limited warning
)

// ranking orders sources by a count (how many they have sniffing, or
// held), so that one with the most is found in O(1).
type ranking struct {
	by   []*list.List // by[n]: *source with n, in the order they got there
	most int          // the highest n with by[n] not empty; 0 if none has any
}

// move takes src, whose element in r is *at, from old to n, which differ
// by one.
func (r *ranking) move(src *source, at **list.Element, old, n int) {
	if *at != nil {
		r.by[old].Remove(*at)
		*at = nil
	}
	if n > 0 {
		for len(r.by) <= n {
			r.by = append(r.by, list.New())
		}
		*at = r.by[n].PushBack(src)
	}
	r.most = max(r.most, n)
	if r.most > 0 && r.by[r.most].Len() == 0 {
		r.most-- // a count moved down by one, so the next one down has it
	}
}

// top is a source with the most; some source has one.
func (r *ranking) top() *source { return r.by[r.most].Front().Value.(*source) }

type table struct {
	lim   limits // under mu (SetLimits)
	proxy proxyCounters
	// warn and warnProxy log what a PROXY header's rekey did, and a
	// refused header (set by newRootListener, read-only after).
	warn      func(v verdict, key netip.Prefix, victim *sniffConn)
	warnProxy func(*ProxyError)

	mu         sync.Mutex
	sources    map[netip.Prefix]*source
	bySniffing ranking // sources by how many they have sniffing
	byHeld     ranking // sources by how many the mux holds (sniffing or waiting)
	sniffing   int
	silent     int // of sniffing
	waiting    int
	open       int
	closed     bool // by closeAll: admit refuses
	st         Stats
}

func newTable(lim limits) *table {
	return &table{lim: lim, sources: make(map[netip.Prefix]*source)}
}

func (t *table) limitsNow() limits {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.lim
}

func (t *table) setLimits(lim limits) {
	t.mu.Lock()
	t.lim = lim
	t.mu.Unlock()
}

// admit counts nc in as sniffing from key, making room first if a cap is
// reached. It returns nc's wrapper, nil if nc is refused, and the
// connection evicted to make room, which the caller closes.
//
// A balancer's connections (balancer set: a source in Config.ProxyFrom)
// are not held to the per-source caps until their PROXY header names
// their client (rekey): they are everyone's.
func (t *table) admit(nc net.Conn, key netip.Prefix, now time.Time, balancer bool) (sc, victim *sniffConn, v verdict) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return nil, nil, refusedClosed
	}
	src := t.sources[key]
	perSource := src != nil && !balancer
	// One eviction makes room under every cap: it uncounts a connection
	// that was sniffing (or, under MaxConns, waiting) from the open total
	// and from its source.
	switch {
	case perSource && src.conns >= t.lim.connsPerSource:
		// Refused, not evicted: a source at its cap cannot churn its own.
		t.st.RefusedPerSource++
		return nil, nil, refusedSource
	case perSource && src.sniffing() >= t.lim.sniffingPerSource:
		victim, v = src.oldest(), evictedSource
		t.st.EvictedPerSource++
	case t.sniffing >= t.lim.sniffing:
		victim, v = t.bySniffing.top().oldest(), evictedSniffing
		t.st.EvictedGlobal++
	case t.open >= t.lim.conns:
		if t.sniffing+t.waiting == 0 {
			t.st.RefusedTotal++
			return nil, nil, refusedConns
		}
		victim, v = t.byHeld.top().idlest(), evictedConns
		t.st.EvictedGlobal++
		if victim.state == stateWaiting {
			v = evictedWaiting
			t.st.EvictedWaiting++
		}
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
	t.bySniffing.move(src, &src.rank, src.sniffing()-1, src.sniffing())
	t.byHeld.move(src, &src.heldAt, src.held()-1, src.held())
	timeout := t.lim.timeout
	if t.lim.short < timeout && (t.sniffing > t.lim.sniffing/2 || !balancer && src.sniffing() > t.lim.sniffingPerSource/2) {
		timeout = t.lim.short
		sc.shortened = true
		t.st.DeadlinesShortened++
	}
	sc.deadline, sc.accepted = now.Add(timeout), now
	return sc, victim, v
}

// rekey moves c, sniffing, from its balancer's source to key, its
// client's, as its PROXY header says: there it is held to the per-source
// caps as if it had just been accepted (refusedSource: its caller closes
// it; or the client's oldest sniffer is evicted, returned for its caller
// to close). c has sent nothing of its own yet (its header is read before
// any byte goes to sniffing), so it joins the client's silent connections
// last, as if just accepted.
func (t *table) rekey(c *sniffConn, key netip.Prefix) (victim *sniffConn, v verdict) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if c.state != stateSniffing || c.src.key == key {
		return nil, admitted
	}
	dst := t.sources[key]
	switch {
	case dst != nil && dst.conns >= t.lim.connsPerSource:
		t.st.RefusedPerSource++
		return nil, refusedSource
	case dst != nil && dst.sniffing() >= t.lim.sniffingPerSource:
		victim, v = dst.oldest(), evictedSource
		t.st.EvictedPerSource++
		t.drop(victim)
		dst = t.sources[key]
	}
	old := c.src
	if c.talking {
		old.talking.Remove(c.elem)
	} else {
		old.silent.Remove(c.elem)
	}
	t.bySniffing.move(old, &old.rank, old.sniffing()+1, old.sniffing())
	t.byHeld.move(old, &old.heldAt, old.held()+1, old.held())
	if old.conns--; old.conns == 0 {
		delete(t.sources, old.key)
	}
	if dst == nil {
		dst = &source{key: key}
		t.sources[key] = dst
	}
	c.src = dst
	if c.talking {
		c.elem = dst.talking.PushBack(c)
	} else {
		c.elem = dst.silent.PushBack(c)
	}
	dst.conns++
	t.bySniffing.move(dst, &dst.rank, dst.sniffing()-1, dst.sniffing())
	t.byHeld.move(dst, &dst.heldAt, dst.held()-1, dst.held())
	return victim, v
}

// unsniff takes c, sniffing, out of the sniffing lists and counts (not out
// of byHeld: its caller moves it there, or not).
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
	t.bySniffing.move(src, &src.rank, src.sniffing()+1, src.sniffing())
}

// unwait takes c, waiting, out of its source's waiting list and byHeld.
func (t *table) unwait(c *sniffConn) {
	src := c.src
	src.waiting.Remove(c.elem)
	c.elem = nil
	t.waiting--
	t.byHeld.move(src, &src.heldAt, src.held()+1, src.held())
}

// drop uncounts c altogether; again is a no-op.
func (t *table) drop(c *sniffConn) {
	switch c.state {
	case stateGone:
		return
	case stateSniffing:
		t.unsniff(c)
		t.byHeld.move(c.src, &c.src.heldAt, c.src.held()+1, c.src.held())
	case stateWaiting:
		t.unwait(c)
	}
	c.state = stateGone
	if c.gone != nil {
		close(c.gone)
	}
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

// matched moves c from sniffing to waiting for class's Accept: it still
// counts as open, no longer as sniffing, and may be evicted only under
// MaxConns. It reports false if c was evicted or closed meanwhile; again
// is a no-op.
func (t *table) matched(c *sniffConn, class Class) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	switch c.state {
	case stateSniffing:
	case stateGone:
		return false
	default:
		return true
	}
	t.unsniff(c) // held stays: one sniffing less, one waiting more
	c.state = stateWaiting
	c.class = class
	c.elem = c.src.waiting.PushBack(c)
	t.waiting++
	c.matched.Store(true)
	return true
}

// take hands c, waiting, to its class's server: it still counts as open,
// and the mux no longer holds it. It reports false if c was evicted or
// closed meanwhile.
func (t *table) take(c *sniffConn) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if c.state != stateWaiting {
		return false
	}
	t.unwait(c)
	c.state = stateHanded
	return true
}

// closedChan is closed: what watch returns for a connection already gone.
var closedChan = func() chan struct{} { c := make(chan struct{}); close(c); return c }()

// watch returns a channel closed when c, waiting, is evicted or closed.
func (t *table) watch(c *sniffConn) <-chan struct{} {
	t.mu.Lock()
	defer t.mu.Unlock()
	switch {
	case c.state == stateGone:
		return closedChan
	case c.gone == nil:
		c.gone = make(chan struct{})
	}
	return c.gone
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

// closeAll makes admit refuse from now on, uncounts the connections the
// mux still holds (sniffing or waiting, which no Accept will take now) and
// returns them, for Shutdown to close.
func (t *table) closeAll() []*sniffConn {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.closed = true
	conns := make([]*sniffConn, 0, t.sniffing+t.waiting)
	for _, src := range t.sources {
		for _, l := range []*list.List{&src.silent, &src.talking, &src.waiting} {
			for e := l.Front(); e != nil; e = e.Next() {
				conns = append(conns, e.Value.(*sniffConn))
			}
		}
	}
	for _, c := range conns {
		t.drop(c)
	}
	return conns
}

func (t *table) stats() Stats {
	t.mu.Lock()
	defer t.mu.Unlock()
	st := t.st
	st.Sniffing, st.Silent, st.Waiting, st.Open = int64(t.sniffing), int64(t.silent), int64(t.waiting), int64(t.open)
	st.Sources = int64(len(t.sources))
	st.ProxyHeaders, st.ProxyRefused = t.proxy.headers.Load(), t.proxy.refused.Load()
	return st
}
