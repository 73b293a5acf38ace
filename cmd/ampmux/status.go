package main

import (
	_ "embed"
	"encoding/json"
	"html/template"
	"io"
	"net/http"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ampmux/ampmux/internal/tunnel"
	"github.com/ampmux/ampmux/mux"
)

// stats are the live counters of a running serve.
type stats struct {
	started time.Time
	conns   [6]atomic.Int64 // by mux.Class, the last for unmatched
	calls   atomic.Int64
	// publishes counts routes published by agents, reconnections included.
	publishes atomic.Int64
	// exposure, if set, says who publishes an exposed route now and how
	// many standby connections the agent has ready.
	exposure func(route string) (publisher string, standby int)
	tunnels  struct {
		open, total, failed atomic.Int64
		up, down            atomic.Int64 // bytes client→backend, backend→client
	}
	history history // the graphs' samples
	mu      sync.Mutex
	routes  map[string]*routeStats
	active  map[*tunnel.Stats]openTunnel // open tunnels' live byte counts, and whose
	limits  *tunnelLimits
	// connLimits count AMP connections closed by each of connLimits.
	connLimits [len(connLimits)]atomic.Int64
	// refusals, if set, adds the other layers' counts of work refused
	// by a limit (the mux's evictions, say).
	refusals func(map[string]int64)
}

// openTunnel is an open tunnel as the status page lists it: the client's
// address (a load balancer's PROXY header's, if it sent one) and name.
type openTunnel struct {
	route, peer, client string
	since               time.Time
}

// maxListedTunnels bounds the open tunnels status.json lists.
const maxListedTunnels = 100

// track adds (open) or removes an open tunnel whose bytes count live.
func (s *stats) track(st *tunnel.Stats, t openTunnel, open bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if open {
		s.active[st] = t
	} else {
		delete(s.active, st)
	}
}

// liveBytes sums what open tunnels have moved so far, in all and by route.
func (s *stats) liveBytes() (up, down int64, byRoute map[string][2]int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	byRoute = map[string][2]int64{}
	for st, t := range s.active {
		r := t.route
		u, d := st.AToB.Load(), st.BToA.Load()
		up += u
		down += d
		v := byRoute[r]
		byRoute[r] = [2]int64{v[0] + u, v[1] + d}
	}
	return up, down, byRoute
}

type routeStats struct {
	open, total, up, down atomic.Int64
	// publishes and losses count an exposed route's publications and
	// its publisher's disconnections (so its reconnections).
	publishes, losses atomic.Int64
}

func newStats() *stats {
	return &stats{started: time.Now(), routes: map[string]*routeStats{}, active: map[*tunnel.Stats]openTunnel{}}
}

func (s *stats) route(name string) *routeStats {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.routes[name]
	if r == nil {
		r = &routeStats{}
		s.routes[name] = r
	}
	return r
}

func (s *stats) onMatch(c mux.Class) {
	if c < 0 || int(c) >= len(s.conns)-1 {
		s.conns[len(s.conns)-1].Add(1)
		return
	}
	s.conns[c].Add(1)
}

// statusJSON is the document at /status.json.
type statusJSON struct {
	Version       string           `json:"version"`
	Started       time.Time        `json:"started"`
	UptimeSeconds int64            `json:"uptime_seconds"`
	Listen        string           `json:"listen"`
	TLS           bool             `json:"tls"`
	ClientCA      bool             `json:"client_certificates_required"`
	Connections   map[string]int64 `json:"connections"`
	AMPCalls      int64            `json:"amp_calls"`
	Tunnels       tunnelJSON       `json:"tunnels"`
	Routes        []routeJSON      `json:"routes"`
	// Publishes counts agents' publications (reconnections included).
	Publishes int64 `json:"publishes"`
	// Refused counts work refused or dropped by a limit, by limit.
	Refused map[string]int64 `json:"refused"`
	// OpenTunnels lists the oldest open tunnels (at most 100): who, where.
	OpenTunnels []openTunnelJSON `json:"open_tunnels"`
}

type openTunnelJSON struct {
	Route     string    `json:"route"`
	Peer      string    `json:"peer"`
	Client    string    `json:"client,omitempty"`
	Since     time.Time `json:"since"`
	BytesUp   int64     `json:"bytes_up"`
	BytesDown int64     `json:"bytes_down"`
}

// openTunnels lists the oldest open tunnels, at most maxListedTunnels.
func (s *stats) openTunnels() []openTunnelJSON {
	s.mu.Lock()
	out := make([]openTunnelJSON, 0, min(len(s.active), maxListedTunnels))
	for st, t := range s.active {
		out = append(out, openTunnelJSON{Route: t.route, Peer: t.peer, Client: t.client, Since: t.since.UTC().Truncate(time.Second),
			BytesUp: st.AToB.Load(), BytesDown: st.BToA.Load()})
	}
	s.mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].Since.Before(out[j].Since) })
	return out[:min(len(out), maxListedTunnels)]
}

