package mux

import (
	"sync"
	"time"
)

// warnEvery is how often each kind of limit warning may be logged: a flood
// hits a cap once per connection, and a line per connection would be a
// second flood, into the logs.
const warnEvery = time.Second

// rateLog lets one warning of each verdict through per warnEvery and
// counts the rest, to be reported on the next line of that kind.
type rateLog struct {
	mu         sync.Mutex
	next       [numWarnings]time.Time
	suppressed [numWarnings]int64
}

// The warning kinds after the verdicts': a deadline shortened under
// pressure, and a matched connection that no Accept took in time.
const (
	warnShortened = refusedClosed + 1 + iota
	warnUndelivered
	numWarnings
)

// allow reports whether a warning of kind k may be logged now, and how many
// were suppressed since the last one that was.
func (r *rateLog) allow(k verdict, now time.Time) (suppressed int64, ok bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if now.Before(r.next[k]) {
		r.suppressed[k]++
		return 0, false
	}
	suppressed, r.suppressed[k] = r.suppressed[k], 0
	r.next[k] = now.Add(warnEvery)
	return suppressed, true
}
