package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/ampmux/ampmux/internal/benchkit"
)

// idleGoalKB is the goal for the server's memory per idle AMP connection.
const idleGoalKB = 15.0

type assembleOptions struct {
	JSON        string
	Mux         string // scripts/bench-mux's stdout
	MuxNote     string // why it is missing
	Tunnel      string // bench/tunnel's stdout
	Compare     string // scripts/bench-compare's stdout
	Limits      string // scripts/bench-limits' stdout
	TunnelNote  string // why it is missing
	Out         string
	Command     string
	Revision    string // what ampmux was built from
	Started     int64  // unix seconds when the command started (0: unknown)
	IdleProfile string // scripts/bench-mux, to profile the idle server's heap when its goal is missed
	Go          string
}

func assembleMain(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("assemble", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o assembleOptions
	fs.StringVar(&o.JSON, "json", "", "report run -json output (required)")
	fs.StringVar(&o.Mux, "mux", "", "scripts/bench-mux output (Markdown)")
	fs.StringVar(&o.MuxNote, "mux-note", "", "said instead when -mux is empty")
	fs.StringVar(&o.Tunnel, "tunnel", "", "go run ./tunnel output")
	fs.StringVar(&o.TunnelNote, "tunnel-note", "", "said instead when -tunnel is empty")
	fs.StringVar(&o.Compare, "compare", "", "scripts/bench-compare output (Markdown): this build's calls/s against a base commit's")
	fs.StringVar(&o.Limits, "limits", "", "scripts/bench-limits output (Markdown): the flood and limits on vs off")
	fs.StringVar(&o.Out, "out", "", "file to write (default stdout)")
	fs.StringVar(&o.Command, "command", "bench/run.sh", "the command that made it")
	fs.StringVar(&o.Revision, "revision", "", "what ampmux was built from (commit, local changes)")
	fs.Int64Var(&o.Started, "started", 0, "when the whole command started, `unix seconds` (date +%s): BENCHMARKS.md says how long it took")
	fs.StringVar(&o.IdleProfile, "idle-profile", "", "scripts/bench-mux: when the idle-memory goal is missed, run its idle measure once more with heap profiles and show the top")
	fs.StringVar(&o.Go, "go", "go", "go command, for go tool pprof")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if o.JSON == "" {
		fmt.Fprintln(stderr, "report assemble: -json is required")
		return errUsage
	}
	data, err := os.ReadFile(o.JSON)
	if err != nil {
		return err
	}
	var rep Report
	if err := json.Unmarshal(data, &rep); err != nil {
		return fmt.Errorf("%s: %w", o.JSON, err)
	}
	read := func(path string) string {
		if path == "" {
			return ""
		}
		b, err := os.ReadFile(path)
		if err != nil {
			fmt.Fprintf(stderr, "report assemble: %v\n", err)
			return ""
		}
		return strings.TrimSpace(string(b))
	}
	mux, tunnel := read(o.Mux), read(o.Tunnel)
	var buf bytes.Buffer
	if err := assemble(ctx, &buf, &rep, mux, tunnel, o, stderr); err != nil {
		return err
	}
	if o.Out == "" {
		_, err := stdout.Write(buf.Bytes())
		return err
	}
	return os.WriteFile(o.Out, buf.Bytes(), 0o644)
}

// idleFigures are what scripts/bench-mux's tables say of idle connections.
type idleFigures struct {
	Conns                float64
	SharedKB, OwnKB      float64
	Goroutines           float64 // shared server, after
	HeapBytes, StackByte float64
	found                bool
}

var idleConnsRE = regexp.MustCompile(`server RSS holding ([\d,]+) idle AMP connections`)

// parseIdle reads the idle rows of bench-mux's Markdown.
func parseIdle(md string) idleFigures {
	var f idleFigures
	if m := idleConnsRE.FindStringSubmatch(md); m != nil {
		f.Conns, _ = strconv.ParseFloat(strings.ReplaceAll(m[1], ",", ""), 64)
	}
	num := func(s, unit string) (float64, bool) {
		s = strings.TrimSpace(s)
		v, ok := strings.CutSuffix(s, unit)
		if !ok {
			return 0, false
		}
		x, err := strconv.ParseFloat(strings.ReplaceAll(strings.TrimSpace(v), ",", ""), 64)
		return x, err == nil
	}
	for line := range strings.Lines(md) {
		cells := strings.Split(strings.Trim(strings.TrimSpace(line), "|"), "|")
		for i := range cells {
			cells[i] = strings.TrimSpace(cells[i])
		}
		switch {
		case len(cells) >= 3 && cells[0] == "RSS growth per idle connection":
			a, ok1 := num(cells[1], "KB")
			b, ok2 := num(cells[2], "KB")
			if ok1 && ok2 {
				f.SharedKB, f.OwnKB, f.found = a, b, true
			}
		case len(cells) >= 8 && cells[0] == "shared":
			f.Goroutines, _ = num(cells[5], "")
			h, _ := num(cells[6], "MB")
			s, _ := num(cells[7], "MB")
			f.HeapBytes, f.StackByte = h*1e6, s*1e6
		}
	}
	if f.Conns == 0 {
		f.found = false
	}
	return f
}

func assemble(ctx context.Context, out io.Writer, rep *Report, mux, tunnel string, o assembleOptions, stderr io.Writer) error {
	var body bytes.Buffer
	if err := assembleBody(ctx, &body, rep, mux, tunnel, o, stderr); err != nil {
		return err
	}
	m := rep.Machine
	var w bytes.Buffer
	fmt.Fprintf(&w, "# Benchmarks\n\n")
	fmt.Fprintf(&w, "Written by `%s` on %s", o.Command, rep.Started.Format("2006-01-02 15:04 MST"))
	if o.Started > 0 {
		fmt.Fprintf(&w, "; the whole command took %s", time.Since(time.Unix(o.Started, 0)).Round(time.Second))
	}
	fmt.Fprintf(&w, ". Re-run with `bench/run.sh` (every figure the median of 3 runs) or `bench/run.sh --quick` (1 run, short windows, in flight 1 and 256 only: a smoke run, not figures to quote).\n\n")
	fmt.Fprintf(&w, "- machine: nproc %d, %s, Linux %s (compare figures within a table: a shared machine is noisy from one run to the next)\n", m.NProc, m.CPU, m.Kernel)
	if o.Revision != "" {
		fmt.Fprintf(&w, "- ampmux: %s\n", o.Revision)
	}
	fmt.Fprintf(&w, "- %s; Python %s with Twisted %s; %s\n", m.Go, m.Python, m.Twisted, m.GRPC)
	fmt.Fprintf(&w, "- every client and server is a process of its own, over 127.0.0.1; one connection unless said; Sum-sized calls (two small integers in, one out)\n\n")
	w.Write(body.Bytes())
	_, err := out.Write(w.Bytes())
	return err
}

// assembleBody writes everything below the title and machine.
func assembleBody(ctx context.Context, w io.Writer, rep *Report, mux, tunnel string, o assembleOptions, stderr io.Writer) error {
	fmt.Fprintf(w, "## Goals\n\n")
	idle := parseIdle(mux)
	var extra [][]string
	idleMissed := false
	if idle.found {
		idleMissed = idle.SharedKB >= idleGoalKB
		extra = append(extra, []string{
			fmt.Sprintf("server memory per idle AMP connection (%s held; scripts/bench-mux, shared port; own port: %.1f KB)", benchkit.HumanInt(idle.Conns), idle.OwnKB),
			"—", fmt.Sprintf("%.1f KB", idle.SharedKB), "", "", fmt.Sprintf("< %.0f KB", idleGoalKB), yesNo(!idleMissed)})
	} else {
		extra = append(extra, []string{"server memory per idle AMP connection", "—", "", "", "", fmt.Sprintf("< %.0f KB", idleGoalKB), "not measured"})
	}
	writeGoals(w, rep, extra)
	var missed []string
	for _, g := range rep.Goals {
		if !g.Met {
			missed = append(missed, fmt.Sprintf("%s vs %s at %d in flight (%s, goal %s)", goalWho(g.Goal), g.Label, g.Inflight, benchkit.Ratio(g.Ratio, 1, g.Percent), goalText(g.Goal)))
		}
	}
	if len(missed) > 0 {
		fmt.Fprintf(w, "\nMissed: %s. Where the CPU goes at those levels: [Profiles](#profiles-where-ampmux-misses-a-goal).\n", strings.Join(missed, "; "))
	}
	if idle.found && idleMissed {
		perStack := idle.StackByte / idle.Conns / 1e3
		perHeap := idle.HeapBytes / idle.Conns / 1e3
		fmt.Fprintf(w, "\nIdle memory missed: %.1f KB per connection (goal < %.0f KB). The shared server held %s goroutines for %s connections (%.1f per connection); goroutine stacks in use %.1f KB and Go heap in use %.1f KB per connection (the rest is the runtime's and the kernel's).",
			idle.SharedKB, idleGoalKB, benchkit.HumanInt(idle.Goroutines), benchkit.HumanInt(idle.Conns), idle.Goroutines/idle.Conns, perStack, perHeap)
		if o.IdleProfile != "" {
			top, err := idleHeapTop(ctx, o, int(idle.Conns), stderr)
			if err != nil {
				fmt.Fprintf(stderr, "report assemble: idle heap profile: %v\n", err)
				fmt.Fprintf(w, " (The heap profile could not be taken: %v.)\n", err)
			} else {
				fmt.Fprintf(w, " The heap in use, from a heap profile of the shared server holding them (`go tool pprof -top -sample_index=inuse_space`):\n\n```text\n%s\n```\n", top)
			}
		} else {
			fmt.Fprintln(w)
		}
	}
	fmt.Fprintln(w)

	writeRPC(w, rep)
	if o.Compare != "" {
		if cmp, err := os.ReadFile(o.Compare); err != nil {
			fmt.Fprintf(stderr, "report assemble: %v\n", err)
		} else if cmp := strings.TrimSpace(string(cmp)); cmp != "" {
			fmt.Fprintf(w, "\n%s\n\n", demote(cmp))
		}
	}
	writeProfiles(w, rep)

	fmt.Fprintln(w)
	if tunnel != "" {
		fmt.Fprintf(w, "%s\n", demote(tunnel))
	} else {
		note := o.TunnelNote
		if note == "" {
			note = "not run"
		}
		fmt.Fprintf(w, "## Tunnels and setup time (bench/tunnel)\n\n%s\n", note)
	}
	fmt.Fprintln(w)
	if mux != "" {
		fmt.Fprintf(w, "%s\n", demote(mux))
	} else {
		note := o.MuxNote
		if note == "" {
			note = "not run"
		}
		fmt.Fprintf(w, "## Port sharing and idle connections (scripts/bench-mux)\n\n%s\n", note)
	}
	if o.Limits != "" {
		if lim, err := os.ReadFile(o.Limits); err != nil {
			fmt.Fprintf(stderr, "report assemble: %v\n", err)
		} else if lim := strings.TrimSpace(string(lim)); lim != "" {
			fmt.Fprintf(w, "\n%s\n", demote(lim))
		}
	}
	return nil
}

// demote makes a section's top-level "# " headings "## " so that they
// sit under the document's title.
func demote(md string) string {
	var out []string
	for line := range strings.Lines(md) {
		if strings.HasPrefix(line, "# ") {
			line = "#" + line
		}
		out = append(out, strings.TrimRight(line, "\n"))
	}
	return strings.Join(out, "\n")
}

// idleHeapTop runs bench-mux's idle measure once with profiles and returns
// the top of the shared server's heap profile.
func idleHeapTop(ctx context.Context, o assembleOptions, conns int, stderr io.Writer) (string, error) {
	dir, err := os.MkdirTemp("", "ampmux-idle-prof")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(dir)
	cctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(cctx, o.IdleProfile, "-modes", "idle", "-runs", "1", "-idle-conns", strconv.Itoa(conns), "-cpuprofile-dir", dir)
	cmd.Stderr = stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("%s -modes idle: %w", o.IdleProfile, err)
	}
	out, err := exec.CommandContext(ctx, o.Go, "tool", "pprof", "-top", "-nodecount=12", "-sample_index=inuse_space",
		filepath.Join(dir, "idle-shared.heap.pprof")).CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("go tool pprof: %v: %s", err, out)
	}
	s := string(out)
	if i := strings.Index(s, "Showing nodes"); i >= 0 {
		s = s[i:]
	}
	return strings.TrimRight(s, "\n"), nil
}
