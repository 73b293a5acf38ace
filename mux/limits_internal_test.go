package mux

import (
	"math"
	"math/rand/v2"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestSourceOf(t *testing.T) {
	tcp := func(s string) net.Addr { return net.TCPAddrFromAddrPort(netip.MustParseAddrPort(s)) }
	tests := []struct {
		addr net.Addr
		want string // "" for the zero Prefix
	}{
		{tcp("192.0.2.1:5"), "192.0.2.1/32"},
		{tcp("[::ffff:192.0.2.1]:5"), "192.0.2.1/32"}, // a v4 client on a dual-stack socket
		{tcp("[2001:db8:1:2:3::1]:5"), "2001:db8:1:2::/64"},
		{tcp("[2001:db8:1:2:ffff::9]:5"), "2001:db8:1:2::/64"}, // same /64
		{tcp("[2001:db8:1:3::1]:5"), "2001:db8:1:3::/64"},
		{&net.TCPAddr{IP: net.ParseIP("fe80::1"), Zone: "eth0", Port: 5}, "fe80::/64"},
		{&net.UDPAddr{IP: net.ParseIP("192.0.2.7"), Port: 5}, "192.0.2.7/32"},
		{&net.UnixAddr{Name: "/run/x.sock", Net: "unix"}, ""},
		{nil, ""},
		{(*net.TCPAddr)(nil), ""},
	}
	for _, tc := range tests {
		got := sourceOf(tc.addr)
		if tc.want == "" {
			require.Equal(t, netip.Prefix{}, got, "%v", tc.addr)
		} else {
			require.Equal(t, netip.MustParsePrefix(tc.want), got, "%v", tc.addr)
		}
	}
	c1, c2 := net.Pipe()
	defer c1.Close()
	defer c2.Close()
	require.Equal(t, netip.Prefix{}, sourceOf(c1.RemoteAddr()), "pipes are one source")
}

func TestLimitsDefaults(t *testing.T) {
	lim := func(cfg Config) limits {
		if cfg.SniffTimeout == 0 {
			cfg.SniffTimeout = DefaultSniffTimeout
		}
		return cfg.limits()
	}
	conns := math.MaxInt
	if n := descriptorLimit(); n > 0 {
		conns = n / 2
	}
	require.Equal(t, limits{sniffing: DefaultMaxSniffing, sniffingPerSource: DefaultMaxSniffingPerSource,
		conns: conns, connsPerSource: math.MaxInt, timeout: 5 * time.Second, short: 500 * time.Millisecond}, lim(Config{}))
	require.Equal(t, limits{sniffing: math.MaxInt, sniffingPerSource: math.MaxInt, conns: math.MaxInt,
		connsPerSource: 7, timeout: time.Second, short: DefaultMinSniffTimeout},
		lim(Config{MaxSniffing: -1, MaxSniffingPerSource: -1, MaxConns: -1, MaxConnsPerSource: 7, SniffTimeout: time.Second}))
	require.Equal(t, 100*time.Millisecond, lim(Config{SniffTimeout: 100 * time.Millisecond}).short, "never above SniffTimeout")
	require.Equal(t, time.Second, lim(Config{SniffTimeout: time.Second, MinSniffTimeout: time.Hour}).short)
}

// fakeConn is a connection the table only stores.
type fakeConn struct {
	net.Conn
	id int
}

// The table against a model kept the slow way: after every random
// admission, release, match, hand-out or first byte, its counts, its
// rankings of sources and its choice of victims agree with a scan of
// everything.
func TestTableAgainstModel(t *testing.T) {
	rng := rand.New(rand.NewPCG(11, 13))
	lim := limits{sniffing: 40, sniffingPerSource: 8, conns: 60, connsPerSource: 12, timeout: time.Hour, short: time.Minute}
	tb := newTable(lim)
	var live []*sniffConn // counted, in admission order
	spokeAt := map[*sniffConn]int{}
	matchedAt := map[*sniffConn]int{}
	gone := map[*sniffConn]<-chan struct{}{} // watched while waiting
	keys := make([]netip.Prefix, 7)
	for i := range keys {
		keys[i] = netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 0, 0, byte(i)}), 32)
	}
	isClosed := func(ch <-chan struct{}) bool {
		select {
		case <-ch:
			return true
		default:
			return false
		}
	}
	remove := func(c *sniffConn) {
		if ch, ok := gone[c]; ok {
			require.True(t, isClosed(ch), "a watched connection's channel is closed as it goes")
			delete(gone, c)
		}
		for i, x := range live {
			if x == c {
				live = append(live[:i], live[i+1:]...)
				return
			}
		}
		t.Fatalf("conn %d not live", c.Conn.(fakeConn).id)
	}
	// byKey scans key's connections: how many sniff, how many the table
	// holds (sniffing or waiting), and the oldest of each list.
	type scan struct {
		sniffing, held                    int
		oldestSilent, oldestTalking, wait *sniffConn
	}
	byKey := func(key netip.Prefix) (s scan) {
		for _, c := range live {
			if c.src.key != key {
				continue
			}
			switch c.state {
			case stateSniffing:
				s.sniffing++
				s.held++
				if !c.talking && s.oldestSilent == nil {
					s.oldestSilent = c
				}
				if c.talking && (s.oldestTalking == nil || spokeAt[c] < spokeAt[s.oldestTalking]) {
					s.oldestTalking = c // talkers go in the order they spoke
				}
			case stateWaiting:
				s.held++
				if s.wait == nil || matchedAt[c] < matchedAt[s.wait] {
					s.wait = c // waiters go in the order they matched
				}
			}
		}
		return s
	}
	// pick is mostly a live connection in state st, if any, sometimes any
	// (for the no-ops).
	pick := func(st connState) *sniffConn {
		if rng.IntN(4) > 0 {
			var in []*sniffConn
			for _, c := range live {
				if c.state == st {
					in = append(in, c)
				}
			}
			if len(in) > 0 {
				return in[rng.IntN(len(in))]
			}
		}
		return live[rng.IntN(len(live))]
	}
	// Phases of different mixes of admissions, closes, matches, hand-outs
	// and bytes reach every cap: the first fills the sniffing caps, the
	// second hands everything out, the fourth leaves matched connections
	// waiting under MaxConns.
	mixes := [][5]int{{5, 2, 1, 1, 2}, {1, 0, 4, 4, 0}, {3, 3, 2, 1, 2}, {4, 1, 4, 0, 1}}
	// keys[6] is a load balancer's (Config.ProxyFrom): its connections
	// skip the per-source caps until a PROXY header rekeys them.
	balancerKey := keys[6]
	var rekeyed [3]int // admitted, refused, evicted
	for id := range 20000 {
		w := mixes[id/1000%len(mixes)]
		op := rng.IntN(w[0] + w[1] + w[2] + w[3] + w[4])
		if op < w[0] && rng.IntN(5) == 0 {
			// A balancer's silent connection gets its header: moved to
			// its client's source, under that source's caps.
			var from []*sniffConn
			for _, c := range live {
				if c.src.key == balancerKey && c.state == stateSniffing && !c.talking {
					from = append(from, c)
				}
			}
			if len(from) > 0 {
				c := from[rng.IntN(len(from))]
				key := keys[rng.IntN(6)]
				s := byKey(key)
				var srcOpen int
				for _, x := range live {
					if x.src.key == key {
						srcOpen++
					}
				}
				victim, v := tb.rekey(c, key)
				switch {
				case srcOpen >= lim.connsPerSource:
					rekeyed[1]++
					require.Equal(t, refusedSource, v)
					require.Equal(t, balancerKey, c.src.key, "refused: its caller closes it")
					tb.release(c)
					remove(c)
				case s.sniffing >= lim.sniffingPerSource:
					rekeyed[2]++
					require.Equal(t, evictedSource, v)
					want := s.oldestSilent
					if want == nil {
						want = s.oldestTalking
					}
					require.Same(t, want, victim)
					remove(victim)
				default:
					rekeyed[0]++
					require.Equal(t, admitted, v)
				}
				if v != refusedSource {
					require.Equal(t, key, c.src.key)
					// It joins its client's silent list last, as if just
					// accepted: so it goes last in the model's order too.
					remove(c)
					live = append(live, c)
				}
				goto invariants
			}
		}
		switch {
		case op < w[0]: // a new connection
			key := keys[rng.IntN(len(keys))]
			balancer := key == balancerKey
			// What the model expects.
			var sniffing, held, open, srcOpen int
			for _, c := range live {
				open++
				if c.src.key == key {
					srcOpen++
				}
				switch c.state {
				case stateSniffing:
					sniffing++
					held++
				case stateWaiting:
					held++
				}
			}
			scans := map[netip.Prefix]scan{}
			mostSniffing, mostHeld := 0, 0
			for _, k := range keys {
				s := byKey(k)
				scans[k] = s
				mostSniffing, mostHeld = max(mostSniffing, s.sniffing), max(mostHeld, s.held)
			}
			sniffer := func(s scan) *sniffConn { // silent first, then talkers
				if s.oldestSilent != nil {
					return s.oldestSilent
				}
				return s.oldestTalking
			}
			sc, victim, v := tb.admit(fakeConn{id: id}, key, time.Now(), balancer)
			switch {
			case !balancer && srcOpen >= lim.connsPerSource:
				require.Equal(t, refusedSource, v)
			case !balancer && scans[key].sniffing >= lim.sniffingPerSource:
				require.Equal(t, evictedSource, v)
				require.Same(t, sniffer(scans[key]), victim, "the oldest silent one goes, else the oldest talker")
			case sniffing >= lim.sniffing:
				require.Equal(t, evictedSniffing, v)
				require.Equal(t, mostSniffing, scans[victim.src.key].sniffing, "the victim's source sniffs most")
				require.Same(t, sniffer(scans[victim.src.key]), victim, "the oldest silent one goes, else the oldest talker")
			case open >= lim.conns && held == 0:
				require.Equal(t, refusedConns, v)
			case open >= lim.conns:
				s := scans[victim.src.key]
				require.Equal(t, mostHeld, s.held, "the victim's source holds most")
				want, wantV := s.oldestSilent, evictedConns
				if want == nil && s.wait != nil {
					want, wantV = s.wait, evictedWaiting
				}
				if want == nil {
					want = s.oldestTalking
				}
				require.Equal(t, wantV, v)
				require.Same(t, want, victim, "silent first, then the longest waiting, then the oldest talker")
			default:
				require.Equal(t, admitted, v)
			}
			if victim != nil {
				require.Equal(t, stateGone, victim.state)
				remove(victim)
			}
			if sc != nil {
				live = append(live, sc)
			}
		case op < w[0]+w[1] && len(live) > 0: // closed
			c := live[rng.IntN(len(live))]
			tb.release(c)
			tb.release(c) // again: a no-op
			remove(c)
		case op < w[0]+w[1]+w[2] && len(live) > 0: // matched
			c := pick(stateSniffing)
			was := c.state
			require.True(t, tb.matched(c, ClassAMP), "a live connection can be matched (again: a no-op)")
			if was == stateSniffing {
				require.Equal(t, stateWaiting, c.state)
				require.True(t, c.matched.Load())
				matchedAt[c] = id
				if rng.IntN(2) == 0 {
					gone[c] = tb.watch(c)
				}
			} else {
				require.Equal(t, was, c.state)
			}
		case op < w[0]+w[1]+w[2]+w[3] && len(live) > 0: // taken by an Accept
			c := pick(stateWaiting)
			was := c.state
			require.Equal(t, was == stateWaiting, tb.take(c))
			if was == stateWaiting {
				require.Equal(t, stateHanded, c.state)
				if ch, ok := gone[c]; ok {
					require.False(t, isClosed(ch), "taken, not gone")
					delete(gone, c)
				}
			}
		case len(live) > 0: // a byte
			c := live[rng.IntN(len(live))]
			if _, ok := spokeAt[c]; !ok && c.state == stateSniffing {
				spokeAt[c] = id
			}
			tb.spoke(c)
		}
	invariants:
		var sniffing, silent, waiting int
		type per struct{ sniffing, waiting, open int }
		perSrc := map[netip.Prefix]per{}
		for _, c := range live {
			p := perSrc[c.src.key]
			p.open++
			switch c.state {
			case stateSniffing:
				sniffing++
				p.sniffing++
				if !c.talking {
					silent++
				}
			case stateWaiting:
				waiting++
				p.waiting++
			}
			perSrc[c.src.key] = p
		}
		require.Equal(t, len(live), tb.open)
		require.Equal(t, sniffing, tb.sniffing)
		require.Equal(t, silent, tb.silent)
		require.Equal(t, waiting, tb.waiting)
		require.Equal(t, len(perSrc), len(tb.sources))
		mostSniffing, mostHeld := 0, 0
		for key, p := range perSrc {
			src := tb.sources[key]
			require.NotNil(t, src)
			require.Equal(t, p.sniffing, src.sniffing())
			require.Equal(t, p.waiting, src.waiting.Len())
			require.Equal(t, p.open, src.conns)
			require.Equal(t, p.sniffing > 0, src.rank != nil)
			require.Equal(t, p.sniffing+p.waiting > 0, src.heldAt != nil)
			mostSniffing = max(mostSniffing, p.sniffing)
			mostHeld = max(mostHeld, p.sniffing+p.waiting)
		}
		require.Equal(t, mostSniffing, tb.bySniffing.most)
		require.Equal(t, mostHeld, tb.byHeld.most)
		require.LessOrEqual(t, tb.open, lim.conns)
		require.LessOrEqual(t, tb.sniffing, lim.sniffing)
	}
	st := tb.stats()
	t.Logf("%+v", st)
	require.NotZero(t, st.EvictedPerSource)
	require.NotZero(t, st.EvictedGlobal)
	require.NotZero(t, st.EvictedWaiting)
	require.NotZero(t, st.RefusedPerSource)
	require.NotZero(t, st.RefusedTotal)
	require.NotZero(t, st.DeadlinesShortened)
	t.Logf("rekeys admitted, refused, evicting: %v", rekeyed)
	require.NotContains(t, rekeyed, 0, "every outcome of a rekey is exercised")

	// closeAll uncounts everything the table holds and leaves the rest.
	var handed int
	for _, c := range live {
		if c.state == stateHanded {
			handed++
		}
	}
	held := tb.closeAll()
	require.Len(t, held, len(live)-handed)
	for _, c := range held {
		require.Equal(t, stateGone, c.state)
	}
	st = tb.stats()
	require.Equal(t, Stats{Open: int64(handed)}, Stats{Sniffing: st.Sniffing, Silent: st.Silent, Waiting: st.Waiting, Open: st.Open})
	_, _, v := tb.admit(fakeConn{}, keys[0], time.Now(), false)
	require.Equal(t, refusedClosed, v)
}
