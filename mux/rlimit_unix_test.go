//go:build unix

package mux_test

import (
	"syscall"
	"testing"
)

// raiseFDLimit raises the soft descriptor limit to the hard one, and fails
// t if even that cannot hold need descriptors.
func raiseFDLimit(t testing.TB, need int) {
	t.Helper()
	var r syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &r); err != nil {
		t.Fatalf("getrlimit: %v", err)
	}
	if r.Cur < r.Max {
		old := r.Cur
		r.Cur = r.Max
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &r); err != nil {
			t.Logf("setrlimit to %d: %v", r.Max, err) // darwin refuses an unlimited one
			r.Cur = old
		}
	}
	if uint64(r.Cur) < uint64(need) {
		t.Fatalf("this needs %d descriptors; the limit is %d (ulimit -n)", need, r.Cur)
	}
}
