package main

import (
	"context"
	"io"
	"time"

	"github.com/ampmux/ampmux/internal/benchkit"
)

// server is a benchmark server child process.
type server struct{ *benchkit.Server }

// startServer runs argv and waits for its LISTENING line.
func startServer(ctx context.Context, name string, argv []string, stderr io.Writer) (*server, error) {
	s, err := benchkit.StartServer(ctx, name, argv, stderr, 30*time.Second)
	if err != nil {
		return nil, err
	}
	return &server{s}, nil
}

// cpuTime is the process's user + system CPU time so far.
func (s *server) cpuTime() (time.Duration, error) { return benchkit.CPUTime(s.Cmd.Process.Pid, false) }

// rss is the process's resident memory in bytes.
func (s *server) rss() (int64, error) { return benchkit.RSS(s.Cmd.Process.Pid) }
