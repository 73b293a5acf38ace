package benchkit

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"
)

// Listening matches the line a benchmark server prints once it listens:
// "LISTENING <addr>" (Announce) or, as ampmux serve does, "listening on
// <addr>".
var Listening = regexp.MustCompile(`^(?:LISTENING|listening on) (\S+)`)

// Spec says how to start a Proc.
type Spec struct {
	Name string
	Argv []string
	Env  []string // added to this process's environment
	// Ready, if set, matches the stdout line that says the child is ready;
	// Start waits for it, and its first submatch becomes Proc.Addr.
	Ready   *regexp.Regexp
	Timeout time.Duration // for Ready; 0: 30 s
	// Tags: stdout lines starting with one of these are kept for Expect.
	Tags []string
	// Log receives every other line of stdout and stderr; LogFile, if
	// set, is created and receives them too (with the command first and
	// how it ended last). The last lines are kept for errors either way.
	Log     io.Writer
	LogFile string
	// StopSignal, if set, is sent by Stop as it closes stdin, for a child
	// that does not read stdin.
	StopSignal os.Signal
}

// Proc is a child process of a benchmark run, in a process group of its
// own (so that killing it reaches what it forks, as sslh-fork does) and,
// on Linux, killed by the kernel if this process dies first.
type Proc struct {
	Name string
	Cmd  *exec.Cmd
	Addr string // Ready's first submatch

	spec   Spec
	stdin  io.WriteCloser
	tagged chan string
	out    *procOutput
	done   chan struct{} // closed once Wait has returned
	err    error         // Wait's error, once done is closed
	// quit is closed by Stop and Kill: nobody will Expect again, so the
	// reader logs tagged lines rather than block on a full tagged (which
	// would keep it from Wait, and done from closing, for ever).
	quit     chan struct{}
	quitOnce sync.Once
}

const tailLines = 20

// procOutput is where a child's lines go; both of its pipes write here.
type procOutput struct {
	mu   sync.Mutex
	log  io.Writer
	file *os.File
	tail []string
}

func (o *procOutput) line(s string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.log != nil {
		fmt.Fprintln(o.log, s)
	}
	if o.file != nil {
		fmt.Fprintln(o.file, s)
	}
	if len(o.tail) == tailLines {
		o.tail = o.tail[1:]
	}
	o.tail = append(o.tail, s)
}

// Write splits stderr into lines.
func (o *procOutput) Write(p []byte) (int, error) {
	for s := range strings.Lines(string(p)) {
		o.line(strings.TrimRight(s, "\n"))
	}
	return len(p), nil
}

// Start runs spec.Argv and, with spec.Ready, waits for its ready line. On
// failure the child is killed and the error holds the end of its output.
func Start(ctx context.Context, spec Spec) (*Proc, error) {
	if len(spec.Argv) == 0 {
		return nil, fmt.Errorf("benchkit: starting %s: no command", spec.Name)
	}
	out := &procOutput{log: spec.Log}
	if spec.LogFile != "" {
		f, err := os.Create(spec.LogFile)
		if err != nil {
			return nil, err
		}
		fmt.Fprintf(f, "$ %s\n", strings.Join(spec.Argv, " "))
		out.file = f
	}
	cmd := exec.Command(spec.Argv[0], spec.Argv[1:]...)
	cmd.Env = append(os.Environ(), spec.Env...)
	cmd.SysProcAttr = childAttr()
	cmd.Stderr = out
	p := &Proc{Name: spec.Name, Cmd: cmd, spec: spec, out: out, tagged: make(chan string, 64), done: make(chan struct{}), quit: make(chan struct{})}
	stdout, err := cmd.StdoutPipe()
	if err == nil {
		p.stdin, err = cmd.StdinPipe()
	}
	if err == nil {
		err = cmd.Start()
	}
	if err != nil {
		if out.file != nil {
			out.file.Close()
		}
		return nil, fmt.Errorf("starting %s: %w", spec.Name, err)
	}
	ready := make(chan string, 1)
	go p.read(stdout, ready)
	if spec.Ready == nil {
		return p, nil
	}
	timeout := orDefault(spec.Timeout, 30*time.Second)
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case p.Addr = <-ready:
		return p, nil
	case <-p.done:
		err = fmt.Errorf("%s exited before it was ready (%s)", p.Name, exitText(p.err))
	case <-t.C:
		err = fmt.Errorf("%s not ready after %v", p.Name, timeout)
	case <-ctx.Done():
		p.Kill()
		return nil, ctx.Err()
	}
	p.Kill()
	return nil, fmt.Errorf("%w; its output:\n%s", err, Indent(p.Tail(tailLines)))
}

