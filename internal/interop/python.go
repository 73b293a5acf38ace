// Package interop runs Twisted's AMP implementation (twisted.protocols.amp,
// Twisted 22.4) against ampmux from Go tests.
//
// The Python side lives in testdata: schema.py (the shared command set),
// twisted_server.py (a Twisted AMP server answering it) and
// twisted_client.py (a Twisted AMP client that checks a server, printing
// "PASS <name>" / "FAIL <name>: <detail>" lines and a SUMMARY line).
//
// Tests that use these helpers FAIL, never skip, when no Python with
// Twisted is available: interoperability is the point of this project.
package interop

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// DefaultPython is the interpreter used when AMPMUX_PYTHON is not set. It is
// the system Python, which has Twisted from the python3-twisted package (a
// python3 found first on PATH, such as a pyenv one, usually does not).
const DefaultPython = "/usr/bin/python3"

// PythonEnv names the environment variable that overrides DefaultPython.
const PythonEnv = "AMPMUX_PYTHON"

const (
	serverStartTimeout = 10 * time.Second
	serverStopTimeout  = 5 * time.Second
	clientRunTimeout   = 150 * time.Second
	scriptRunTimeout   = 150 * time.Second
)

var pythonChecked sync.Map // interpreter path -> error (nil when usable)

// Python returns the path of a Python with Twisted: DefaultPython, or the
// value of the AMPMUX_PYTHON environment variable. It returns an error
// saying how to install Twisted when that interpreter is missing or cannot
// import twisted.protocols.amp. Callers in tests should t.Fatal on error,
// never skip.
func Python() (string, error) {
	path := os.Getenv(PythonEnv)
	if path == "" {
		path = DefaultPython
	}
	if v, ok := pythonChecked.Load(path); ok {
		if v == nil {
			return path, nil
		}
		return "", v.(error)
	}
	err := checkPython(path)
	if err == nil {
		pythonChecked.Store(path, nil)
		return path, nil
	}
	pythonChecked.Store(path, err)
	return "", err
}

func checkPython(path string) error {
	const hint = "install Twisted for the system Python with " +
		"`apt-get install -y python3-twisted python3-openssl`, " +
		"or set " + PythonEnv + " to a Python that has Twisted"
	if _, err := exec.LookPath(path); err != nil {
		return fmt.Errorf("interop: no Python at %q (%v); %s", path, err, hint)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, path, "-c",
		"import twisted, twisted.protocols.amp; print(twisted.__version__)").CombinedOutput()
	if err != nil {
		return fmt.Errorf("interop: %s cannot import twisted.protocols.amp (%v): %s; %s",
			path, err, strings.TrimSpace(string(out)), hint)
	}
	return nil
}

// Script returns the absolute path of a file in internal/interop/testdata.
// It is located relative to this source file, so it works from any
// package's tests.
func Script(name string) string {
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		panic("interop: runtime.Caller failed")
	}
	return filepath.Join(filepath.Dir(file), "testdata", name)
}

func mustPython(t testing.TB) string {
	t.Helper()
	py, err := Python()
	if err != nil {
		t.Fatal(err)
	}
	return py
}

// syncBuffer is a bytes.Buffer safe for one writer (os/exec's copying
// goroutine) and concurrent readers.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// lineWatcher is a stdout sink that reports the port from the first
// "LISTENING <port>" line.
type lineWatcher struct {
	syncBuffer
	once sync.Once
	port chan int
}

var listeningLine = regexp.MustCompile(`(?m)^LISTENING (\d+)\r?$`)

func (w *lineWatcher) Write(p []byte) (int, error) {
	n, err := w.syncBuffer.Write(p)
	if m := listeningLine.FindStringSubmatch(w.String()); m != nil {
		if port, perr := strconv.Atoi(m[1]); perr == nil {
			w.once.Do(func() { w.port <- port })
		}
	}
	return n, err
}

// StartTwistedServer starts twisted_server.py (with args, e.g. "--host",
// "::1") and waits up to 10 s for its "LISTENING <port>" line, failing t
// with the server's stderr otherwise. A t.Cleanup stops the server (closes
// its stdin, then kills it after 5 s) and waits for it; the server's stderr
// is logged if the test failed. It returns "127.0.0.1:<port>" (or the
// --host given, bracketed as needed).
func StartTwistedServer(t testing.TB, args ...string) string {
	t.Helper()
	return startScriptServer(t, "twisted_server.py", args...)
}

