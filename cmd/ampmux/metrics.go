package main

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net/http"
	"os"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/ampmux/ampmux/amp"
	"github.com/ampmux/ampmux/amp/box"
	"github.com/ampmux/ampmux/amp/conn"
	"github.com/ampmux/ampmux/amp/switching"
	"github.com/ampmux/ampmux/mux"
)

// metrics are serve's Prometheus metrics, served at /metrics on --admin
// (and kept only then): a registry of serve's own, no global state. What
// serve counts anyway (stats) is read at scrape time; the rest is
// observed as it happens, with the labels of the common case resolved
// once, so that a call costs an atomic add.
type metrics struct {
	reg       *prometheus.Registry
	sniff     [mux.ClassOther + 1]prometheus.Observer // by class
	tls       *prometheus.CounterVec                  // result
	tlsOK     prometheus.Counter
	switches  *prometheus.CounterVec // route, result
	calls     *prometheus.CounterVec // command, result
	tunnelDur *prometheus.HistogramVec
	// routes are the routes' names, the label values of switches
	// (replaced on SIGHUP).
	routes atomic.Pointer[map[string]bool]
}

// setRoutes makes cfg's routes the label values of switches.
func (m *metrics) setRoutes(cfg *serveConfig) {
	names := map[string]bool{}
	for _, r := range cfg.Routes {
		names[r.Name] = true
	}
	m.routes.Store(&names)
}

func newMetrics(s *server, listen string) *metrics {
	m := &metrics{reg: prometheus.NewRegistry()}
	m.setRoutes(s.conf())
	sniff := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "ampmux_sniff_duration_seconds", Help: "Time from accept until a connection showed its protocol, by class.",
		Buckets: []float64{.0001, .0005, .001, .005, .01, .05, .1, .5, 1, 5},
	}, []string{"class"})
	for c := range m.sniff {
		m.sniff[c] = sniff.WithLabelValues(mux.Class(c).String())
	}
	m.tls = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "ampmux_starttls_total", Help: "StartTLS handshakes, by result (ok, or why they failed).",
	}, []string{"result"})
	m.tlsOK = m.tls.WithLabelValues("ok")
	m.switches = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "ampmux_switches_total", Help: "ProtocolSwitch requests by route (unknown: not a route here) and result (ok, or the AMP error code).",
	}, []string{"route", "result"})
	m.calls = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "ampmux_amp_calls_total", Help: "AMP commands answered, by command (unknown: none such) and result (ok, or the AMP error code).",
	}, []string{"command", "result"})
	m.tunnelDur = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "ampmux_tunnel_duration_seconds", Help: "How long tunnels lasted, by route.",
		Buckets: prometheus.ExponentialBuckets(0.001, 4, 12), // 1 ms to ~1.2 h
	}, []string{"route"})
	m.reg.MustRegister(sniff, m.tls, m.switches, m.calls, m.tunnelDur,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		&statsCollector{s: s, listen: listen})
	return m
}

func (m *metrics) handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{ErrorLog: nil})
}

func (m *metrics) onSniffed(c mux.Class, took time.Duration) {
	if c >= 0 && int(c) < len(m.sniff) {
		m.sniff[c].Observe(took.Seconds())
	}
}

func (m *metrics) onTLS(_ *conn.Conn, err error) {
	if err == nil {
		m.tlsOK.Inc()
		return
	}
	m.tls.WithLabelValues(tlsFailure(err)).Inc()
}

// tlsFailure names why a handshake failed, from a small fixed set.
func tlsFailure(err error) string {
	var te *conn.TLSError
	var cv *tls.CertificateVerificationError
	var rh tls.RecordHeaderError
	switch {
	case errors.Is(err, context.DeadlineExceeded) || os.IsTimeout(err):
		return "timeout"
	case errors.As(err, &cv):
		return "bad_certificate"
	case strings.Contains(err.Error(), "didn't provide a certificate"):
		return "no_certificate"
	case errors.As(err, &te) && te.Remote:
		return "remote_alert" // the client refused ours, most often
	case errors.As(err, &rh):
		return "not_tls"
	case errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF):
		return "eof"
	}
	return "other"
}

// locator counts the commands served (stats) and, with metrics, wraps
// each responder registered at start to count its results.
type locator struct {
	amp.Locator
	s       *stats
	wrapped map[string]wrapped
	unknown prometheus.Counter
}

type wrapped struct{ orig, r *amp.Responder }

