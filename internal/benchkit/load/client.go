package load

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// RunClient runs the client argv and returns its one RESULT line, parsed;
// a client that fails, prints no RESULT, or reports errors is an error.
// What it writes to stderr is copied to stderr.
func RunClient(ctx context.Context, argv []string, timeout time.Duration, stderr io.Writer) (Result, error) {
	cctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := exec.CommandContext(cctx, argv[0], argv[1:]...)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	cmd.WaitDelay = 2 * time.Second
	err := cmd.Run()
	what := filepath.Base(argv[0]) + " " + strings.Join(argv[1:], " ")
	if err != nil && ctx.Err() != nil {
		return Result{}, fmt.Errorf("%s: interrupted: %w", what, ctx.Err())
	}
	if err != nil {
		msg := strings.TrimSpace(errOut.String())
		if cctx.Err() == context.DeadlineExceeded {
			msg += fmt.Sprintf(" (killed after %v)", timeout)
		}
		return Result{}, fmt.Errorf("%s: %v: %s", what, err, msg)
	}
	if errOut.Len() > 0 {
		fmt.Fprintf(stderr, "%s: %s", what, errOut.String())
	}
	var results []Result
	for line := range strings.Lines(out.String()) {
		if strings.HasPrefix(line, "RESULT ") {
			r, err := ParseResult(strings.TrimSpace(line))
			if err != nil {
				return Result{}, fmt.Errorf("%s: %w", what, err)
			}
			results = append(results, r)
		}
	}
	if len(results) != 1 {
		return Result{}, fmt.Errorf("%s: printed %d RESULT lines, want 1; stdout: %q", what, len(results), out.String())
	}
	r := results[0]
	if r.Errors != 0 || r.Calls <= 0 {
		return Result{}, fmt.Errorf("%s: %d errors, %d calls", what, r.Errors, r.Calls)
	}
	return r, nil
}