type tunnelJSON struct {
	Open      int64 `json:"open"`
	Total     int64 `json:"total"`
	Failed    int64 `json:"failed"`
	BytesUp   int64 `json:"bytes_up"`
	BytesDown int64 `json:"bytes_down"`
}

type routeJSON struct {
	Name         string   `json:"name"`
	Backend      string   `json:"backend"`
	TLSRequired  bool     `json:"tls_required"`
	AllowedNames []string `json:"allowed_names,omitempty"`
	Publishers   []string `json:"publishers,omitempty"`
	PublishedBy  string   `json:"published_by,omitempty"`
	// Exposed routes: standby connections ready, publications, and
	// publishers lost (each reconnection is a loss then a publication).
	Standby     int   `json:"standby,omitempty"`
	Publishes   int64 `json:"publishes,omitempty"`
	Disconnects int64 `json:"disconnects,omitempty"`
	Open        int64 `json:"open"`
	Total       int64 `json:"total"`
	BytesUp     int64 `json:"bytes_up"`
	BytesDown   int64 `json:"bytes_down"`
}

func (s *stats) snapshot(cfg *serveConfig, listen string) statusJSON {
	liveUp, liveDown, liveRoute := s.liveBytes()
	st := statusJSON{
		Version: versionString(), Started: s.started.UTC().Truncate(time.Second),
		UptimeSeconds: int64(time.Since(s.started).Seconds()), Listen: listen,
		TLS: cfg.TLSCert != "", ClientCA: cfg.ClientCA != "",
		Connections: map[string]int64{}, AMPCalls: s.calls.Load(),
		Tunnels: tunnelJSON{Open: s.tunnels.open.Load(), Total: s.tunnels.total.Load(), Failed: s.tunnels.failed.Load(),
			BytesUp: s.tunnels.up.Load() + liveUp, BytesDown: s.tunnels.down.Load() + liveDown},
		Routes: []routeJSON{},
	}
	for c := mux.ClassAMP; c <= mux.ClassOther; c++ {
		st.Connections[c.String()] = s.conns[c].Load()
	}
	st.Connections["unmatched"] = s.conns[len(s.conns)-1].Load()
	st.Publishes = s.publishes.Load()
	for _, r := range cfg.Routes {
		rs := s.route(r.Name)
		var by string
		var standby int
		if s.exposure != nil && len(r.Publishers) > 0 {
			by, standby = s.exposure(r.Name)
		}
		st.Routes = append(st.Routes, routeJSON{Name: r.Name, Backend: r.Backend, Publishers: r.Publishers, PublishedBy: by,
			Standby: standby, Publishes: rs.publishes.Load(), Disconnects: rs.losses.Load(),
			TLSRequired: !(cfg.AllowPlaintext || r.AllowPlaintext), AllowedNames: r.AllowedNames,
			Open: rs.open.Load(), Total: rs.total.Load(),
			BytesUp: rs.up.Load() + liveRoute[r.Name][0], BytesDown: rs.down.Load() + liveRoute[r.Name][1]})
	}
	sort.Slice(st.Routes, func(i, j int) bool { return st.Routes[i].Name < st.Routes[j].Name })
	st.OpenTunnels = s.openTunnels()
	st.Refused = map[string]int64{}
	if s.limits != nil {
		st.Refused["max_tunnels_per_route"] = s.limits.refusedRoute.Load()
		st.Refused["max_tunnels_per_client"] = s.limits.refusedClient.Load()
	}
	for i, l := range connLimits {
		st.Refused[l.name] = s.connLimits[i].Load()
	}
	if s.refusals != nil {
		s.refusals(st.Refused)
	}
	return st
}

//go:embed status.html
var statusHTML string

var statusPage = template.Must(template.New("status").Funcs(template.FuncMap{
	"bytes": humanBytes,
	"since": func(t time.Time) string { return time.Since(t).Truncate(time.Second).String() },
}).Parse(statusHTML))

// statusHandler serves the page at / and the JSON at /status.json.
func statusHandler(s *stats, cfg func() *serveConfig, listen string) http.Handler {
	m := http.NewServeMux()
	m.HandleFunc("GET /status.json", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		enc.Encode(s.snapshot(cfg(), listen))
	})
	m.HandleFunc("GET /history.json", s.history.handler(s, cfg))
	m.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		w.Header().Set("Content-Security-Policy", "default-src 'self'; style-src 'unsafe-inline'; script-src 'unsafe-inline'")
		statusPage.Execute(w, s.snapshot(cfg(), listen))
	})
	return m
}

func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return itoa(n) + " B"
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return ftoa(float64(n)/float64(div)) + " " + string("KMGTPE"[exp]) + "iB"
}

// blankHandler is what browsers get on the shared port when there is no
// site: a page that names nothing of what is behind the port.
func blankHandler() http.Handler {
	m := http.NewServeMux()
	m.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		io.WriteString(w, "This port serves AMP clients.\n")
	})
	return m
}
