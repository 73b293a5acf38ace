package main

import (
	"context"
	"encoding/json"
	"net/http"
	"sync"
	"time"
)

// The status page's graphs: a sample of serve's counters every
// historyEvery, the last historyLen kept (15 minutes), served at
// /history.json with one more taken at the request; the page draws rates
// between neighbours.
const (
	historyEvery = 5 * time.Second
	historyLen   = int(15*time.Minute/historyEvery) + 1
)

// sample is the counters since start at T (Unix milliseconds).
type sample struct {
	T       int64            `json:"t"`
	Conns   map[string]int64 `json:"conns"`
	Calls   int64            `json:"calls"`
	Bytes   int64            `json:"bytes"`
	Refused map[string]int64 `json:"refused"`
}

type history struct {
	mu   sync.Mutex
	ring []sample // oldest first, at most historyLen
}

func (s *stats) sample(cfg *serveConfig) sample {
	st := s.snapshot(cfg, "")
	return sample{T: time.Now().UnixMilli(), Conns: st.Connections, Calls: st.AMPCalls,
		Bytes: st.Tunnels.BytesUp + st.Tunnels.BytesDown, Refused: st.Refused}
}

func (h *history) add(x sample) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.ring) == historyLen {
		h.ring = append(h.ring[:0], h.ring[1:]...)
	}
	h.ring = append(h.ring, x)
}

// record samples s every historyEvery until ctx ends, the first now.
func (h *history) record(ctx context.Context, s *stats, cfg func() *serveConfig) {
	h.add(s.sample(cfg()))
	t := time.NewTicker(historyEvery)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			h.add(s.sample(cfg()))
		case <-ctx.Done():
			return
		}
	}
}

func (h *history) handler(s *stats, cfg func() *serveConfig) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		h.mu.Lock()
		out := append([]sample(nil), h.ring...)
		h.mu.Unlock()
		out = append(out, s.sample(cfg()))
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		json.NewEncoder(w).Encode(out)
	}
}
