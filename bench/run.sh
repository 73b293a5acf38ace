#!/usr/bin/env bash
# Benchmarks ampmux against the alternatives and writes BENCHMARKS.md at the
# repository root, with one command, from a fresh clone:
#
#   bench/run.sh            # every figure the median of 3 runs: ~10 min on 2 cores
#   bench/run.sh --quick    # 1 run, short windows, in flight 1 and 256 only: < 2 min (smoke run)
#   bench/run.sh --compare REF   # also this tree's calls/s against commit REF's
#                                # (scripts/bench-compare REF: +4 min, +30 s with --quick)
#
# On a shared machine, keep benchmark runs apart:
#   flock /tmp/ampmux-bench.lock bench/run.sh
#
# What it runs, every client and server a process of its own over loopback:
#   1. bench/report run: Sum calls/s on one connection at 1, 16 and 256 in
#      flight for ampmux (bench/callbench: raw, typed and async API), Twisted AMP
#      (bench/twisted), grpc-go and net/rpc (bench/rpc), the raw TCP floor (callbench,
#      batched and per-write), both interop directions, and ampmux bench
#      (plain and --pipeline) against ampmux serve --demo next to callbench's
#      client against it; then 1,000
#      connections with one call in flight each (callbench -conns); where ampmux
#      misses a goal, CPU profiles of it at that level.
#   2. bench/tunnel (go run ./tunnel): tunnels and setup time.
#   3. scripts/bench-mux: HTTP on the shared port vs direct, and the memory
#      of 10,000 idle AMP connections; scripts/bench-limits: a new client under
#      a flood of 10,000 idle sniffing connections, and serve's limits on vs off;
#      scripts/bench-ops: PROXY v2 on vs off through HAProxy, metrics and the
#      access log on vs off.
#   4. bench/report assemble: BENCHMARKS.md from all of it.
#
# Installs what is missing when run as root: python3-twisted (for
# /usr/bin/python3), wrk, sslh and haproxy with apt-get; Go modules come through go.
# Progress goes to stderr. Exits non-zero if any part failed; when the
# tunnel or port-sharing part fails, BENCHMARKS.md is still written, saying so.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

quick=""
compare=""
while [ $# -gt 0 ]; do
	a=$1
	shift
	case "$a" in
	--quick | -quick) quick=1 ;;
	--compare | -compare)
		[ $# -gt 0 ] || { echo "bench/run.sh: --compare needs a commit" >&2; exit 2; }
		compare=$1
		shift
		;;
	--compare=* | -compare=*) compare=${a#*=} ;;
	-h | -help | --help)
		sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'
		exit 0
		;;
	*)
		echo "bench/run.sh: unknown argument $a (usage: bench/run.sh [--quick] [--compare REF])" >&2
		exit 2
		;;
	esac
done
started=$(date +%s)

