package main

import (
	"crypto/tls"
	"fmt"
	"io"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/ampmux/ampmux/internal/benchkit"
)

// Goals the report checks.
const (
	goalThroughput = 0.90 // forward → serve at least 90% of the TLS proxy pair
	goalSetup      = 1.30 // switching.Dial at most 1.3x crypto/tls
)

type section struct {
	title string
	table benchkit.Table
	notes []string
}

type report struct {
	title    string
	intro    []string
	sections []section
	procs    []string
}

func buildReport(cfg *config, b *bed, res *results) report {
	var rp report
	rp.title = "Tunnels (`bench/tunnel`)"
	runs := "1 run"
	if cfg.runs > 1 {
		runs = fmt.Sprintf("median of %d runs", cfg.runs)
	}
	rp.intro = append(rp.intro,
		fmt.Sprintf("`cd bench && %s`, %s, ampmux built from %s; %s %s/%s, %d CPUs (%s), loopback. Every piece is its own process, not pinned to a CPU; %s, the paths interleaved within each run in rotating order. The whole run took %s; the 1-minute load average was %s before it and %s after (the machine is shared).",
			cfg.command, time.Now().UTC().Format("2006-01-02 15:04 UTC"), b.source, runtime.Version(), runtime.GOOS, runtime.GOARCH,
			runtime.NumCPU(), benchkit.CPUModel(), runs, res.elapsed.Round(time.Second), res.load[0], res.load[1]))
	if st, ok := res.libState[libSwitch]; ok {
		rp.intro = append(rp.intro, fmt.Sprintf("TLS (paths a and b, and the library rows): %s, with ECDSA P-256 certificates from `ampmux cert`; the server verifies the client's certificate against the CA.", tlsParams(st)))
	}
	if tl, ok := res.libState[libTLS]; ok {
		if st := res.libState[libSwitch]; tlsParams(st) != tlsParams(tl) {
			rp.intro = append(rp.intro, "The Go TLS proxy negotiated "+tlsParams(tl)+" (different from ampmux's!).")
		}
	}

	// Bulk.
	ab := hasPath(b, "a") && hasPath(b, "b")
	if cfg.parts["upload"] || cfg.parts["download"] {
		mib := cfg.size >> 20
		bulk := section{title: fmt.Sprintf("Bulk throughput: %d MiB one way (upload) and request/response (download)", mib)}
		type column struct {
			head   string
			vals   map[string][]float64
			cpu    bool // CPU s/GB rather than MB/s
			format func([]float64) string
		}
		var cols []column
		for _, dir := range []struct {
			part         string
			mbs, cpuPerG map[string][]float64
		}{
			{"upload", res.up, res.upCPU},
			{"download", res.down, res.downCPU},
		} {
			if cfg.parts[dir.part] {
				cols = append(cols,
					column{dir.part + " MB/s", dir.mbs, false, countCell},
					column{dir.part + " proxy CPU s/GB", dir.cpuPerG, true, cpuCell})
			}
		}
		bulk.table.Head = []string{"path"}
		for _, c := range cols {
			bulk.table.Head = append(bulk.table.Head, c.head)
		}
		for _, p := range b.paths {
			row := []string{p.key + ". " + p.name}
			for _, c := range cols {
				if c.cpu && len(c.vals[p.key]) == 0 {
					row = append(row, "n/a")
					continue
				}
				row = append(row, c.format(c.vals[p.key]))
			}
			bulk.table.Add(row...)
		}
		for _, pr := range []struct {
			x, y, label string
			goal        float64
		}{
			{"a", "b", fmt.Sprintf("a / b (goal ≥ %.0f%% on MB/s)", goalThroughput*100), goalThroughput},
			{"e", "f", "e / f (reverse tunnels; goal ≥ 150% on MB/s)", 1.5},
		} {
			if !hasPath(b, pr.x) || !hasPath(b, pr.y) {
				continue
			}
			row := []string{pr.label}
			for _, c := range cols {
				if r := benchkit.PairRatios(c.vals[pr.x], c.vals[pr.y]); c.cpu {
					row = append(row, ratioCell(r, true))
				} else {
					row = append(row, goalCell(r, false, pr.goal))
				}
			}
			bulk.table.Add(row...)
		}
		bulk.notes = []string{
			"MB/s is 10^6 bytes per second, timed from before the client's connect until the sink's report (upload: the client sends the bytes, the backend counts and checks them and reports the count) or until the last byte (download: the client sends a 9-byte request, the backend streams the bytes and ends its side). Every byte is checked against the pattern sent. " +
				spreadNote(cfg.runs) + " a / b is the median of the per-run ratios.",
			"Proxy CPU is the CPU time (user + system, from /proc/PID/stat, 10 ms ticks) that the processes between client and backend used during the transfer, per 10^9 bytes: forward + serve for a, the two proxy halves for b, sslh for c. It moves less with the machine's load than MB/s does, though not by nothing (contention means more wake-ups and smaller reads); a / b is again the median of the per-run ratios (lower is cheaper for a).",
		}
		if hasPath(b, "c") {
			bulk.notes = append(bulk.notes, "c is sslh forwarding plain TCP (sslh does not terminate TLS, and nothing here is encrypted on that path): shown for reference, not comparable with a and b. sslh 1.20 runs in the foreground (-f), numeric (-n), with --anyprot to the backend; as root it needs no --user in the foreground. It passes no half-close on (an EOF closes both directions), which is why the upload waits for the sink's report rather than ending with a FIN.")
		}
		rp.sections = append(rp.sections, bulk)
	}

	// Setup through the paths.
	if cfg.parts["setup"] {
		setup := section{title: fmt.Sprintf("Connection setup: connect until a 1-byte echo is back (%d sequential connections per path and run)", cfg.conns)}
		setup.table.Head = []string{"path", "p50", "p99"}
		for _, p := range b.paths {
			setup.table.Add(p.key+". "+p.name, durCell(res.setupP50[p.key]), durCell(res.setupP99[p.key]))
		}
		for _, pr := range [][2]string{{"a", "b"}, {"e", "f"}} {
			if hasPath(b, pr[0]) && hasPath(b, pr[1]) {
				setup.table.Add(pr[0]+" / "+pr[1],
					ratioCell(benchkit.PairRatios(durs(res.setupP50[pr[0]]), durs(res.setupP50[pr[1]])), true),
					ratioCell(benchkit.PairRatios(durs(res.setupP99[pr[0]]), durs(res.setupP99[pr[1]])), true))
			}
		}
		note := ""
		if hasPath(b, "e") {
			note += "Path e: the client's forward goes to serve, which switches one of the agent's standby connections (TLS already done) to the route; the agent dials the backend. Path f: ssh -N -R to a loopback sshd publishes the backend on a port of sshd's; its CPU counts ssh and the listening sshd, not sshd's per-session child. "
		}
		if hasPath(b, "a") {
			note += "Path a: the client's connect to `ampmux forward` returns at once; forward then connects to `ampmux serve`, StartTLS, ProtocolSwitch (serve dials the backend before answering), and the byte goes through. "
		}
		if hasPath(b, "b") {
			note += "Path b: the client half dials the server half with crypto/tls, which dials the backend after the handshake. "
		}
		setup.notes = []string{note + spreadNote(cfg.runs)}
		rp.sections = append(rp.sections, setup)
	}

	// Connections per second.
	if cfg.parts["rate"] {
		rate := section{title: fmt.Sprintf("New connections per second: %d workers, each connect, 1 byte echoed, close", rateWorkers)}
		rate.table.Head = []string{"path", "connections/s", "failed"}
		for _, p := range b.paths {
			rate.table.Add(p.key+". "+p.name, countCell(res.rate[p.key]), benchkit.HumanInt(float64(res.rateFailed[p.key])))
		}
		if ab {
			rate.table.Add("a / b", ratioCell(benchkit.PairRatios(res.rate["a"], res.rate["b"]), false), "")
		}
		if hasPath(b, "e") && hasPath(b, "f") {
			rate.table.Add("e / f (goal ≥ 2×)", goalCell(benchkit.PairRatios(res.rate["e"], res.rate["f"]), false, 2), "")
		}
		rate.notes = []string{spreadNote(cfg.runs)}
		rp.sections = append(rp.sections, rate)
	}

	// The library path.
	if cfg.parts["library"] {
		lib := section{title: "Connection setup, library path alone (same certificates, same client, alternating)"}
		lib.table.Head = []string{"client", "dial p50", "dial p99", "dial + echo p50", "dial + echo p99"}
		lib.table.Rows = [][]string{
			{"switching.Dial → ampmux serve (connect + StartTLS + ProtocolSwitch)",
				durCell(res.libDial50[libSwitch]), durCell(res.libDial99[libSwitch]), durCell(res.libEcho50[libSwitch]), durCell(res.libEcho99[libSwitch])},
			{"switching.Dialer{Optimistic: true} → ampmux serve (the same, not waiting for the switch's answer)",
				durCell(res.libDial50[libOptimistic]), durCell(res.libDial99[libOptimistic]), durCell(res.libEcho50[libOptimistic]), durCell(res.libEcho99[libOptimistic])},
			{"crypto/tls Dialer → TLS proxy server (connect + handshake)",
				durCell(res.libDial50[libTLS]), durCell(res.libDial99[libTLS]), durCell(res.libEcho50[libTLS]), durCell(res.libEcho99[libTLS])},
			{fmt.Sprintf("switching / tls (goal ≤ %.1fx on dial)", goalSetup),
				goalCell(benchkit.PairRatios(durs(res.libDial50[libSwitch]), durs(res.libDial50[libTLS])), true, goalSetup),
				goalCell(benchkit.PairRatios(durs(res.libDial99[libSwitch]), durs(res.libDial99[libTLS])), true, goalSetup),
				ratioCell(benchkit.PairRatios(durs(res.libEcho50[libSwitch]), durs(res.libEcho50[libTLS])), true),
				ratioCell(benchkit.PairRatios(durs(res.libEcho99[libSwitch]), durs(res.libEcho99[libTLS])), true)},
			{fmt.Sprintf("optimistic / tls (goal ≤ %.1fx on dial)", goalSetup),
				goalCell(benchkit.PairRatios(durs(res.libDial50[libOptimistic]), durs(res.libDial50[libTLS])), true, goalSetup),
				goalCell(benchkit.PairRatios(durs(res.libDial99[libOptimistic]), durs(res.libDial99[libTLS])), true, goalSetup),
				ratioCell(benchkit.PairRatios(durs(res.libEcho50[libOptimistic]), durs(res.libEcho50[libTLS])), true),
				ratioCell(benchkit.PairRatios(durs(res.libEcho99[libOptimistic]), durs(res.libEcho99[libTLS])), true)},
		}
		lib.notes = []string{"In this process: dial is until the call returned a connection ready for the inner protocol; dial + echo adds one byte through the backend and back (it includes the proxy server's own backend dial, which switching.Dial already waited for). With TLS 1.3 a crypto/tls client finishes its handshake one flight before the server has checked the client certificate; switching.Dial waits for StartTLS's answer (one more round trip before the handshake) and for the switch's answer (one after it); an optimistic dial returns once the switch request is written, so its first bytes ride behind the request and a refusal shows on the first read. " + spreadNote(cfg.runs)}
		rp.sections = append(rp.sections, lib)
	}

	for _, c := range b.cmds {
		rp.procs = append(rp.procs, strings.ReplaceAll(c, b.tmp, "$TMP"))
	}
	rp.procs = append(rp.procs, "the client: this program (upload, download, echo, and the library dials)")
	return rp
}