// startScriptServer runs a testdata script that prints "LISTENING <port>"
// and stops at stdin EOF; see StartTwistedServer.
func startScriptServer(t testing.TB, script string, args ...string) string {
	t.Helper()
	py := mustPython(t)
	host := "127.0.0.1"
	for i, a := range args {
		if a == "--host" && i+1 < len(args) {
			host = args[i+1]
		} else if v, ok := strings.CutPrefix(a, "--host="); ok {
			host = v
		}
	}

	cmd := exec.Command(py, append([]string{"-B", "-u", Script(script)}, args...)...)
	stdout := &lineWatcher{port: make(chan int, 1)}
	stderr := &syncBuffer{}
	cmd.Stdout = stdout
	cmd.Stderr = stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatalf("interop: %s: %v", script, err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("interop: starting %s: %v", script, err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()

	var stopOnce sync.Once
	var waitErr error
	stop := func() {
		stopOnce.Do(func() {
			stdin.Close()
			select {
			case waitErr = <-exited:
			case <-time.After(serverStopTimeout):
				_ = cmd.Process.Kill()
				waitErr = <-exited
				waitErr = fmt.Errorf("did not exit within %v of stdin EOF; killed (%v)", serverStopTimeout, waitErr)
			}
		})
	}
	t.Cleanup(func() {
		stop()
		if t.Failed() || waitErr != nil {
			t.Logf("%s exit: %v\nstderr:\n%s", script, waitErr, stderr.String())
		}
	})

	select {
	case port := <-stdout.port:
		return net.JoinHostPort(host, strconv.Itoa(port))
	case err := <-exited:
		exited <- err // put it back for the cleanup
		t.Fatalf("interop: %s exited before LISTENING (%v)\nstdout:\n%s\nstderr:\n%s",
			script, err, stdout.String(), stderr.String())
	case <-time.After(serverStartTimeout):
		_ = cmd.Process.Kill()
		t.Fatalf("interop: %s did not print LISTENING within %v\nstdout:\n%s\nstderr:\n%s",
			script, serverStartTimeout, stdout.String(), stderr.String())
	}
	return "" // unreachable
}

// ClientResult is the parsed output of twisted_client.py.
type ClientResult struct {
	Results map[string]string // check name -> "" (pass) or failure detail
	Order   []string          // check names in the order they ran
	Info    []string          // "INFO ..." lines, without the prefix
	Passed  int               // from the SUMMARY line
	Failed  int               // from the SUMMARY line
}

var summaryLine = regexp.MustCompile(`^SUMMARY (\d+) passed, (\d+) failed$`)

// ParseClientOutput parses twisted_client.py's stdout.
func ParseClientOutput(out []byte) (*ClientResult, error) {
	r := &ClientResult{Results: map[string]string{}}
	summary := false
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(make([]byte, 0, 64*1024), 16*1024*1024)
	for sc.Scan() {
		line := strings.TrimRight(sc.Text(), "\r")
		switch {
		case strings.HasPrefix(line, "PASS "):
			name := strings.TrimPrefix(line, "PASS ")
			r.Results[name] = ""
			r.Order = append(r.Order, name)
		case strings.HasPrefix(line, "FAIL "):
			name, detail, _ := strings.Cut(strings.TrimPrefix(line, "FAIL "), ": ")
			if detail == "" {
				detail = "(no detail)"
			}
			r.Results[name] = detail
			r.Order = append(r.Order, name)
		case strings.HasPrefix(line, "INFO "):
			r.Info = append(r.Info, strings.TrimPrefix(line, "INFO "))
		case summaryLine.MatchString(line):
			m := summaryLine.FindStringSubmatch(line)
			r.Passed, _ = strconv.Atoi(m[1])
			r.Failed, _ = strconv.Atoi(m[2])
			summary = true
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if !summary {
		return nil, errors.New("no SUMMARY line")
	}
	failed := 0
	for _, d := range r.Results {
		if d != "" {
			failed++
		}
	}
	if len(r.Order) != r.Passed+r.Failed || failed != r.Failed {
		return nil, fmt.Errorf("SUMMARY says %d passed, %d failed but %d results (%d failed) were printed",
			r.Passed, r.Failed, len(r.Order), failed)
	}
	return r, nil
}

// RunTwistedClientFull runs twisted_client.py against addr ("host:port"),
// with extra args (e.g. "--only", "echo_*"), and returns its parsed output.
// It fails t, showing the full output, if the script cannot run, times out
// (150 s), exits with a status other than 0 (all passed) or 1 (some
// failed), or prints malformed output. Failed checks are logged.
func RunTwistedClientFull(t testing.TB, addr string, args ...string) *ClientResult {
	t.Helper()
	return runClientScript(t, "RunTwistedClient", "twisted_client.py", "twisted_client.py", nil, addr, args)
}

// runClientScript runs testdata script with argv prefix, then "--host",
// "--port" from addr, then args, and parses its output; see
// RunTwistedClientFull. caller names the exported function in the bad
// address message, and label the script run in the other messages.
func runClientScript(t testing.TB, caller, label, script string, prefix []string, addr string, args []string) *ClientResult {
	t.Helper()
	py := mustPython(t)
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatalf("interop: %s: bad address %q: %v", caller, addr, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), clientRunTimeout)
	defer cancel()
	argv := append([]string{"-B", "-u", Script(script)}, prefix...)
	argv = append(argv, "--host", host, "--port", port)
	argv = append(argv, args...)
	cmd := exec.CommandContext(ctx, py, argv...)
	cmd.WaitDelay = 5 * time.Second
	var stdout, stderr bytes.Buffer
	cmd.Stdout = &stdout
	cmd.Stderr = &stderr
	runErr := cmd.Run()
	show := func() string {
		return fmt.Sprintf("stdout:\n%s\nstderr:\n%s", stdout.String(), stderr.String())
	}
	if ctx.Err() != nil {
		t.Fatalf("interop: %s timed out after %v\n%s", label, clientRunTimeout, show())
	}
	code := 0
	if runErr != nil {
		var ee *exec.ExitError
		if !errors.As(runErr, &ee) {
			t.Fatalf("interop: running %s: %v\n%s", label, runErr, show())
		}
		code = ee.ExitCode()
	}
	if code != 0 && code != 1 {
		t.Fatalf("interop: %s exited with %v\n%s", label, runErr, show())
	}
	res, err := ParseClientOutput(stdout.Bytes())
	if err != nil {
		t.Fatalf("interop: %s output: %v\n%s", label, err, show())
	}
	if (code == 0) != (res.Failed == 0) {
		t.Fatalf("interop: %s exit status %d disagrees with its SUMMARY\n%s", label, code, show())
	}
	if res.Failed > 0 {
		t.Logf("%s against %s: %d passed, %d failed\n%s", label, addr, res.Passed, res.Failed, show())
	}
	return res
}

// RunTwistedClient runs twisted_client.py against addr and returns a map
// from check name to "" (passed) or the failure detail. See
// RunTwistedClientFull for how it fails t.
func RunTwistedClient(t testing.TB, addr string, args ...string) map[string]string {
	t.Helper()
	return RunTwistedClientFull(t, addr, args...).Results
}

// ClientCheckNames returns the names of twisted_client.py's checks (those
// selected by args such as "--only", "echo_*"), in run order.
func ClientCheckNames(t testing.TB, args ...string) []string {
	t.Helper()
	out := RunPython(t, "twisted_client.py", append([]string{"--list"}, args...)...)
	return strings.Fields(string(out))
}

// RunPython runs a script from internal/interop/testdata (or, if script is
// an absolute path, that file) with args and returns its stdout. It fails t,
// showing stderr, on a non-zero exit or after 150 s.
func RunPython(t testing.TB, script string, args ...string) []byte {
	t.Helper()
	py := mustPython(t)
	path := script
	if !filepath.IsAbs(path) {
		path = Script(script)
	}
	ctx, cancel := context.WithTimeout(context.Background(), scriptRunTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, py, append([]string{"-B", "-u", path}, args...)...)
	cmd.WaitDelay = 5 * time.Second
	var stdout, stderr bytes.Buffer
	cmd.Stdout = &stdout
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		if ctx.Err() != nil {
			err = fmt.Errorf("timed out after %v", scriptRunTimeout)
		}
		t.Fatalf("interop: %s %s: %v\nstdout:\n%s\nstderr:\n%s",
			filepath.Base(path), strings.Join(args, " "), err, stdout.String(), stderr.String())
	}
	return stdout.Bytes()
}