func newLocator(inner *amp.Mux, s *stats, m *metrics) *locator {
	l := &locator{Locator: inner, s: s}
	if m == nil {
		return l
	}
	l.unknown = m.calls.WithLabelValues("unknown", amp.CodeUnhandled)
	l.wrapped = map[string]wrapped{}
	for _, name := range inner.Names() {
		orig := inner.Responder([]byte(name))
		r := *orig
		ok := m.calls.WithLabelValues(name, "ok")
		serve := orig.Serve
		r.Serve = func(ctx context.Context, req, resp *box.Box) error {
			err := serve(ctx, req, resp)
			if err == nil {
				ok.Inc()
			} else {
				code, _, _ := orig.Answer(err)
				m.calls.WithLabelValues(name, code).Inc()
			}
			return err
		}
		if name == switching.CommandProtocolSwitch {
			r.Serve = m.countSwitch(orig, r.Serve)
		}
		l.wrapped[name] = wrapped{orig: orig, r: &r}
	}
	return l
}

// countSwitch counts ProtocolSwitch results by route; a route that is
// not ours is "unknown", so that clients cannot mint label values.
func (m *metrics) countSwitch(orig *amp.Responder, serve amp.BoxHandler) amp.BoxHandler {
	return func(ctx context.Context, req, resp *box.Box) error {
		err := serve(ctx, req, resp)
		route := req.GetString("protocol")
		if !(*m.routes.Load())[route] {
			route = "unknown"
		}
		result := "ok"
		if err != nil {
			result, _, _ = orig.Answer(err)
		}
		m.switches.WithLabelValues(route, result).Inc()
		return err
	}
}

func (l *locator) Responder(name []byte) *amp.Responder {
	l.s.calls.Add(1)
	r := l.Locator.Responder(name)
	if l.wrapped == nil {
		return r
	}
	if r == nil {
		l.unknown.Inc()
		return nil
	}
	if w, ok := l.wrapped[string(name)]; ok && w.orig == r {
		return w.r
	}
	return r // registered after start: counted in stats only
}

// statsCollector turns serve's live counters (the status page's) into
// metrics at each scrape.
type statsCollector struct {
	s      *server
	listen string
}

var (
	descConns        = prometheus.NewDesc("ampmux_connections_total", "Connections accepted on the shared port, by class (unmatched: closed before showing one).", []string{"class"}, nil)
	descRefused      = prometheus.NewDesc("ampmux_refused_total", "Work refused or dropped by a limit, by limit.", []string{"limit"}, nil)
	descTunnelsOpen  = prometheus.NewDesc("ampmux_tunnels_open", "Tunnels open now, by route.", []string{"route"}, nil)
	descTunnels      = prometheus.NewDesc("ampmux_tunnels_total", "Tunnels opened, by route.", []string{"route"}, nil)
	descTunnelBytes  = prometheus.NewDesc("ampmux_tunnel_bytes_total", "Bytes through tunnels, by route and direction (up: client to backend).", []string{"route", "direction"}, nil)
	descTunnelFailed = prometheus.NewDesc("ampmux_tunnels_failed_total", "Switches whose tunnel could not be set up (a limit, no backend, no publisher).", nil, nil)
	descPublished    = prometheus.NewDesc("ampmux_route_published", "1 while an agent publishes the exposed route.", []string{"route"}, nil)
	descPublishes    = prometheus.NewDesc("ampmux_route_publishes_total", "Publications of an exposed route (each reconnection is one).", []string{"route"}, nil)
	descLosses       = prometheus.NewDesc("ampmux_route_publisher_losses_total", "Times an exposed route's publisher went away.", []string{"route"}, nil)
	descStandby      = prometheus.NewDesc("ampmux_route_standby_connections", "Standby connections the publisher has ready.", []string{"route"}, nil)
)

func (c *statsCollector) Describe(ch chan<- *prometheus.Desc) { prometheus.DescribeByCollect(c, ch) }

func (c *statsCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.s.stats.snapshot(c.s.conf(), c.listen)
	counter := func(d *prometheus.Desc, v int64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	gauge := func(d *prometheus.Desc, v int64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, float64(v), labels...)
	}
	for class, n := range st.Connections {
		counter(descConns, n, class)
	}
	for limit, n := range st.Refused {
		counter(descRefused, n, limit)
	}
	counter(descTunnelFailed, st.Tunnels.Failed)
	for _, r := range st.Routes {
		gauge(descTunnelsOpen, r.Open, r.Name)
		counter(descTunnels, r.Total, r.Name)
		counter(descTunnelBytes, r.BytesUp, r.Name, "up")
		counter(descTunnelBytes, r.BytesDown, r.Name, "down")
		if len(r.Publishers) > 0 {
			published := int64(0)
			if r.PublishedBy != "" {
				published = 1
			}
			gauge(descPublished, published, r.Name)
			counter(descPublishes, r.Publishes, r.Name)
			counter(descLosses, r.Disconnects, r.Name)
			gauge(descStandby, int64(r.Standby), r.Name)
		}
	}
}
