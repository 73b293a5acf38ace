//go:build !unix

package mux_test

import "testing"

// raiseFDLimit does nothing: Windows has no per-process socket limit.
func raiseFDLimit(testing.TB, int) {}
