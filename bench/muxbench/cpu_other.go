//go:build !unix

package main

// cpuMicros reports 0: getrusage is unix only.
func cpuMicros() int64 { return 0 }
