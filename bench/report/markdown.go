package main

import (
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"

	"github.com/ampmux/ampmux/internal/benchkit"
)

// writeRPC writes the one-connection and scale sections (and the goals and
// profiles when standalone) from rep.
func writeRPC(w io.Writer, rep *Report) {
	m := rep.Machine
	fmt.Fprintf(w, "## RPC: Sum calls/s on one loopback connection\n\n")
	fmt.Fprintf(w, "- date: %s (this part took %.0f s); machine: nproc %d, %s, Linux %s; %s, %s, Python %s with Twisted %s; load average %s before, %s after\n",
		rep.Started.Format("2006-01-02 15:04:05 MST"), rep.Seconds, m.NProc, m.CPU, m.Kernel, m.Go, m.GRPC, m.Python, m.Twisted, m.Load0, m.Load1)
	fmt.Fprintf(w, "- every contender: client and server are separate processes on 127.0.0.1, one TCP connection, Sum(13, 81) → 94; RPC-style callers (N callers each calling then waiting; Twisted: N outstanding Deferreds, a new call issued as each answer arrives)\n")
	fmt.Fprintf(w, "- each cell: median of %s, %v measured after %v warm-up; within each run the contenders take turns (%s; each run starts one further along), so noise hits all alike; p50/p99 from the median run, 1 call in 16 timed\n",
		plural(rep.Runs, "run"), rep.Duration, rep.Warmup, strings.Join(labels(rep.Contenders), ", "))
	for _, id := range rep.Contenders {
		c := contenderByID(contenders, id)
		fmt.Fprintf(w, "- %s: %s\n", c.label, c.note)
	}
	fmt.Fprintln(w)

	// calls/s
	head := []string{"in flight"}
	head = append(head, labels(rep.Contenders)...)
	row(w, head, true)
	for _, n := range rep.Inflight {
		r := []string{strconv.Itoa(n)}
		for _, id := range rep.Contenders {
			r = append(r, benchkit.HumanInt(median(rep.Results[n][id]).CallsPerSec))
		}
		row(w, r, false)
	}

	// ratios
	var others []string
	for _, id := range rep.Contenders {
		if id != "amp-raw" && id != "amp-typed" {
			others = append(others, id)
		}
	}
	hasRaw, hasTyped := slices.Contains(rep.Contenders, "amp-raw"), slices.Contains(rep.Contenders, "amp-typed")
	if hasRaw && len(others) > 0 {
		fmt.Fprintf(w, "\nampmux raw against each contender: × = ampmux calls/s ÷ the contender's, %% = ampmux as a share of the floor")
		if hasTyped {
			fmt.Fprintf(w, " (ampmux typed in brackets)")
		}
		fmt.Fprintf(w, ":\n\n")
		head := []string{"in flight"}
		for _, id := range others {
			head = append(head, "vs "+contenderByID(contenders, id).label)
		}
		row(w, head, true)
		for _, n := range rep.Inflight {
			r := []string{strconv.Itoa(n)}
			raw := median(rep.Results[n]["amp-raw"]).CallsPerSec
			typed := median(rep.Results[n]["amp-typed"]).CallsPerSec
			for _, id := range others {
				v := median(rep.Results[n][id]).CallsPerSec
				pct := strings.HasPrefix(id, "floor")
				cell := benchkit.Ratio(raw, v, pct)
				if hasTyped {
					cell += " (" + benchkit.Ratio(typed, v, pct) + ")"
				}
				r = append(r, cell)
			}
			row(w, r, false)
		}
	}

	// latency
	fmt.Fprintf(w, "\nLatency p50 / p99 in µs, at the median run:\n\n")
	head = []string{"contender"}
	for _, n := range rep.Inflight {
		head = append(head, fmt.Sprintf("%d in flight", n))
	}
	row(w, head, true)
	for _, id := range rep.Contenders {
		r := []string{contenderByID(contenders, id).label}
		for _, n := range rep.Inflight {
			s := median(rep.Results[n][id])
			r = append(r, benchkit.HumanUs(s.P50us)+" / "+benchkit.HumanUs(s.P99us))
		}
		row(w, r, false)
	}

	// server cost
	fmt.Fprintf(w, "\nThe server's cost per call at the median run: CPU µs (user + system, /proc/<pid>/stat) and read + write syscalls (/proc/<pid>/io), over warm-up and window, divided by calls/s × (warm-up + window), so approximate (— : Twisted's recv and send are not counted there):\n\n")
	row(w, head, true)
	for _, id := range rep.Contenders {
		r := []string{contenderByID(contenders, id).label}
		for _, n := range rep.Inflight {
			s := median(rep.Results[n][id])
			r = append(r, fmt.Sprintf("%.1f µs, %s syscalls", s.ServerCPUus, syscallsText(s.ServerSyscalls)))
		}
		row(w, r, false)
	}

	fmt.Fprintf(w, "\nEvery run, calls/s in run order (client allocations per call at the median run, where the client reports them):\n\n")
	head = []string{"in flight"}
	head = append(head, labels(rep.Contenders)...)
	row(w, head, true)
	for _, n := range rep.Inflight {
		r := []string{strconv.Itoa(n)}
		for _, id := range rep.Contenders {
			r = append(r, runsCell(rep.Results[n][id]))
		}
		row(w, r, false)
	}
	if rep.ScaleConns > 0 && len(rep.Scale) > 0 {
		writeScale(w, rep)
	}
}

