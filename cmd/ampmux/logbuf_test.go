package main

import (
	"bytes"
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

// waitMatch waits until the text written so far matches re, for at most
// 30 s (a bound on a broken test, not an ordering).
func (s *logBuf) waitMatch(t *testing.T, re *regexp.Regexp) string {
	t.Helper()
	timeout := time.NewTimer(30 * time.Second)
	defer timeout.Stop()
	for {
		s.mu.Lock()
		if m := re.FindString(s.b.String()); m != "" {
			s.mu.Unlock()
			return m
		}
		if s.changed == nil {
			s.changed = make(chan struct{})
		}
		ch := s.changed
		s.mu.Unlock()
		select {
		case <-ch:
		case <-timeout.C:
			t.Fatalf("waited 30 s for %q in:\n%s", re, s.String())
		}
	}
}

// waitFor waits until the text written so far holds substr.
func (s *logBuf) waitFor(t *testing.T, substr string) {
	t.Helper()
	s.waitMatch(t, regexp.MustCompile(regexp.QuoteMeta(substr)))
}

// waitCount waits until substr has been written n times.
func (s *logBuf) waitCount(t *testing.T, substr string, n int) {
	t.Helper()
	timeout := time.NewTimer(60 * time.Second)
	defer timeout.Stop()
	for {
		s.mu.Lock()
		if bytes.Count(s.b.Bytes(), []byte(substr)) >= n {
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
			t.Fatalf("waited 60 s for %d × %q; have %d", n, substr, bytes.Count([]byte(s.String()), []byte(substr)))
		}
	}
}

// waitMatchB is waitMatch for benchmarks: the first submatch of re.
func (s *logBuf) waitMatchB(b *testing.B, re *regexp.Regexp) string {
	b.Helper()
	timeout := time.NewTimer(30 * time.Second)
	defer timeout.Stop()
	for {
		s.mu.Lock()
		if m := re.FindStringSubmatch(s.b.String()); m != nil {
			s.mu.Unlock()
			return m[1]
		}
		if s.changed == nil {
			s.changed = make(chan struct{})
		}
		ch := s.changed
		s.mu.Unlock()
		select {
		case <-ch:
		case <-timeout.C:
			b.Fatalf("waited 30 s for %q in:\n%s", re, s.String())
		}
	}
}
