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
// admission, release, hand-out or first byte, its counts, its ranking of
// sources and its choice of victims agree with a scan of everything.
func TestTableAgainstModel(t *testing.T) {
	rng := rand.New(rand.NewPCG(11, 13))
	lim := limits{sniffing: 40, sniffingPerSource: 8, conns: 60, connsPerSource: 12, timeout: time.Hour, short: time.Minute}
	tb := newTable(lim)
	var live []*sniffConn // counted, in admission order
	spokeAt := map[*sniffConn]int{}
	keys := make([]netip.Prefix, 7)
	for i := range keys {
		keys[i] = netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 0, 0, byte(i)}), 32)
	}
	remove := func(c *sniffConn) {
		for i, x := range live {
			if x == c {
				live = append(live[:i], live[i+1:]...)
				return
			}
		}
		t.Fatalf("conn %d not live", c.Conn.(fakeConn).id)
	}
	sniffingOf := func(key netip.Prefix) (n int, oldestSilent, oldestTalking *sniffConn) {
		for _, c := range live {
			if c.src.key == key && c.state == stateSniffing {
				n++
				if !c.talking && oldestSilent == nil {
					oldestSilent = c
				}
				if c.talking && (oldestTalking == nil || spokeAt[c] < spokeAt[oldestTalking]) {
					oldestTalking = c // talkers go in the order they spoke
				}
			}
		}
		return n, oldestSilent, oldestTalking
	}
	// Phases of different mixes of admissions, closes, hand-outs and
	// bytes reach every cap: the first fills the sniffing caps, the second
	// hands everything out.
	mixes := [][4]int{{5, 2, 1, 2}, {1, 0, 6, 0}, {3, 3, 2, 2}}
	for id := range 15000 {
		w := mixes[id/1000%len(mixes)]
		op := rng.IntN(w[0] + w[1] + w[2] + w[3])
		switch {
		case op < w[0]: // a new connection
			key := keys[rng.IntN(len(keys))]
			// What the model expects.
			var sniffing, open, srcOpen int
			counts := map[netip.Prefix]int{}
			for _, c := range live {
				open++
				if c.src.key == key {
					srcOpen++
				}
				if c.state == stateSniffing {
					sniffing++
					counts[c.src.key]++
				}
			}
			most := 0
			for _, n := range counts {
				most = max(most, n)
			}
			srcSniffing, _, _ := sniffingOf(key)
			oldest := map[netip.Prefix]*sniffConn{} // the one to evict: silent first
			for _, k := range keys {
				if _, silent, talking := sniffingOf(k); silent != nil {
					oldest[k] = silent
				} else if talking != nil {
					oldest[k] = talking
				}
			}
			sc, victim, v := tb.admit(fakeConn{id: id}, key, time.Now())
			switch {
			case srcOpen >= lim.connsPerSource:
				require.Equal(t, refusedSource, v)
			case srcSniffing >= lim.sniffingPerSource:
				require.Equal(t, evictedSource, v)
				require.Equal(t, key, victim.src.key)
			case sniffing >= lim.sniffing:
				require.Equal(t, evictedSniffing, v)
				require.Equal(t, most, counts[victim.src.key], "the victim's source sniffs most")
			case open >= lim.conns && sniffing == 0:
				require.Equal(t, refusedConns, v)
			case open >= lim.conns:
				require.Equal(t, evictedConns, v)
				require.Equal(t, most, counts[victim.src.key], "the victim's source sniffs most")
			default:
				require.Equal(t, admitted, v)
			}
			if victim != nil {
				require.Same(t, oldest[victim.src.key], victim, "the oldest silent one goes, else the oldest talker")
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
			c := live[rng.IntN(len(live))]
			require.Equal(t, c.state == stateSniffing, tb.handOut(c))
		case len(live) > 0: // a byte
			c := live[rng.IntN(len(live))]
			if _, ok := spokeAt[c]; !ok && c.state == stateSniffing {
				spokeAt[c] = id
			}
			tb.spoke(c)
		}
		// Invariants.
		var sniffing, silent int
		perSrc := map[netip.Prefix][2]int{} // sniffing, open
		for _, c := range live {
			p := perSrc[c.src.key]
			p[1]++
			if c.state == stateSniffing {
				sniffing++
				p[0]++
				if !c.talking {
					silent++
				}
			}
			perSrc[c.src.key] = p
		}
		require.Equal(t, len(live), tb.open)
		require.Equal(t, sniffing, tb.sniffing)
		require.Equal(t, silent, tb.silent)
		require.Equal(t, len(perSrc), len(tb.sources))
		most := 0
		for key, p := range perSrc {
			src := tb.sources[key]
			require.NotNil(t, src)
			require.Equal(t, p[0], src.sniffing())
			require.Equal(t, p[1], src.conns)
			require.Equal(t, p[0] > 0, src.rank != nil)
			most = max(most, p[0])
		}
		require.Equal(t, most, tb.most)
		require.LessOrEqual(t, tb.open, lim.conns)
		require.LessOrEqual(t, tb.sniffing, lim.sniffing)
	}
	st := tb.stats()
	t.Logf("%+v", st)
	require.NotZero(t, st.EvictedPerSource)
	require.NotZero(t, st.EvictedGlobal)
	require.NotZero(t, st.RefusedPerSource)
	require.NotZero(t, st.RefusedTotal)
	require.NotZero(t, st.DeadlinesShortened)
}
