package benchkit

import (
	"os"
	"testing"
	"time"
)

// TestProcStat reads this test process: CPU time (it spins until a tick
// is counted, which a parser that read the wrong fields might never see),
// and a plausible RSS.
func TestProcStat(t *testing.T) {
	var own time.Duration
	spin := 0
	for own == 0 { // busy until a tick is counted
		for i := range 1_000_000 {
			spin += i
		}
		var err error
		if own, err = CPUTime(os.Getpid(), false); err != nil {
			t.Fatal(err)
		}
	}
	withChildren, err := CPUTime(os.Getpid(), true)
	if err != nil || withChildren < own {
		t.Errorf("CPUTime with children = %v, %v; without %v (spun %d)", withChildren, err, own, spin)
	}
	rss, err := RSS(os.Getpid())
	if err != nil || rss < 1<<20 || rss > 1<<34 {
		t.Errorf("RSS = %d, %v", rss, err)
	}
	if _, err := RSS(-1); err == nil {
		t.Error("RSS of no process: no error")
	}
}
