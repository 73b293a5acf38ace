package main

import (
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"
)

// tunnelLimits counts open tunnels per route and per client identity.
// acquire and the release it returns are the only ways in; both take mu,
// which is never held across anything else.
type tunnelLimits struct {
	maxRoute, maxClient int
	mu                  sync.Mutex
	perRoute            map[string]int
	perClient           map[string]int
	refusedRoute        atomic.Int64
	refusedClient       atomic.Int64
	warn                *rateLog
}

func newTunnelLimits(maxRoute, maxClient int, warn *rateLog) *tunnelLimits {
	return &tunnelLimits{maxRoute: maxRoute, maxClient: maxClient, warn: warn,
		perRoute: map[string]int{}, perClient: map[string]int{}}
}

// setCaps changes the caps (SIGHUP); tunnels open over a lowered cap go
// on, new ones wait for room.
func (l *tunnelLimits) setCaps(maxRoute, maxClient int) {
	l.mu.Lock()
	l.maxRoute, l.maxClient = maxRoute, maxClient
	l.mu.Unlock()
}

// acquire takes a tunnel slot for client on route, or says which limit
// refuses it. release runs once however often it is called.
func (l *tunnelLimits) acquire(route, client string) (release func(), err error) {
	l.mu.Lock()
	switch {
	case l.maxRoute > 0 && l.perRoute[route] >= l.maxRoute:
		l.mu.Unlock()
		l.refusedRoute.Add(1)
		l.warn.warn("tunnel-route", "tunnel refused: route at --max-tunnels-per-route", "route", route, "limit", l.maxRoute)
		return nil, fmt.Errorf("route %q has %d tunnels open, its limit", route, l.maxRoute)
	case l.maxClient > 0 && l.perClient[client] >= l.maxClient:
		l.mu.Unlock()
		l.refusedClient.Add(1)
		l.warn.warn("tunnel-client", "tunnel refused: client at --max-tunnels-per-client", "client", client, "limit", l.maxClient)
		return nil, fmt.Errorf("client %s has %d tunnels open, its limit", client, l.maxClient)
	}
	l.perRoute[route]++
	l.perClient[client]++
	l.mu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			l.mu.Lock()
			defer l.mu.Unlock()
			if l.perRoute[route]--; l.perRoute[route] == 0 {
				delete(l.perRoute, route)
			}
			if l.perClient[client]--; l.perClient[client] == 0 {
				delete(l.perClient, client)
			}
		})
	}, nil
}

// rateLog logs a warning of each kind at most once per interval, and says
// how many it held back: a flood must not become a flood of log lines.
type rateLog struct {
	log      *slog.Logger
	interval time.Duration
	mu       sync.Mutex
	kinds    map[string]*rateKind
}

type rateKind struct {
	last       time.Time
	suppressed int
}

func newRateLog(log *slog.Logger) *rateLog {
	return &rateLog{log: log, interval: time.Second, kinds: map[string]*rateKind{}}
}

func (r *rateLog) warn(kind, msg string, attrs ...any) {
	r.mu.Lock()
	k := r.kinds[kind]
	if k == nil {
		k = &rateKind{}
		r.kinds[kind] = k
	}
	now := time.Now()
	if !k.last.IsZero() && now.Sub(k.last) < r.interval {
		k.suppressed++
		r.mu.Unlock()
		return
	}
	n := k.suppressed
	k.last, k.suppressed = now, 0
	r.mu.Unlock()
	if n > 0 {
		attrs = append(attrs, "suppressed", n)
	}
	r.log.Warn(msg, attrs...)
}