func writeScale(w io.Writer, rep *Report) {
	n := benchkit.HumanInt(float64(rep.ScaleConns))
	fmt.Fprintf(w, "\n## Scale: %s connections, one call in flight on each\n\n", n)
	fmt.Fprintf(w, "- one client process opens %s connections (64 at a time, one Sum call on each before the clock starts), then runs one caller per connection (call, wait, call again); the same servers as above; median of %s, interleaved, %v after %v warm-up\n",
		n, plural(rep.Runs, "run"), rep.Duration, rep.Warmup)
	for _, c := range scaleContenders {
		fmt.Fprintf(w, "- %s: %s\n", c.label, strings.ReplaceAll(c.note, "{N}", strconv.Itoa(rep.ScaleConns)))
	}
	fmt.Fprintln(w)
	row(w, []string{"contender", "calls/s", "ampmux raw vs it", "p50 / p99 µs", "server CPU per call ≈", "server syscalls per call ≈", "server RSS after", "every run, calls/s"}, true)
	amp := median(rep.Scale["amp-raw"]).CallsPerSec
	for _, c := range scaleContenders {
		s := median(rep.Scale[c.id])
		rel := benchkit.Ratio(amp, s.CallsPerSec, c.id == "floor")
		if c.id == "amp-raw" {
			rel = "—"
		}
		row(w, []string{c.label, benchkit.HumanInt(s.CallsPerSec), rel, benchkit.HumanUs(s.P50us) + " / " + benchkit.HumanUs(s.P99us),
			fmt.Sprintf("%.1f µs", s.ServerCPUus), syscallsText(s.ServerSyscalls), benchkit.HumanMB(float64(s.ServerRSS)), runsCell(rep.Scale[c.id])}, false)
	}
}

// writeGoals writes the goals table (and extra rows, already formatted).
func writeGoals(w io.Writer, rep *Report, extra [][]string) {
	fmt.Fprintf(w, "ampmux (raw: callbench, Conn.CallBox, a goroutine per caller; async: Conn.Go, no goroutine per call) against each contender on one connection, calls/s medians; ratio: the median of the per-run ratios (each run measures both in turn), × = ampmux ÷ contender, %% = ampmux as a share of the floor:\n\n")
	row(w, []string{"goal (2-core machine)", "in flight", "ampmux", "contender", "ratio", "goal", "met"}, true)
	for _, g := range rep.Goals {
		what := goalWho(g.Goal) + " vs " + g.Label
		row(w, []string{what, strconv.Itoa(g.Inflight), benchkit.HumanInt(g.Ampmux), benchkit.HumanInt(g.Value), benchkit.Ratio(g.Ratio, 1, g.Percent), goalText(g.Goal), yesNo(g.Met)}, false)
	}
	for _, g := range goals {
		found := false
		for _, r := range rep.Goals {
			if r.Goal == g {
				found = true
			}
		}
		if !found {
			row(w, []string{goalWho(g) + " vs " + label(g.Other), strconv.Itoa(g.Inflight), "", "", "", goalText(g), "not measured"}, false)
		}
	}
	for _, r := range extra {
		row(w, r, false)
	}
}

