package interop

import (
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// knownTwistedDifferences lists twisted_client.py checks that fail when the
// server is Twisted itself, with the reason. There are none: Twisted 22.4
// passes every check against itself, so each check describes behaviour a
// Twisted server really has (including the quirks: UTC written as
// "-00:00", undeclared errors answered as UNKNOWN "Unknown Error" followed
// by a disconnect, a malformed Sum argument answered the same way).
var knownTwistedDifferences = map[string]string{}

func TestPythonHasTwisted(t *testing.T) {
	py, err := Python()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("Python with Twisted: %s", py)
}

func TestScriptsExist(t *testing.T) {
	for _, name := range []string{"schema.py", "twisted_server.py", "twisted_client.py"} {
		p := Script(name)
		if !filepath.IsAbs(p) {
			t.Errorf("Script(%q) = %q, not absolute", name, p)
		}
		if _, err := os.Stat(p); err != nil {
			t.Errorf("Script(%q): %v", name, err)
		}
	}
}

// TestTwistedVsTwisted runs the Twisted client's checks against the Twisted
// server: it proves the scripts themselves are right.
func TestTwistedVsTwisted(t *testing.T) {
	t.Parallel()
	names := ClientCheckNames(t)
	if len(names) < 70 {
		t.Fatalf("twisted_client.py --list: only %d checks: %v", len(names), names)
	}
	addr := StartTwistedServer(t)
	res := RunTwistedClientFull(t, addr)
	if !slices.Equal(res.Order, names) {
		t.Errorf("checks run %v\nwant (from --list) %v", res.Order, names)
	}
	for _, name := range names {
		detail, ran := res.Results[name]
		why, known := knownTwistedDifferences[name]
		switch {
		case !ran:
			t.Errorf("%s: not reported", name)
		case detail != "" && !known:
			t.Errorf("%s: FAIL: %s", name, detail)
		case detail == "" && known:
			t.Errorf("%s: passes now; remove it from knownTwistedDifferences (%s)", name, why)
		}
	}
	for _, info := range res.Info {
		t.Logf("INFO %s", info)
	}
}

func TestTwistedClientOnly(t *testing.T) {
	t.Parallel()
	addr := StartTwistedServer(t)
	res := RunTwistedClient(t, addr, "--only", "sum_basic,echo_float_*,bad_argument")
	var got []string
	for name, detail := range res {
		got = append(got, name)
		if detail != "" {
			t.Errorf("%s: FAIL: %s", name, detail)
		}
	}
	slices.Sort(got)
	want := []string{"bad_argument", "sum_basic"}
	for _, n := range ClientCheckNames(t, "--only", "echo_float_*") {
		want = append(want, n)
	}
	slices.Sort(want)
	if len(want) != 12 || !slices.Equal(got, want) {
		t.Errorf("ran %v, want %v", got, want)
	}
}

// TestTwistedClientAgainstSilentServer checks that a server that never
// answers gives FAIL lines (timeouts), not a hang.
func TestTwistedClientAgainstSilentServer(t *testing.T) {
	t.Parallel()
	addr := serveTCP(t, func(c net.Conn) {
		defer c.Close()
		buf := make([]byte, 4096)
		for {
			if _, err := c.Read(buf); err != nil {
				return
			}
		}
	})
	start := time.Now()
	res := RunTwistedClientFull(t, addr,
		"--only", "sum_basic,fail_fatal,notify_no_answer", "--timeout-scale", "0.2")
	if res.Passed != 0 || res.Failed != 3 {
		t.Errorf("got %d passed, %d failed; want 0, 3: %v", res.Passed, res.Failed, res.Results)
	}
	for name, detail := range res.Results {
		if !strings.Contains(detail, "timed out") {
			t.Errorf("%s: detail %q, want a timeout", name, detail)
		}
	}
	if d := time.Since(start); d > 30*time.Second {
		t.Errorf("took %v", d)
	}
}

// TestTwistedClientAgainstClosingServer checks the report when the server
// hangs up on every connection.
func TestTwistedClientAgainstClosingServer(t *testing.T) {
	t.Parallel()
	addr := serveTCP(t, func(c net.Conn) { c.Close() })
	res := RunTwistedClientFull(t, addr, "--only", "echo_integer_*,sum_basic")
	if res.Passed != 0 || res.Failed != 8 {
		t.Errorf("got %d passed, %d failed; want 0, 8: %v", res.Passed, res.Failed, res.Results)
	}
}

// serveTCP listens on 127.0.0.1 until the test ends, running handle in a
// new goroutine for each connection, and returns the address.
func serveTCP(t *testing.T, handle func(net.Conn)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go handle(c)
		}
	}()
	return ln.Addr().String()
}

func TestServerStopsOnStdinEOF(t *testing.T) {
	t.Parallel()
	var addr string
	var end time.Time
	t.Run("server", func(t *testing.T) {
		addr = StartTwistedServer(t)
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		c.Close()
		end = time.Now()
	})
	// The subtest's cleanup closed stdin and waited for the server; had the
	// server ignored EOF, it would have been killed after 5 s.
	if d := time.Since(end); d > 4*time.Second {
		t.Errorf("server took %v to stop after stdin EOF", d)
	}
	if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		c.Close()
		t.Errorf("server at %s still accepting after cleanup", addr)
	}
}

func TestGoldenVectorsUpToDate(t *testing.T) {
	t.Parallel()
	gen := filepath.Join(filepath.Dir(Script("schema.py")), "..", "..", "..", "amp", "box", "testdata", "gen_golden.py")
	out := RunPython(t, gen, "--check")
	if !strings.Contains(string(out), " 0 problems") {
		t.Errorf("gen_golden.py --check:\n%s", out)
	}
}

func TestParseClientOutput(t *testing.T) {
	out := "INFO x: note\nPASS a\nFAIL b: it: broke\nnoise\nSUMMARY 1 passed, 1 failed\n"
	r, err := ParseClientOutput([]byte(out))
	if err != nil {
		t.Fatal(err)
	}
	if r.Results["a"] != "" || r.Results["b"] != "it: broke" || len(r.Results) != 2 {
		t.Errorf("Results = %q", r.Results)
	}
	if !slices.Equal(r.Order, []string{"a", "b"}) || !slices.Equal(r.Info, []string{"x: note"}) {
		t.Errorf("Order = %q, Info = %q", r.Order, r.Info)
	}
	for _, bad := range []string{
		"PASS a\n",                           // no summary
		"PASS a\nSUMMARY 2 passed, 0 failed", // count mismatch
		"FAIL a: x\nSUMMARY 1 passed, 0 failed",
	} {
		if _, err := ParseClientOutput([]byte(bad)); err == nil {
			t.Errorf("ParseClientOutput(%q): no error", bad)
		}
	}
}