func orDefault(d, def time.Duration) time.Duration {
	if d > 0 {
		return d
	}
	return def
}

func (p *Proc) read(stdout io.Reader, ready chan<- string) {
	sc := bufio.NewScanner(stdout)
	found := p.spec.Ready == nil
	for sc.Scan() {
		line := sc.Text()
		if !found {
			if m := p.spec.Ready.FindStringSubmatch(line); m != nil {
				found = true
				ready <- m[len(m)-1]
				continue
			}
		}
		trimmed := strings.TrimSpace(line)
		if slices.ContainsFunc(p.spec.Tags, func(t string) bool { return strings.HasPrefix(trimmed, t+" ") || trimmed == t }) {
			select {
			case p.tagged <- trimmed:
				continue
			case <-p.quit:
			}
		}
		p.out.line(line)
	}
	io.Copy(p.out, stdout) // after a line too long for the scanner
	close(p.tagged)
	p.err = p.Cmd.Wait()
	if f := p.out.file; f != nil {
		fmt.Fprintf(f, "[exited: %s]\n", exitText(p.err))
		f.Close()
	}
	close(p.done)
}

// Done is closed once the child has exited.
func (p *Proc) Done() <-chan struct{} { return p.done }

// Exited reports whether the child has ended.
func (p *Proc) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Err is how the child ended, once Done is closed.
func (p *Proc) Err() error { return p.err }

// Pid is the child's process id.
func (p *Proc) Pid() int { return p.Cmd.Process.Pid }

// CPUTime is the child's user + system CPU time so far; with children,
// that of the children it has reaped too. Once it has exited, its pid may
// be another process's: the figure is then wait's, children included.
func (p *Proc) CPUTime(children bool) (time.Duration, error) {
	if p.Exited() {
		st := p.Cmd.ProcessState
		return st.UserTime() + st.SystemTime(), nil
	}
	return CPUTime(p.Pid(), children)
}

// ErrExited is RSS's error for a child that has ended.
var ErrExited = errors.New("benchkit: the child has exited")

// RSS is the child's resident memory in bytes.
func (p *Proc) RSS() (int64, error) {
	if p.Exited() {
		return 0, fmt.Errorf("%s: %w", p.Name, ErrExited)
	}
	return RSS(p.Pid())
}

// Tail is the child's last lines of output (at most 20).
func (p *Proc) Tail(n int) string {
	p.out.mu.Lock()
	defer p.out.mu.Unlock()
	t := p.out.tail[max(0, len(p.out.tail)-n):]
	if len(t) == 0 {
		return "(no output)"
	}
	return strings.Join(t, "\n")
}

// Send writes a line to the child's stdin.
func (p *Proc) Send(line string) error {
	if _, err := io.WriteString(p.stdin, line+"\n"); err != nil {
		return fmt.Errorf("%s: %w", p.Name, err)
	}
	return nil
}

// Expect waits for the next tagged line, which must start with tag.
func (p *Proc) Expect(ctx context.Context, tag string, timeout time.Duration) (string, error) {
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case line, ok := <-p.tagged:
		if !ok {
			<-p.done
			return "", fmt.Errorf("%s exited before printing %s (%s); its output:\n%s", p.Name, tag, exitText(p.err), Indent(p.Tail(tailLines)))
		}
		if !strings.HasPrefix(line, tag+" ") && line != tag {
			return "", fmt.Errorf("%s printed %q, want a %s line", p.Name, line, tag)
		}
		return line, nil
	case <-t.C:
		return "", fmt.Errorf("%s printed no %s line in %v", p.Name, tag, timeout)
	case <-ctx.Done():
		return "", ctx.Err()
	}
}

// ErrKilled is Stop's error for a child that had to be killed.
var ErrKilled = errors.New("benchkit: did not exit in time; killed")