func writeMarkdown(w io.Writer, cfg *config, b *bed, res *results) {
	rp := buildReport(cfg, b, res)
	fmt.Fprintf(w, "## %s\n\n", rp.title)
	for _, p := range rp.intro {
		fmt.Fprintf(w, "%s\n\n", p)
	}
	for _, s := range rp.sections {
		fmt.Fprintf(w, "### %s\n\n", s.title)
		s.table.Write(w)
		fmt.Fprintln(w)
		for _, n := range s.notes {
			fmt.Fprintf(w, "%s\n\n", n)
		}
	}
	fmt.Fprintf(w, "Processes (`ampmux` built from this repository, `tunnel` is this program in another role, $TMP a fresh directory):\n\n")
	for _, p := range rp.procs {
		fmt.Fprintf(w, "- `%s`\n", p)
	}
}

func hasPath(b *bed, key string) bool {
	return slices.ContainsFunc(b.paths, func(p path) bool { return p.key == key })
}

func spreadNote(runs int) string {
	if runs > 1 {
		return "Cells: median (min–max over the runs)."
	}
	return "One run."
}

func tlsParams(st tls.ConnectionState) string {
	return fmt.Sprintf("%s, %s, key exchange %s", tls.VersionName(st.Version), tls.CipherSuiteName(st.CipherSuite), st.CurveID)
}

