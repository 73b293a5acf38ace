// Package benchkit holds the small helpers the benchmark tools
// (every tool of the bench module, and ampmux bench) share: machine
// description, number formatting, the open-file limit, and stopping child
// processes.
package benchkit

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
)

// CPUModel returns the "model name" line of /proc/cpuinfo, or "unknown CPU".
func CPUModel() string {
	data, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return "unknown CPU"
	}
	for line := range strings.Lines(string(data)) {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return "unknown CPU"
}

// Kernel returns the kernel release from /proc/sys/kernel/osrelease, or "?".
func Kernel() string {
	data, err := os.ReadFile("/proc/sys/kernel/osrelease")
	if err != nil {
		return "?"
	}
	return strings.TrimSpace(string(data))
}

// LoadAvg returns the 1, 5 and 15 minute load averages from /proc/loadavg,
// space separated, or "?".
func LoadAvg() string {
	data, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(data))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

// HumanInt writes 1234567.8 as 1,234,568.
func HumanInt(f float64) string {
	s := strconv.FormatInt(int64(f+0.5), 10)
	var out []byte
	for i := range len(s) {
		if i > 0 && (len(s)-i)%3 == 0 && s[i-1] != '-' {
			out = append(out, ',')
		}
		out = append(out, s[i])
	}
	return string(out)
}

// HumanUs writes a number of microseconds with one decimal below 100 and
// none from 100 up.
func HumanUs(us float64) string {
	if us >= 100 {
		return strconv.FormatFloat(us, 'f', 0, 64)
	}
	return strconv.FormatFloat(us, 'f', 1, 64)
}

// HumanMB writes a number of bytes as megabytes with one decimal ("1.5 MB").
func HumanMB(bytes float64) string { return strconv.FormatFloat(bytes/1e6, 'f', 1, 64) + " MB" }

// LockedWriter serialises writes to W, for a writer several goroutines
// (child processes' output copiers) share.
type LockedWriter struct {
	mu sync.Mutex
	W  io.Writer
}

func (l *LockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.W.Write(p)
}

// PairRatios divides run by run, a[i] / b[i], leaving out runs where b
// is not positive.
func PairRatios(a, b []float64) []float64 {
	var out []float64
	for i := range min(len(a), len(b)) {
		if b[i] > 0 {
			out = append(out, a[i]/b[i])
		}
	}
	return out
}

// PairedRatio is the median of PairRatios: how goals comparing two sides
// are judged, since each run measures both in turn and a slow moment of
// the shared machine hits both. It can differ from the ratio of the two
// medians. 0 if no run has both.
func PairedRatio(a, b []float64) float64 {
	r := PairRatios(a, b)
	if len(r) == 0 {
		return 0
	}
	return Median(r, func(x float64) float64 { return x })
}

// Median returns the run with the median value (the lower middle one for an
// even count); runs with equal values keep their order. runs must not be
// empty.
func Median[T any](runs []T, value func(T) float64) T {
	s := slices.Clone(runs)
	slices.SortStableFunc(s, func(a, b T) int {
		switch va, vb := value(a), value(b); {
		case va < vb:
			return -1
		case va > vb:
			return 1
		}
		return 0
	})
	return s[(len(s)-1)/2]
}

// ParseKV reads a machine-readable line "TAG k=v k=v ..." into a map; the
// tag must match. The bench tools print their results this way.
func ParseKV(line, tag string) (map[string]string, error) {
	fields := strings.Fields(line)
	if len(fields) == 0 || fields[0] != tag {
		return nil, fmt.Errorf("not a %s line: %q", tag, line)
	}
	kv := make(map[string]string, len(fields)-1)
	for _, f := range fields[1:] {
		k, v, ok := strings.Cut(f, "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("%s field %q is not key=value", tag, f)
		}
		kv[k] = v
	}
	return kv, nil
}

// ErrUsage is a bad command line: the tool exits 2 (the message is already
// printed).
var ErrUsage = errors.New("usage")

// Main runs a tool's body with a context that SIGINT and SIGTERM end, then
// exits: 0 on success or -h, 2 on ErrUsage, 1 (printing "tool: err") on any
// other error.
func Main(tool string, body func(ctx context.Context) error) {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := body(ctx)
	stop()
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
	case errors.Is(err, ErrUsage):
		os.Exit(2)
	default:
		fmt.Fprintln(os.Stderr, tool+":", err)
		os.Exit(1)
	}
}

// ParseFlags parses a subcommand's flags: -h returns flag.ErrHelp, any other
// mistake or a stray argument returns ErrUsage (the flag package or this
// function has printed why).
func ParseFlags(tool string, fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return ErrUsage
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(fs.Output(), "%s %s: unexpected arguments %q\n", tool, fs.Name(), fs.Args())
		return ErrUsage
	}
	return nil
}

// StartCPUProfile starts a CPU profile into path ("" does nothing) and
// returns the function that stops it.
func StartCPUProfile(path string) (stop func(), err error) {
	if path == "" {
		return func() {}, nil
	}
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, errors.Join(errors.New("cpuprofile"), err)
	}
	return func() {
		pprof.StopCPUProfile()
		f.Close()
	}, nil
}

// Dispatch runs the subcommand args[0] of tool from cmds with the rest of
// args, printing usage for help and for no or an unknown command.
func Dispatch(tool, usage string, args []string, stdout, stderr io.Writer, cmds map[string]func(rest []string) error) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return ErrUsage
	}
	cmd, rest := args[0], args[1:]
	if run, ok := cmds[cmd]; ok {
		return run(rest)
	}
	switch cmd {
	case "-h", "-help", "--help", "help":
		fmt.Fprint(stdout, usage)
		return nil
	}
	fmt.Fprintf(stderr, "%s: unknown command %q\n\n%s", tool, cmd, usage)
	return ErrUsage
}