// Stop closes the child's stdin (and sends StopSignal), waits up to grace
// for it to exit, then kills its process group. It reports how the child
// ended.
func (p *Proc) Stop(grace time.Duration) error {
	p.quitOnce.Do(func() { close(p.quit) })
	p.stdin.Close()
	if p.spec.StopSignal != nil {
		p.Cmd.Process.Signal(p.spec.StopSignal)
	}
	t := time.NewTimer(grace)
	defer t.Stop()
	select {
	case <-p.done:
		if p.err != nil {
			return fmt.Errorf("%s: %w", p.Name, p.err)
		}
		return nil
	case <-t.C:
		p.Kill()
		return fmt.Errorf("%s, %v after stdin closed: %w", p.Name, grace, ErrKilled)
	}
}

// Kill kills the child's process group now and waits for it.
func (p *Proc) Kill() {
	p.quitOnce.Do(func() { close(p.quit) })
	p.stdin.Close()
	killGroup(p.Cmd.Process)
	select {
	case <-p.done:
	case <-time.After(5 * time.Second):
		fmt.Fprintf(os.Stderr, "%s (pid %d) did not exit after SIGKILL\n", p.Name, p.Pid())
	}
}

// Procs are the children of one run: KillAll ends them all, on error too.
type Procs struct {
	mu   sync.Mutex
	list []*Proc
	shut bool
	quit chan struct{} // closed by KillAll: Starts in flight give up
	// starting counts Starts in flight; KillAll waits for them, so that
	// no child outlives it. Add only under mu while !shut.
	starting sync.WaitGroup
}

// ErrShuttingDown is Procs.Start's error once KillAll has begun.
var ErrShuttingDown = errors.New("benchkit: shutting down")

// Start starts a child (see Start) and keeps it.
func (ps *Procs) Start(ctx context.Context, spec Spec) (*Proc, error) {
	ps.mu.Lock()
	if ps.shut {
		ps.mu.Unlock()
		return nil, ErrShuttingDown
	}
	if ps.quit == nil {
		ps.quit = make(chan struct{})
	}
	quit := ps.quit
	ps.starting.Add(1)
	ps.mu.Unlock()
	defer ps.starting.Done()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-quit:
			cancel()
		case <-ctx.Done():
		}
	}()
	p, err := Start(ctx, spec)
	ps.mu.Lock()
	defer ps.mu.Unlock()
	if ps.shut {
		if p != nil {
			p.Kill()
		}
		return nil, ErrShuttingDown
	}
	if err != nil {
		return nil, err
	}
	ps.list = append(ps.list, p)
	return p, nil
}

// Kill kills one child and forgets it.
func (ps *Procs) Kill(p *Proc) {
	p.Kill()
	ps.mu.Lock()
	defer ps.mu.Unlock()
	ps.list = slices.DeleteFunc(ps.list, func(q *Proc) bool { return q == p })
}

// KillAll kills every child and waits for them; Start fails after it.
func (ps *Procs) KillAll() {
	ps.mu.Lock()
	if !ps.shut && ps.quit != nil {
		close(ps.quit)
	}
	ps.shut = true
	list := ps.list
	ps.mu.Unlock()
	var wg sync.WaitGroup
	for _, p := range list {
		wg.Go(p.Kill)
	}
	wg.Wait()
	ps.starting.Wait()
}

// CheckAlive fails if a child has ended while it should be serving.
func (ps *Procs) CheckAlive() error {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	for _, p := range ps.list {
		if p.Exited() {
			return fmt.Errorf("%s exited during the run (%s); its output:\n%s", p.Name, exitText(p.err), Indent(p.Tail(tailLines)))
		}
	}
	return nil
}

// Report describes every child for an error message: which ended, and
// the end of its output.
func (ps *Procs) Report() string {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	var b bytes.Buffer
	for _, p := range ps.list {
		state := "running"
		if p.Exited() {
			state = "exited: " + exitText(p.err)
		}
		fmt.Fprintf(&b, "--- %s (%s):\n%s\n", p.Name, state, Indent(p.Tail(8)))
	}
	return b.String()
}

func exitText(err error) string {
	if err == nil {
		return "status 0"
	}
	return err.Error()
}

// Indent indents every line of s by four spaces.
func Indent(s string) string {
	return "    " + strings.ReplaceAll(s, "\n", "\n    ")
}
