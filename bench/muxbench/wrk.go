package main

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// wrkResult is what muxbench reads from wrk's report.
type wrkResult struct {
	Requests     int64
	Seconds      float64
	ReqPerSec    float64
	P50us, P99us float64 // from --latency
	SocketErrors int64   // connect + read + write + timeout
	Non2xx       int64
}

// parseWrk reads wrk's text report (wrk 4, with --latency).
func parseWrk(out string) (wrkResult, error) {
	var r wrkResult
	var haveRate, haveTotal bool
	for line := range strings.Lines(out) {
		f := strings.Fields(line)
		switch {
		case len(f) == 2 && f[0] == "Requests/sec:":
			v, err := strconv.ParseFloat(f[1], 64)
			if err != nil {
				return r, fmt.Errorf("wrk: %q: %w", line, err)
			}
			r.ReqPerSec, haveRate = v, true
		case len(f) >= 4 && f[1] == "requests" && f[2] == "in":
			n, err1 := strconv.ParseInt(f[0], 10, 64)
			d, err2 := time.ParseDuration(strings.TrimSuffix(f[3], ","))
			if err1 != nil || err2 != nil {
				return r, fmt.Errorf("wrk: cannot read %q", line)
			}
			r.Requests, r.Seconds, haveTotal = n, d.Seconds(), true
		case len(f) == 2 && (f[0] == "50%" || f[0] == "99%"):
			us, err := wrkMicros(f[1])
			if err != nil {
				return r, fmt.Errorf("wrk: %q: %w", line, err)
			}
			if f[0] == "50%" {
				r.P50us = us
			} else {
				r.P99us = us
			}
		case len(f) > 2 && f[0] == "Socket" && f[1] == "errors:":
			// Socket errors: connect 0, read 0, write 0, timeout 0
			for i := 2; i+1 < len(f); i += 2 {
				n, err := strconv.ParseInt(strings.TrimSuffix(f[i+1], ","), 10, 64)
				if err != nil {
					return r, fmt.Errorf("wrk: cannot read %q", line)
				}
				r.SocketErrors += n
			}
		case strings.HasPrefix(strings.TrimSpace(line), "Non-2xx or 3xx responses:"):
			n, err := strconv.ParseInt(f[len(f)-1], 10, 64)
			if err != nil {
				return r, fmt.Errorf("wrk: cannot read %q", line)
			}
			r.Non2xx = n
		}
	}
	if !haveRate || !haveTotal {
		return r, fmt.Errorf("wrk printed no Requests/sec or request count: %q", out)
	}
	return r, nil
}

// wrkMicros reads a wrk duration (850.00us, 1.63ms, 2.00s, 1.00m) as
// microseconds.
func wrkMicros(s string) (float64, error) {
	units := []struct {
		suffix string
		us     float64
	}{{"us", 1}, {"ms", 1e3}, {"s", 1e6}, {"m", 60e6}, {"h", 3600e6}}
	for _, u := range units {
		if v, ok := strings.CutSuffix(s, u.suffix); ok {
			f, err := strconv.ParseFloat(v, 64)
			return f * u.us, err
		}
	}
	return 0, fmt.Errorf("no unit in %q", s)
}