# --- what the contenders need -------------------------------------------
have_twisted() { "$1" -c 'import twisted.protocols.amp' 2>/dev/null; }
missing=()
have_twisted /usr/bin/python3 || missing+=(python3-twisted)
command -v wrk >/dev/null || missing+=(wrk)
command -v haproxy >/dev/null || missing+=(haproxy)
command -v sslh >/dev/null || [ -x /usr/sbin/sslh ] || missing+=(sslh)
if [ ${#missing[@]} -gt 0 ]; then
	if [ "$(id -u)" = 0 ]; then
		echo "== installing ${missing[*]}" >&2
		apt-get update -qq >&2
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >&2
	else
		echo "bench/run.sh: missing ${missing[*]}; as root: apt-get update && apt-get install -y ${missing[*]}" >&2
	fi
fi
python=""
for p in /usr/bin/python3 "$(command -v python3 || true)"; do
	if [ -n "$p" ] && have_twisted "$p"; then
		python=$p
		break
	fi
done
if [ -z "$python" ]; then
	echo "bench/run.sh: no python3 with Twisted (apt-get install -y python3-twisted)" >&2
	exit 1
fi
command -v go >/dev/null || {
	echo "bench/run.sh: go is missing (https://go.dev/dl/)" >&2
	exit 1
}
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

# --- build ---------------------------------------------------------------
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
echo "== building" >&2
(cd bench && go build -o "$work/callbench" ./callbench)
go build -o "$work/ampmux" ./cmd/ampmux
(cd bench && go build -o "$work/rpc" ./rpc && go build -o "$work/report" ./report)

if [ -n "$quick" ]; then
	rpc_args=(-runs 1 -duration 500ms -warmup 200ms -inflight 1,256 -scale-conns 1000 -profile-duration 1s)
	quick_flag=(--quick)
else
	rpc_args=(-runs 3 -duration 2s -warmup 500ms -inflight 1,16,256 -scale-conns 1000 -profile-duration 5s)
	quick_flag=()
fi
failed=()

# --- 1. RPC: ampmux vs Twisted AMP, grpc-go, net/rpc, the raw TCP floor -------
echo "== RPC comparison (bench/report run ${rpc_args[*]})" >&2
"$work/report" run -callbench "$work/callbench" -ampmux "$work/ampmux" -rpc "$work/rpc" \
	-python "$python" -twisted-dir "$root/bench/twisted" -json "$work/rpc.json" \
	"${rpc_args[@]}" >"$work/rpc.md"

# --- 2. tunnels and setup time (bench/tunnel) ----------------------------------
tunnel_note=""
: >"$work/tunnel.md"
if [ -d bench/tunnel ]; then
	echo "== tunnels (cd bench && go run ./tunnel ${quick_flag[*]-})" >&2
	if ! (cd bench && go run ./tunnel ${quick_flag[@]+"${quick_flag[@]}"}) >"$work/tunnel.md"; then
		tunnel_note="bench/tunnel failed; its errors went to run.sh's stderr."
		: >"$work/tunnel.md"
		failed+=(tunnel)
	fi
else
	tunnel_note="Skipped: bench/tunnel is not in this tree (run.sh calls \`cd bench && go run ./tunnel\` when it is)."
	echo "== tunnels: skipped, bench/tunnel is missing" >&2
fi

# --- 3. port sharing and idle memory (scripts/bench-mux) ----------------------
mux_note=""
echo "== port sharing (scripts/bench-mux ${quick_flag[*]-})" >&2
if ! scripts/bench-mux ${quick_flag[@]+"${quick_flag[@]}"} >"$work/mux.md"; then
	mux_note="scripts/bench-mux failed; its errors went to run.sh's stderr."
	: >"$work/mux.md"
	failed+=(bench-mux)
fi

# --- 3a. the flood, and limits on vs off (scripts/bench-limits) ---------------
echo "== flood and limits (scripts/bench-limits ${quick_flag[*]-})" >&2
if ! scripts/bench-limits ${quick_flag[@]+"${quick_flag[@]}"} >"$work/limits.md"; then
	: >"$work/limits.md"
	failed+=(bench-limits)
fi

# --- 3b. PROXY protocol, metrics and access log on vs off (scripts/bench-ops) -
# (its section goes after the limits', in the same part of BENCHMARKS.md)
echo "== operations (scripts/bench-ops ${quick_flag[*]-})" >&2
if ! scripts/bench-ops ${quick_flag[@]+"${quick_flag[@]}"} >"$work/ops.md"; then
	failed+=(bench-ops)
elif [ -s "$work/limits.md" ]; then
	{ echo; cat "$work/ops.md"; } >>"$work/limits.md"
else
	cp "$work/ops.md" "$work/limits.md"
fi

# --- 3c. calls/s against a base commit (scripts/bench-compare) -----------------
: >"$work/compare.md"
if [ -n "$compare" ]; then
	if [ -n "$quick" ]; then compare_args=(-runs 1 -duration 500ms -warmup 200ms -inflight 1,256); else compare_args=(); fi
	echo "== against $compare (scripts/bench-compare $compare ${compare_args[*]-})" >&2
	if ! scripts/bench-compare "$compare" ${compare_args[@]+"${compare_args[@]}"} >"$work/compare.md"; then
		: >"$work/compare.md"
		failed+=(bench-compare)
	fi
fi

# --- 4. BENCHMARKS.md ------------------------------------------------------------
revision=""
if rev=$(git rev-parse --short HEAD 2>/dev/null); then
	revision="built from commit $rev"
	if ! git diff --quiet HEAD -- . ':(exclude)bench' ':(exclude)BENCHMARKS.md' 2>/dev/null; then
		revision="$revision plus uncommitted changes outside bench/"
	fi
fi
"$work/report" assemble -revision "$revision" -json "$work/rpc.json" -mux "$work/mux.md" -mux-note "$mux_note" \
	-tunnel "$work/tunnel.md" -tunnel-note "$tunnel_note" -idle-profile scripts/bench-mux \
	-compare "$work/compare.md" -limits "$work/limits.md" -command "bench/run.sh${quick:+ --quick}${compare:+ --compare $compare}" -started "$started" -out BENCHMARKS.md
echo "== wrote BENCHMARKS.md ($(($(date +%s) - started)) s)" >&2
if [ ${#failed[@]} -gt 0 ]; then
	echo "bench/run.sh: failed: ${failed[*]}" >&2
	exit 1
fi
