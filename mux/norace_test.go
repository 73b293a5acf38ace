//go:build !race

package mux_test

// raceEnabled: the race detector's shadow memory inflates RSS.
const raceEnabled = false
