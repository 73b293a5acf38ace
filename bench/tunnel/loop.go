package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"math"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ampmux/ampmux/internal/benchkit"
)

// Library-path keys.
const (
	libSwitch     = "switch"
	libOptimistic = "optimistic" // switching.Dialer{Optimistic: true}
	libTLS        = "tls"
)

// results hold one value per run for each measurement.
type results struct {
	up, down             map[string][]float64 // MB/s, by path key
	upCPU, downCPU       map[string][]float64 // CPU seconds per GB of the processes in between
	setupP50, setupP99   map[string][]time.Duration
	rate                 map[string][]float64       // new connections per second, rateWorkers at once
	rateFailed           map[string]int64           // connections that failed during those
	libDial50, libDial99 map[string][]time.Duration // by libSwitch, libTLS
	libEcho50, libEcho99 map[string][]time.Duration
	libState             map[string]tls.ConnectionState
	elapsed              time.Duration
	load                 [2]string // 1-minute load average before and after
}

func newResults() *results {
	return &results{
		up: map[string][]float64{}, down: map[string][]float64{},
		upCPU: map[string][]float64{}, downCPU: map[string][]float64{},
		setupP50: map[string][]time.Duration{}, setupP99: map[string][]time.Duration{}, rate: map[string][]float64{}, rateFailed: map[string]int64{},
		libDial50: map[string][]time.Duration{}, libDial99: map[string][]time.Duration{},
		libEcho50: map[string][]time.Duration{}, libEcho99: map[string][]time.Duration{},
		libState: map[string]tls.ConnectionState{},
	}
}

// rotate returns s started at its k-th element (mod len), so that no
// path is always first or last.
func rotate[T any](s []T, k int) []T {
	k %= len(s)
	return append(append([]T{}, s[k:]...), s[:k]...)
}

func measure(ctx context.Context, cfg *config, b *bed, ps *procs) (*results, error) {
	res := newResults()
	fail := func(run int, what string, p path, err error) error {
		return fmt.Errorf("run %d, %s through %s. %s (%s): %w", run, what, p.key, p.name, p.addr, err)
	}

	// Warm up every path, and check it works, before timing anything.
	warm := min(cfg.size, 4<<20)
	for _, p := range b.paths {
		if _, err := upload(ctx, p.addr, warm); err != nil {
			return nil, fail(0, "warm-up upload", p, err)
		}
		if _, err := download(ctx, p.addr, warm); err != nil {
			return nil, fail(0, "warm-up download", p, err)
		}
		for range 3 {
			if _, err := echoOnce(ctx, p.addr); err != nil {
				return nil, fail(0, "warm-up echo", p, err)
			}
		}
	}
	for range 3 { // and learn what TLS they negotiate
		t, err := dialSwitch(ctx, b.serve, routeName, b.clTLS, false)
		if err != nil {
			return nil, fmt.Errorf("warm-up switching.Dial to %s: %w", b.serve, err)
		}
		res.libState[libSwitch] = t.state
		if t, err = dialTLS(ctx, b.tlsSrv, b.clTLS); err != nil {
			return nil, fmt.Errorf("warm-up tls dial to %s: %w", b.tlsSrv, err)
		}
		res.libState[libTLS] = t.state
	}

	for r := range cfg.runs {
		run := r + 1
		order := rotate(b.paths, r)
		for _, dir := range []string{"upload", "download"} {
			if !cfg.parts[dir] {
				continue
			}
			transfer, into, intoCPU := upload, res.up, res.upCPU
			if dir == "download" {
				transfer, into, intoCPU = download, res.down, res.downCPU
			}
			for _, p := range order {
				cpu0, err := cpuTimes(p.procs)
				if err != nil {
					return nil, fail(run, dir, p, err)
				}
				d, err := transfer(ctx, p.addr, cfg.size)
				if err != nil {
					return nil, fail(run, dir, p, err)
				}
				cpu1, err := cpuTimes(p.procs)
				if err != nil {
					return nil, fail(run, dir, p, err)
				}
				mbs := float64(cfg.size) / 1e6 / d.Seconds()
				into[p.key] = append(into[p.key], mbs)
				line := fmt.Sprintf("run %d/%d: %-8s %s %6.0f MB/s", run, cfg.runs, dir, p.key, mbs)
				if len(p.procs) > 0 {
					perGB := (cpu1 - cpu0).Seconds() / (float64(cfg.size) / 1e9)
					intoCPU[p.key] = append(intoCPU[p.key], perGB)
					line += fmt.Sprintf(", proxy CPU %.2f s/GB", perGB)
				}
				cfg.logf("%s", line)
			}
		}
		if cfg.parts["setup"] {
			if err := setupRun(ctx, cfg, run, order, res); err != nil {
				return nil, fmt.Errorf("run %d, %w", run, err)
			}
		}
		if cfg.parts["rate"] {
			for _, p := range rotate(order, r) {
				cps, failed, err := rateRun(ctx, p.addr, rateDuration(cfg))
				res.rate[p.key] = append(res.rate[p.key], cps)
				res.rateFailed[p.key] += failed
				cfg.logf("run %d/%d: rate     %s %.0f connections/s (%d workers), %d failed (first: %v)", run, cfg.runs, p.key, cps, rateWorkers, failed, err)
			}
		}
		if cfg.parts["library"] {
			if err := libraryRun(ctx, cfg, run, b, res); err != nil {
				return nil, fmt.Errorf("run %d, library path: %w", run, err)
			}
		}
		if err := ps.CheckAlive(); err != nil {
			return nil, err
		}
	}
	return res, nil
}

