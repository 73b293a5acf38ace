package conn

// pendingCalls maps our tags to the calls waiting for their answers. Our
// tags count up, so a ring indexed by a tag's low bits finds nearly every
// call without hashing; a call still waiting when the ring comes round to
// its slot again (a slow responder) moves to a map. Guarded by Conn.pmu.
type pendingCalls struct {
	ring []pendingSlot // length a power of two
	old  map[uint64]*call
	n    int // calls held, in the ring and in old
}

// pendingSlot holds one call; a used slot with a nil call is a call whose
// caller gave up: its answer is still due, and dropped when it comes.
type pendingSlot struct {
	tag  uint64
	cl   *call
	used bool
}

const minPendingRing = 64

func (p *pendingCalls) len() int { return p.n }

// put adds the call for tag, which is new.
func (p *pendingCalls) put(tag uint64, cl *call) {
	if p.n >= len(p.ring)/2 {
		p.grow()
	}
	s := &p.ring[tag&uint64(len(p.ring)-1)]
	if s.used {
		p.moveOld(*s)
	}
	*s = pendingSlot{tag: tag, cl: cl, used: true}
	p.n++
}

func (p *pendingCalls) moveOld(s pendingSlot) {
	if p.old == nil {
		p.old = make(map[uint64]*call)
	}
	p.old[s.tag] = s.cl
}

// grow doubles the ring, keeping the calls it holds.
func (p *pendingCalls) grow() {
	prev := p.ring
	p.ring = make([]pendingSlot, max(2*len(prev), minPendingRing))
	mask := uint64(len(p.ring) - 1)
	for _, s := range prev {
		if !s.used {
			continue
		}
		d := &p.ring[s.tag&mask]
		if d.used {
			// Keep the newer call in the ring: it is likelier to be
			// answered soon.
			if d.tag > s.tag {
				p.moveOld(s)
				continue
			}
			p.moveOld(*d)
		}
		*d = s
	}
}

// lookup returns the call for tag, and whether tag is pending at all.
func (p *pendingCalls) lookup(tag uint64) (*call, bool) {
	if len(p.ring) > 0 {
		if s := &p.ring[tag&uint64(len(p.ring)-1)]; s.used && s.tag == tag {
			return s.cl, true
		}
	}
	cl, ok := p.old[tag]
	return cl, ok
}

// remove forgets tag.
func (p *pendingCalls) remove(tag uint64) {
	if len(p.ring) > 0 {
		if s := &p.ring[tag&uint64(len(p.ring)-1)]; s.used && s.tag == tag {
			*s = pendingSlot{}
			p.n--
			p.shrink()
			return
		}
	}
	if _, ok := p.old[tag]; ok {
		delete(p.old, tag)
		p.n--
		p.shrink()
	}
}

// shrink lets a ring grown by a burst go once nothing is pending.
func (p *pendingCalls) shrink() {
	if p.n == 0 && len(p.ring) > 4096 {
		*p = pendingCalls{}
	}
}

// cancel keeps tag pending with no call, so that its answer is dropped.
func (p *pendingCalls) cancel(tag uint64) {
	if len(p.ring) > 0 {
		if s := &p.ring[tag&uint64(len(p.ring)-1)]; s.used && s.tag == tag {
			s.cl = nil
			return
		}
	}
	if _, ok := p.old[tag]; ok {
		p.old[tag] = nil
	}
}

// drain returns every call held (cancelled ones excepted) and empties p.
func (p *pendingCalls) drain() []*call {
	var out []*call
	for _, s := range p.ring {
		if s.used && s.cl != nil {
			out = append(out, s.cl)
		}
	}
	for _, cl := range p.old {
		if cl != nil {
			out = append(out, cl)
		}
	}
	*p = pendingCalls{}
	return out
}
