package main

import (
	"crypto/tls"
	"fmt"
	"io"
	"os"
	"runtime"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
)

// Goals the report checks.
const (
	goalThroughput = 0.90 // forward → serve at least 90% of the TLS proxy pair
	goalSetup      = 1.30 // switching.Dial at most 1.3x crypto/tls
)

type table struct {
	head  []string
	right []bool // right-aligned columns
	rows  [][]string
}

type section struct {
	title string
	table table
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
	rp.title = "Tunnels and AMP calls (`bench/tunnel`)"
	runs := "1 run"
	if cfg.runs > 1 {
		runs = fmt.Sprintf("median of %d runs", cfg.runs)
	}
	rp.intro = append(rp.intro,
		fmt.Sprintf("`cd bench && %s`, %s, ampmux built from %s; %s %s/%s, %d CPUs (%s), loopback. Every piece is its own process, not pinned to a CPU; %s, the paths interleaved within each run in rotating order. The whole run took %s; the 1-minute load average was %s before it and %s after (the machine is shared).",
			cfg.command, time.Now().UTC().Format("2006-01-02 15:04 UTC"), b.source, runtime.Version(), runtime.GOOS, runtime.GOARCH,
			runtime.NumCPU(), cpuModel(), runs, res.elapsed.Round(time.Second), res.load[0], res.load[1]))
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
					column{dir.part + " MB/s", dir.mbs, false, mbCell},
					column{dir.part + " proxy CPU s/GB", dir.cpuPerG, true, cpuCell})
			}
		}
		bulk.table.head = []string{"path"}
		bulk.table.right = []bool{false}
		for _, c := range cols {
			bulk.table.head = append(bulk.table.head, c.head)
			bulk.table.right = append(bulk.table.right, true)
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
			bulk.table.rows = append(bulk.table.rows, row)
		}
		if ab {
			row := []string{fmt.Sprintf("a / b (goal ≥ %.0f%% on MB/s)", goalThroughput*100)}
			for _, c := range cols {
				if c.cpu {
					row = append(row, ratioCell(pairRatios(c.vals["a"], c.vals["b"]), true))
				} else {
					row = append(row, goalCell(pairRatios(c.vals["a"], c.vals["b"]), false, goalThroughput))
				}
			}
			bulk.table.rows = append(bulk.table.rows, row)
		}
		if hasPath(b, "e") && hasPath(b, "f") {
			row := []string{"e / f (reverse tunnels; goal ≥ 150% on MB/s)"}
			for _, c := range cols {
				if c.cpu {
					row = append(row, ratioCell(pairRatios(c.vals["e"], c.vals["f"]), true))
				} else {
					row = append(row, goalCell(pairRatios(c.vals["e"], c.vals["f"]), false, 1.5))
				}
			}
			bulk.table.rows = append(bulk.table.rows, row)
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
		setup.table.head = []string{"path", "p50", "p99"}
		setup.table.right = []bool{false, true, true}
		for _, p := range b.paths {
			setup.table.rows = append(setup.table.rows, []string{p.key + ". " + p.name, durCell(res.setupP50[p.key]), durCell(res.setupP99[p.key])})
		}
		if ab {
			setup.table.rows = append(setup.table.rows, []string{"a / b",
				ratioCell(pairRatios(durs(res.setupP50["a"]), durs(res.setupP50["b"])), true),
				ratioCell(pairRatios(durs(res.setupP99["a"]), durs(res.setupP99["b"])), true)})
		}
		if hasPath(b, "e") && hasPath(b, "f") {
			setup.table.rows = append(setup.table.rows, []string{"e / f",
				ratioCell(pairRatios(durs(res.setupP50["e"]), durs(res.setupP50["f"])), true),
				ratioCell(pairRatios(durs(res.setupP99["e"]), durs(res.setupP99["f"])), true)})
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
		rate.table.head = []string{"path", "connections/s", "failed"}
		rate.table.right = []bool{false, true, true}
		for _, p := range b.paths {
			rate.table.rows = append(rate.table.rows, []string{p.key + ". " + p.name, rateCell(res.rate[p.key]), thousands(float64(res.rateFailed[p.key]))})
		}
		if ab {
			rate.table.rows = append(rate.table.rows, []string{"a / b", ratioCell(pairRatios(res.rate["a"], res.rate["b"]), false), ""})
		}
		if hasPath(b, "e") && hasPath(b, "f") {
			rate.table.rows = append(rate.table.rows, []string{"e / f (goal ≥ 2×)", goalCell(pairRatios(res.rate["e"], res.rate["f"]), false, 2), ""})
		}
		rate.notes = []string{spreadNote(cfg.runs)}
		rp.sections = append(rp.sections, rate)
	}

	// The library path.
	if cfg.parts["library"] {
		lib := section{title: "Connection setup, library path alone (same certificates, same client, alternating)"}
		lib.table.head = []string{"client", "dial p50", "dial p99", "dial + echo p50", "dial + echo p99"}
		lib.table.right = []bool{false, true, true, true, true}
		lib.table.rows = [][]string{
			{"switching.Dial → ampmux serve (connect + StartTLS + ProtocolSwitch)",
				durCell(res.libDial50[libSwitch]), durCell(res.libDial99[libSwitch]), durCell(res.libEcho50[libSwitch]), durCell(res.libEcho99[libSwitch])},
			{"switching.Dialer{Optimistic: true} → ampmux serve (the same, not waiting for the switch's answer)",
				durCell(res.libDial50[libOptimistic]), durCell(res.libDial99[libOptimistic]), durCell(res.libEcho50[libOptimistic]), durCell(res.libEcho99[libOptimistic])},
			{"crypto/tls Dialer → TLS proxy server (connect + handshake)",
				durCell(res.libDial50[libTLS]), durCell(res.libDial99[libTLS]), durCell(res.libEcho50[libTLS]), durCell(res.libEcho99[libTLS])},
			{fmt.Sprintf("switching / tls (goal ≤ %.1fx on dial)", goalSetup),
				goalCell(pairRatios(durs(res.libDial50[libSwitch]), durs(res.libDial50[libTLS])), true, goalSetup),
				goalCell(pairRatios(durs(res.libDial99[libSwitch]), durs(res.libDial99[libTLS])), true, goalSetup),
				ratioCell(pairRatios(durs(res.libEcho50[libSwitch]), durs(res.libEcho50[libTLS])), true),
				ratioCell(pairRatios(durs(res.libEcho99[libSwitch]), durs(res.libEcho99[libTLS])), true)},
			{fmt.Sprintf("optimistic / tls (goal ≤ %.1fx on dial)", goalSetup),
				goalCell(pairRatios(durs(res.libDial50[libOptimistic]), durs(res.libDial50[libTLS])), true, goalSetup),
				goalCell(pairRatios(durs(res.libDial99[libOptimistic]), durs(res.libDial99[libTLS])), true, goalSetup),
				ratioCell(pairRatios(durs(res.libEcho50[libOptimistic]), durs(res.libEcho50[libTLS])), true),
				ratioCell(pairRatios(durs(res.libEcho99[libOptimistic]), durs(res.libEcho99[libTLS])), true)},
		}
		lib.notes = []string{"In this process: dial is until the call returned a connection ready for the inner protocol; dial + echo adds one byte through the backend and back (it includes the proxy server's own backend dial, which switching.Dial already waited for). With TLS 1.3 a crypto/tls client finishes its handshake one flight before the server has checked the client certificate; switching.Dial waits for StartTLS's answer (one more round trip before the handshake) and for the switch's answer (one after it); an optimistic dial returns once the switch request is written, so its first bytes ride behind the request and a refusal shows on the first read. " + spreadNote(cfg.runs)}
		rp.sections = append(rp.sections, lib)
	}

	// AMP calls.
	if cfg.parts["calls"] {
		calls := section{title: fmt.Sprintf("AMP calls: `ampmux bench` against `ampmux serve --demo` (Sum, 1 connection, plain TCP, %v per run)", cfg.benchDuration)}
		calls.table.head = []string{"in flight", "calls/s", "p50", "p90", "p99"}
		calls.table.right = []bool{true, true, true, true, true}
		for _, n := range cfg.benchLevels {
			rs := res.bench[n]
			var rate []float64
			var p50, p90, p99 []time.Duration
			for _, r := range rs {
				rate = append(rate, r.rate)
				p50, p90, p99 = append(p50, r.p50), append(p90, r.p90), append(p99, r.p99)
			}
			calls.table.rows = append(calls.table.rows, []string{fmt.Sprint(n), countCell(rate), durCell(p50), durCell(p90), durCell(p99)})
		}
		calls.notes = []string{"`ampmux bench --server ADDR --concurrency N --duration D`: N callers, each with one call in flight, on one connection; the latencies are the percentiles it prints. Client and server share the 2 CPUs. " + spreadNote(cfg.runs)}
		rp.sections = append(rp.sections, calls)
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
		t := s.table
		fmt.Fprintf(w, "| %s |\n|", strings.Join(t.head, " | "))
		for _, r := range t.right {
			if r {
				fmt.Fprint(w, "---:|")
			} else {
				fmt.Fprint(w, "---|")
			}
		}
		fmt.Fprintln(w)
		for _, row := range t.rows {
			fmt.Fprintf(w, "| %s |\n", strings.Join(row, " | "))
		}
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

func writeText(w io.Writer, cfg *config, b *bed, res *results) {
	rp := buildReport(cfg, b, res)
	plain := func(s string) string { return strings.ReplaceAll(s, "`", "") }
	fmt.Fprintln(w, plain(rp.title))
	for _, p := range rp.intro {
		fmt.Fprintf(w, "  %s\n", plain(p))
	}
	for _, s := range rp.sections {
		fmt.Fprintf(w, "\n%s\n", plain(s.title))
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
		// tabwriter aligns every column alike: pad the left-aligned
		// first column ourselves.
		width := len([]rune(s.table.head[0]))
		for _, row := range s.table.rows {
			width = max(width, len([]rune(row[0])))
		}
		line := func(cells []string) {
			first := cells[0] + strings.Repeat(" ", width-len([]rune(cells[0])))
			fmt.Fprintf(tw, "  %s\t%s\t\n", first, strings.Join(cells[1:], "\t"))
		}
		line(s.table.head)
		for _, row := range s.table.rows {
			line(row)
		}
		tw.Flush()
		for _, n := range s.notes {
			fmt.Fprintf(w, "  %s\n", plain(n))
		}
	}
	fmt.Fprintln(w, "\nProcesses:")
	for _, p := range rp.procs {
		fmt.Fprintf(w, "  %s\n", p)
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

func cpuModel() string {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return "unknown CPU"
	}
	for _, line := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.Join(strings.Fields(v), " ")
		}
	}
	return "unknown CPU"
}

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func durs(ds []time.Duration) []float64 {
	out := make([]float64, len(ds))
	for i, d := range ds {
		out[i] = float64(d)
	}
	return out
}

// pairRatios divides run by run.
func pairRatios(a, b []float64) []float64 {
	var out []float64
	for i := range min(len(a), len(b)) {
		if b[i] > 0 {
			out = append(out, a[i]/b[i])
		}
	}
	return out
}

// spread formats the median of xs, and the range when there are several.
func spread(xs []float64, f func(float64) string) string {
	if len(xs) == 0 {
		return "–"
	}
	m := f(median(xs))
	if len(xs) == 1 {
		return m
	}
	return fmt.Sprintf("%s (%s–%s)", m, f(slices.Min(xs)), f(slices.Max(xs)))
}

func mbCell(xs []float64) string { return spread(xs, func(v float64) string { return thousands(v) }) }

// rateCell is connections per second, median and spread.
func rateCell(xs []float64) string { return mbCell(xs) }

func cpuCell(xs []float64) string {
	return spread(xs, func(v float64) string { return fmt.Sprintf("%.2f", v) })
}

func countCell(xs []float64) string { return spread(xs, thousands) }

func durCell(ds []time.Duration) string {
	return spread(durs(ds), func(v float64) string { return fmtDur(time.Duration(v)) })
}

// ratioCell is a ratio as a percentage, or as a factor (1.23x).
func ratioCell(xs []float64, factor bool) string {
	return spread(xs, func(v float64) string {
		if factor {
			return fmt.Sprintf("%.2fx", v)
		}
		return fmt.Sprintf("%.0f%%", v*100)
	})
}

// goalCell is ratioCell with a verdict on the median: a percentage must
// reach goal, a factor must not exceed it.
func goalCell(xs []float64, factor bool, goal float64) string {
	if len(xs) == 0 {
		return "–"
	}
	m := median(xs)
	ok := m >= goal
	if factor {
		ok = m <= goal
	}
	if ok {
		return ratioCell(xs, factor) + " ✓"
	}
	return ratioCell(xs, factor) + " ✗"
}

// thousands rounds v and groups its digits: 1,234,567.
func thousands(v float64) string {
	s := fmt.Sprintf("%.0f", v)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	if neg {
		return "-" + b.String()
	}
	return b.String()
}

// fmtDur rounds d to three significant digits, as ampmux bench prints
// latencies: 87.3µs, 1.24ms.
func fmtDur(d time.Duration) string {
	if d <= 0 {
		return "0s"
	}
	unit := time.Duration(1)
	for v := d; v >= 1000; v /= 10 {
		unit *= 10
	}
	return d.Round(unit).String()
}