func durs(ds []time.Duration) []float64 {
	out := make([]float64, len(ds))
	for i, d := range ds {
		out[i] = float64(d)
	}
	return out
}

// countCell is MB/s or connections/s, median and spread.
func countCell(xs []float64) string { return benchkit.Spread(xs, benchkit.HumanInt) }

func cpuCell(xs []float64) string {
	return benchkit.Spread(xs, func(v float64) string { return fmt.Sprintf("%.2f", v) })
}

func durCell(ds []time.Duration) string {
	return benchkit.Spread(durs(ds), func(v float64) string { return benchkit.Dur(time.Duration(v)) })
}

// ratioCell is a ratio as a percentage, or as a factor (1.23x).
func ratioCell(xs []float64, factor bool) string {
	return benchkit.Spread(xs, func(v float64) string { return benchkit.Ratio(v, 1, !factor) })
}

// goalCell is ratioCell with a verdict on the median: a percentage must
// reach goal, a factor must not exceed it.
func goalCell(xs []float64, factor bool, goal float64) string {
	if len(xs) == 0 {
		return "–"
	}
	m := benchkit.Median(xs, func(v float64) float64 { return v })
	ok := m >= goal
	if factor {
		ok = m <= goal
	}
	if ok {
		return ratioCell(xs, factor) + " ✓"
	}
	return ratioCell(xs, factor) + " ✗"
}
