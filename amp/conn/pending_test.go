package conn

import (
	"math/rand/v2"
	"testing"
)

// pendingCalls against a plain map, through random puts, answers,
// cancels and calls that stay pending for many laps of the ring.
func TestPendingCallsMatchesAMap(t *testing.T) {
	var p pendingCalls
	want := map[uint64]*call{}
	calls := map[uint64]*call{}
	r := rand.New(rand.NewPCG(1, 2))
	var next uint64
	var live []uint64
	check := func(tag uint64) {
		t.Helper()
		got, ok := p.lookup(tag)
		w, wok := want[tag]
		if ok != wok || got != w {
			t.Fatalf("tag %d: lookup gives %p %v, want %p %v", tag, got, ok, w, wok)
		}
	}
	for step := range 200_000 {
		switch op := r.IntN(10); {
		case op < 5 || len(live) == 0: // a new call
			next++
			cl := &call{}
			calls[next] = cl
			p.put(next, cl)
			want[next] = cl
			// One call in 50 is slow: it stays for thousands of steps.
			if r.IntN(50) != 0 || len(live) < 5 {
				live = append(live, next)
			}
		case op < 9: // an answer, mostly to a recent call
			i := len(live) - 1 - min(r.IntN(8), len(live)-1)
			tag := live[i]
			live = append(live[:i], live[i+1:]...)
			check(tag)
			p.remove(tag)
			delete(want, tag)
			check(tag)
		default: // a caller gives up
			tag := live[r.IntN(len(live))]
			p.cancel(tag)
			want[tag] = nil
			check(tag)
		}
		if p.len() != len(want) {
			t.Fatalf("step %d: len %d, want %d", step, p.len(), len(want))
		}
	}
	for tag := range want {
		check(tag)
	}
	for tag := uint64(1); tag <= next; tag += 97 {
		check(tag)
	}
	got := p.drain()
	n := 0
	for _, cl := range want {
		if cl != nil {
			n++
		}
	}
	if len(got) != n || p.len() != 0 {
		t.Fatalf("drain gave %d calls, want %d (len now %d)", len(got), n, p.len())
	}
}

func TestPendingCallsShrinkAfterBurst(t *testing.T) {
	var p pendingCalls
	for tag := uint64(1); tag <= 100_000; tag++ {
		p.put(tag, &call{})
	}
	for tag := uint64(1); tag <= 100_000; tag++ {
		p.remove(tag)
	}
	if p.len() != 0 || len(p.ring) != 0 || len(p.old) != 0 {
		t.Fatalf("after the burst: len %d, ring %d, old %d", p.len(), len(p.ring), len(p.old))
	}
}