// goalWho names the ampmux contender of a goal.
func goalWho(g Goal) string { return label(g.who()) }

func goalText(g Goal) string {
	if g.Percent {
		return fmt.Sprintf("≥ %.0f%%", 100*g.Min)
	}
	return fmt.Sprintf("≥ %g×", g.Min)
}

// writeProfiles writes the profiles taken where goals were missed.
func writeProfiles(w io.Writer, rep *Report) {
	if len(rep.Profiles) == 0 {
		return
	}
	fmt.Fprintf(w, "\n## Profiles where ampmux misses a goal\n\n")
	fmt.Fprintf(w, "The batched floor's client refills a whole window of requests with one write and its server answers a whole read with one write; RPC-style callers each send their own call, so ampmux batches only what its writer finds queued (compare the servers' read+write syscalls per call below). At 1 in flight nothing batches: both floors and ampmux make the same reads and writes, and the difference is what ampmux does around them.\n\n")
	fmt.Fprintf(w, "ampmux raw (callbench amp -api raw → callbench serve-amp -api raw), run once more with -cpuprofile on both sides (%v window; profiling costs a little throughput), `go tool pprof -top`; flat CPU summed by where it goes, then the top entries:\n", rep.ProfileTime)
	for _, p := range rep.Profiles {
		var missed []string
		for _, g := range rep.Goals {
			if g.Inflight == p.Inflight && !g.Met {
				missed = append(missed, fmt.Sprintf("%s vs %s %s (goal %s)", goalWho(g.Goal), g.Label, benchkit.Ratio(g.Ratio, 1, g.Percent), goalText(g.Goal)))
			}
		}
		fmt.Fprintf(w, "\n### %d in flight, %s (%s calls/s while profiled; missed: %s)\n\n", p.Inflight, p.Side, benchkit.HumanInt(float64(p.Calls)), strings.Join(missed, ", "))
		fmt.Fprintf(w, "Flat CPU: %s.", p.Summary)
		if p.Side == "server" {
			fmt.Fprintf(w, " %s", serverCompare(rep, p.Inflight))
		}
		fmt.Fprintf(w, "\n\n```text\n%s\n```\n", p.Top)
	}
}

// serverCompare says what the servers of ampmux and the floors spent per
// call at n in flight (from the measured runs, not the profiled one).
func serverCompare(rep *Report, n int) string {
	var parts []string
	for _, id := range []string{"amp-raw", "floor-batched", "floor-perwrite"} {
		runs := rep.Results[n][id]
		if len(runs) == 0 {
			continue
		}
		s := median(runs)
		parts = append(parts, fmt.Sprintf("%s %.1f µs and %s read+write syscalls", contenderByID(contenders, id).label, s.ServerCPUus, syscallsText(s.ServerSyscalls)))
	}
	if len(parts) == 0 {
		return ""
	}
	return "Per call in the measured runs at this level, the servers spent: " + strings.Join(parts, "; ") + "."
}

// syscallsText shows a syscall count; Python's sockets use recv and send,
// which /proc/<pid>/io does not count, so Twisted servers show none.
func syscallsText(n float64) string {
	if n == 0 {
		return "—"
	}
	return fmt.Sprintf("%.2f", n)
}

func runsCell(runs []sample) string {
	if len(runs) == 0 {
		return ""
	}
	var parts []string
	for _, r := range runs {
		parts = append(parts, benchkit.HumanInt(r.CallsPerSec))
	}
	s := strings.Join(parts, ", ")
	if m := median(runs); m.AllocsPerCall > 0 {
		s += fmt.Sprintf(" (%.2f allocs)", m.AllocsPerCall)
	}
	return s
}

func plural(n int, what string) string {
	if n == 1 {
		return "1 " + what
	}
	return fmt.Sprintf("%d %ss", n, what)
}

func labels(ids []string) []string {
	var out []string
	for _, id := range ids {
		out = append(out, contenderByID(contenders, id).label)
	}
	return out
}

func row(w io.Writer, cells []string, head bool) {
	if head {
		benchkit.Table{Head: cells}.Write(w)
		return
	}
	fmt.Fprintf(w, "| %s |\n", strings.Join(cells, " | "))
}

func yesNo(ok bool) string {
	if ok {
		return "yes"
	}
	return "**no**"
}