// setupRun times cfg.conns sequential connections on each path, one path
// after the other in turn.
func setupRun(ctx context.Context, cfg *config, run int, order []path, res *results) error {
	samples := map[string][]time.Duration{}
	for i := range cfg.conns {
		for _, p := range rotate(order, i) {
			d, err := echoOnce(ctx, p.addr)
			if err != nil {
				return fmt.Errorf("setup through %s. %s (%s), connection %d: %w", p.key, p.name, p.addr, i+1, err)
			}
			samples[p.key] = append(samples[p.key], d)
		}
	}
	for _, p := range order {
		p50, p99 := percentiles(samples[p.key])
		res.setupP50[p.key] = append(res.setupP50[p.key], p50)
		res.setupP99[p.key] = append(res.setupP99[p.key], p99)
		cfg.logf("run %d/%d: setup    %s p50 %s p99 %s", run, cfg.runs, p.key, benchkit.Dur(p50), benchkit.Dur(p99))
	}
	return nil
}

// libraryRun times cfg.conns switching.Dial and crypto/tls dials,
// alternating which goes first.
func libraryRun(ctx context.Context, cfg *config, run int, b *bed, res *results) error {
	dials, echoes := map[string][]time.Duration{}, map[string][]time.Duration{}
	for i := range cfg.conns {
		kinds := rotate([]string{libSwitch, libOptimistic, libTLS}, i+run)
		for _, k := range kinds {
			var t libTiming
			var err error
			if k == libTLS {
				t, err = dialTLS(ctx, b.tlsSrv, b.clTLS)
			} else {
				t, err = dialSwitch(ctx, b.serve, routeName, b.clTLS, k == libOptimistic)
			}
			if err != nil {
				return fmt.Errorf("%s, connection %d: %w", k, i+1, err)
			}
			dials[k] = append(dials[k], t.dial)
			echoes[k] = append(echoes[k], t.echo)
		}
	}
	for _, k := range []string{libSwitch, libOptimistic, libTLS} {
		d50, d99 := percentiles(dials[k])
		e50, e99 := percentiles(echoes[k])
		res.libDial50[k] = append(res.libDial50[k], d50)
		res.libDial99[k] = append(res.libDial99[k], d99)
		res.libEcho50[k] = append(res.libEcho50[k], e50)
		res.libEcho99[k] = append(res.libEcho99[k], e99)
		cfg.logf("run %d/%d: library  %-6s dial p50 %s p99 %s, +echo p50 %s p99 %s", run, cfg.runs, k,
			benchkit.Dur(d50), benchkit.Dur(d99), benchkit.Dur(e50), benchkit.Dur(e99))
	}
	return nil
}

// percentiles returns the nearest-rank p50 and p99 of ds (sorted in
// place).
func percentiles(ds []time.Duration) (p50, p99 time.Duration) {
	slices.Sort(ds)
	at := func(q float64) time.Duration {
		i := int(math.Ceil(q*float64(len(ds)))) - 1
		return ds[max(i, 0)]
	}
	return at(0.50), at(0.99)
}

// rateWorkers connect at once in rateRun.
const rateWorkers = 32

func rateDuration(cfg *config) time.Duration {
	if cfg.quick {
		return time.Second
	}
	return 3 * time.Second
}

// rateRun has rateWorkers each connect, echo one byte and close, again
// and again for d, and returns the connections completed per second, how
// many failed, and the first failure.
func rateRun(ctx context.Context, addr string, d time.Duration) (float64, int64, error) {
	var n, failed atomic.Int64
	var firstErr atomic.Pointer[error]
	stop := time.Now().Add(d)
	var wg sync.WaitGroup
	t0 := time.Now()
	for range rateWorkers {
		wg.Go(func() {
			for time.Now().Before(stop) && ctx.Err() == nil {
				if _, err := echoOnce(ctx, addr); err != nil {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, &err)
					continue
				}
				n.Add(1)
			}
		})
	}
	wg.Wait()
	var err error
	if p := firstErr.Load(); p != nil {
		err = *p
	}
	return float64(n.Load()) / time.Since(t0).Seconds(), failed.Load(), err
}
