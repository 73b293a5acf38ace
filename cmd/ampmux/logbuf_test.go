package main

import (
	"bytes"
	"fmt"
	"regexp"
	"sync"
	"testing"
	"time"
)

// logBuf collects what a command writes to stdout or stderr while the test
// reads it, and wakes whoever waits for a line to appear: tests wait on
// writes, never on a polling interval.
type logBuf struct {
	mu      sync.Mutex
	b       bytes.Buffer
	changed chan struct{} // closed and replaced on each write
}

func (s *logBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.changed != nil {
		close(s.changed)
		s.changed = nil
	}
	return s.b.Write(p)
}

func (s *logBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// waitUntil waits until ok holds for the text written so far, woken by
// each write, for at most limit (a bound on a broken test, not an
// ordering); what describes the wait in the failure.
func (s *logBuf) waitUntil(tb testing.TB, limit time.Duration, what string, ok func(text []byte) bool) {
	tb.Helper()
	timeout := time.NewTimer(limit)
	defer timeout.Stop()
	for {
		s.mu.Lock()
		if ok(s.b.Bytes()) {
			s.mu.Unlock()
			return
		}
		if s.changed == nil {
			s.changed = make(chan struct{})
		}
		ch := s.changed
		s.mu.Unlock()
		select {
		case <-ch:
		case <-timeout.C:
			tb.Fatalf("waited %v for %s in:\n%s", limit, what, s.String())
		}
	}
}

// waitMatch waits until the text written so far matches re, and returns
// the match.
func (s *logBuf) waitMatch(t *testing.T, re *regexp.Regexp) string {
	t.Helper()
	var m string
	s.waitUntil(t, 30*time.Second, fmt.Sprintf("%q", re), func(b []byte) bool { m = string(re.Find(b)); return m != "" })
	return m
}

// waitFor waits until the text written so far holds substr.
func (s *logBuf) waitFor(t *testing.T, substr string) {
	t.Helper()
	s.waitMatch(t, regexp.MustCompile(regexp.QuoteMeta(substr)))
}

// waitCount waits until substr has been written n times.
func (s *logBuf) waitCount(t *testing.T, substr string, n int) {
	t.Helper()
	s.waitUntil(t, 60*time.Second, fmt.Sprintf("%d × %q", n, substr), func(b []byte) bool { return bytes.Count(b, []byte(substr)) >= n })
}

// waitMatchB is waitMatch for benchmarks: the first submatch of re.
func (s *logBuf) waitMatchB(b *testing.B, re *regexp.Regexp) string {
	b.Helper()
	var m [][]byte
	s.waitUntil(b, 30*time.Second, fmt.Sprintf("%q", re), func(text []byte) bool {
		if m = re.FindSubmatch(text); m != nil {
			m[1] = bytes.Clone(m[1]) // text is the buffer, which goes on growing
		}
		return m != nil
	})
	return string(m[1])
}
