package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"math/big"
	"net/http"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/ampmux/ampmux/amp"
	"github.com/ampmux/ampmux/amp/conn"
	"github.com/ampmux/ampmux/amp/switching"
	"github.com/ampmux/ampmux/internal/demo"
	"github.com/ampmux/ampmux/internal/pki"
)

// scrape parses /metrics with Prometheus's own text parser.
func scrape(t *testing.T, admin string) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := http.Get("http://" + admin + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("/metrics does not parse: %v", err)
	}
	return fams
}

// value is the counter, gauge or histogram count of family name whose
// labels include want (k=v pairs); -1 if there is none.
func value(fams map[string]*dto.MetricFamily, name string, want ...string) float64 {
	f := fams[name]
	if f == nil {
		return -1
	}
next:
	for _, m := range f.Metric {
		have := map[string]string{}
		for _, l := range m.Label {
			have[l.GetName()] = l.GetValue()
		}
		for _, kv := range want {
			k, v, _ := strings.Cut(kv, "=")
			if have[k] != v {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			return m.Counter.GetValue()
		case m.Gauge != nil:
			return m.Gauge.GetValue()
		case m.Histogram != nil:
			return float64(m.Histogram.GetSampleCount())
		}
	}
	return -1
}

// TestMetrics: /metrics on --admin parses with the Prometheus text parser,
// and its counters move as this test's traffic says they should.
func TestMetrics(t *testing.T) {
	echo := startEchoBackend(t)
	g := startSecureGateway(t, "--demo", "--route", "e="+echo)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	before := scrape(t, g.admin)
	if v := value(before, "ampmux_amp_calls_total", "command=Sum", "result=ok"); v > 0 {
		t.Fatalf("Sum counted %v before any call", v)
	}

	// Three Sums and an unknown command on one plain connection.
	c, err := conn.Dial(ctx, "tcp", g.addr, &conn.Config{})
	if err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if _, err := demo.Sum.Call(ctx, c, demo.SumArgs{A: big.NewInt(1), B: big.NewInt(2)}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := c.Call(ctx, "NoSuchCommand", nil); !errors.Is(err, amp.ErrUnhandledCommand) {
		t.Fatalf("unknown command: %v", err)
	}
	c.Close()

	// One tunnel of 1000 bytes each way; a switch without a certificate
	// (FORBIDDEN) and one to a route that is not there.
	tc, err := switching.Dial(ctx, g.addr, "e", g.clientTLS)
	if err != nil {
		t.Fatal(err)
	}
	payload := bytes.Repeat([]byte("x"), 1000)
	tc.Write(payload)
	tc.(interface{ CloseWrite() error }).CloseWrite()
	if got, _ := io.ReadAll(tc); len(got) != len(payload) {
		t.Fatalf("echo: %d bytes back", len(got))
	}
	tc.Close()
	if _, err := switching.Dial(ctx, g.addr, "e", g.anonTLS); !errors.Is(err, switching.ErrForbidden) {
		t.Fatalf("without a certificate: %v", err)
	}
	if _, err := switching.Dial(ctx, g.addr, "nosuch-"+strings.Repeat("z", 40), g.clientTLS); !errors.Is(err, switching.ErrUnknownProtocol) {
		t.Fatalf("unknown route: %v", err)
	}
	// A client that does not trust the server's certificate.
	other, err := pki.NewCA("other")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := switching.Dial(ctx, g.addr, "e", &tls.Config{RootCAs: other.Pool()}); err == nil {
		t.Fatal("a client with the wrong CA connected")
	}
	// One HTTP request.
	curlBody(t, "http://"+g.addr+"/")
	// Each AMP connection's access-log line is written once it has
	// ended, after its handshake and calls were counted.
	g.p.stderr.waitFor(t, `msg="tunnel closed" route=e`)
	g.p.stderr.waitCount(t, `msg="amp connection closed"`, 5)

	m := scrape(t, g.admin)
	for _, c := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{"ampmux_amp_calls_total", []string{"command=Sum", "result=ok"}, 3},
		{"ampmux_amp_calls_total", []string{"command=unknown", "result=UNHANDLED"}, 1},
		{"ampmux_switches_total", []string{"route=e", "result=ok"}, 1},
		{"ampmux_switches_total", []string{"route=e", "result=FORBIDDEN"}, 1},
		{"ampmux_switches_total", []string{"route=unknown", "result=UNKNOWN_PROTOCOL"}, 1},
		{"ampmux_starttls_total", []string{"result=ok"}, 3},
		{"ampmux_starttls_total", []string{"result=remote_alert"}, 1},
		{"ampmux_tunnels_total", []string{"route=e"}, 1},
		{"ampmux_tunnel_bytes_total", []string{"route=e", "direction=up"}, 1000},
		{"ampmux_tunnel_bytes_total", []string{"route=e", "direction=down"}, 1000},
		{"ampmux_tunnel_duration_seconds", []string{"route=e"}, 1},
		{"ampmux_connections_total", []string{"class=amp"}, 5},
		{"ampmux_connections_total", []string{"class=http1"}, 1},
		{"ampmux_sniff_duration_seconds", []string{"class=amp"}, 5},
		{"ampmux_refused_total", []string{"limit=proxy_header"}, 0},
	} {
		if got := value(m, c.name, c.labels...); got != c.want {
			t.Errorf("%s%v = %v, want %v", c.name, c.labels, got, c.want)
		}
	}
}
