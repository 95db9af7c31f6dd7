#!/usr/bin/env bash
# The cost of the peer hop: client latency on node A of
#   hit     a local hit (front cache)
#   hop     a miss on A whose owner B has it cached: A -> B's fleet listener -> B's cache
#   render  a local render of the same kind of transform (a tenant with its cache off, so
#           every request renders on A and never hops)
# Two nodes of one fleet on loopback (and a throwaway PostgreSQL, which a fleet requires),
# sequential requests with curl, N distinct URLs per kind and round, ROUNDS rounds taking
# turns; the median over rounds of each round's median and p90 is reported.
# Each URL is first asked of B, so that B holds it (rendered there, or fetched from A when
# A owns it); A's first request of it is then a hop when B owns it (the hop counter moves) and a
# local hit otherwise (counted as a hit).
# usage: [PROFILE=release] benches/load/peer-hop.sh [N=60] [ROUNDS=3]
set -euo pipefail
cd "$(dirname "$0")/../.."
N=${1:-60}
R=${2:-3}
PROFILE=${PROFILE:-release}
if [[ $PROFILE == release ]]; then cargo build --locked --release --bin imgedge >&2; else cargo build --locked --bin imgedge >&2; fi
dir=$PROFILE; [[ $PROFILE == dev ]] && dir=debug
bin=$(realpath "${CARGO_TARGET_DIR:-target}/$dir/imgedge")
images=$(realpath tests/data/images)

work=$(mktemp -d /tmp/imgedge-peer-hop.XXXX)
chmod 755 "$work"
pgbin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
as_pg=(); [[ $(id -u) == 0 ]] && { as_pg=(runuser -u postgres --); chown postgres "$work"; }
cleanup() {
  for p in "$work"/*.pid.node; do kill "$(cat "$p")" 2>/dev/null || true; done
  "${as_pg[@]}" "$pgbin/pg_ctl" -D "$work/pg" -m immediate stop >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
"${as_pg[@]}" "$pgbin/initdb" -D "$work/pg" -U postgres -A trust --no-sync >/dev/null
"${as_pg[@]}" "$pgbin/pg_ctl" -D "$work/pg" -l "$work/pg.log" -w \
  -o "-p 55432 -h 127.0.0.1 -k $work -c fsync=off" start >/dev/null

node() { # name edge ops fleet
  mkdir -p "$work/$1"
  cat > "$work/$1/imgedge.yaml" <<YAML
pingora: {threads: 2, pid_file: $work/$1/imgedge.pid, upgrade_sock: $work/$1/upgrade.sock, grace_period_seconds: 0, graceful_shutdown_timeout_seconds: 1}
listen: {edge: ["127.0.0.1:$2"], ops: "127.0.0.1:$3", render_socket: $work/$1/render.sock}
cache: {memory: 256MiB, max_object: 16MiB}
usage: {postgres: "postgres://postgres@127.0.0.1:55432/postgres"}
fleet:
  node: $1
  secret: "peer-hop-benchmark-secret-0123456789"
  peers: {a: "127.0.0.1:8131", b: "127.0.0.1:8132"}
tenants:
  - id: hop
    hosts: [cached.test]
    allow_unsigned: true
    origins: {files: {type: local, root: "$images"}}
  - id: nocache
    hosts: [render.test]
    allow_unsigned: true
    cache: {enabled: false}
    origins: {files: {type: local, root: "$images"}}
YAML
  "$bin" -c "$work/$1/imgedge.yaml" >"$work/$1/log" 2>&1 </dev/null & echo $! > "$work/$1.pid.node"
  for _ in $(seq 100); do curl -sf -o /dev/null "http://127.0.0.1:$3/readyz" && return; sleep 0.1; done
  echo "node $1 did not start" >&2; cat "$work/$1/log" >&2; exit 1
}
node a 8121 9121
node b 8122 9122

# one request: "<x-cache> <seconds>"
get() {
  curl -s -o /dev/null -D "$work/h" -w '%{http_code} %{time_total}\n' -H "Host: $2" "http://127.0.0.1:$1$3" |
    { read -r code t; [[ $code == 200 ]] || { echo "HTTP $code for $3" >&2; exit 1; }
      echo "$(tr -d '\r' < "$work/h" | awk -F': ' 'tolower($1)=="x-cache"{print $2}') $t"; }
}
# A's hops answered by their owner so far: a request that moved it was a hop
hops() { curl -s http://127.0.0.1:9121/metrics | awk '$1 == "imgedge_fleet_hops_total{result=\"ok\"}" {print $2}'; }
url() { echo "/_/rs:fit:$1:0/plain/coffee_600x400.jpg@webp"; }
stats() { sort -g | awk '{v[NR]=$1} END{printf "%.3f %.3f\n", v[int((NR+1)/2)]*1000, v[int(NR*0.9+0.5)]*1000}'; }

get 8121 cached.test "$(url 10)" >/dev/null # warm: worker pools, connections
get 8121 render.test "$(url 10)" >/dev/null
declare -A med p90
for r in $(seq "$R"); do
  : > "$work/hop"; : > "$work/hit"; : > "$work/render"
  for i in $(seq "$N"); do
    u=$(url $((100 + (r * N + i) % 500)))
    get 8122 cached.test "$u" >/dev/null
    before=$(hops)
    read -r _ t < <(get 8121 cached.test "$u")
    [[ $(hops) != "$before" ]] && echo "$t" >> "$work/hop"
    read -r _ t < <(get 8121 cached.test "$u")
    echo "$t" >> "$work/hit"
    read -r _ t < <(get 8121 render.test "$u")
    echo "$t" >> "$work/render"
  done
  for k in hit hop render; do
    read -r m p < <(stats < "$work/$k")
    med[$k]="${med[$k]:-} $m"; p90[$k]="${p90[$k]:-} $p"
    echo "round $r $k: $(wc -l < "$work/$k") requests, median $m ms, p90 $p ms" >&2
  done
done
median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{v[NR]=$1} END{print v[int((NR+1)/2)]}'; }
for k in hit hop render; do
  echo "SUMMARY $k: median $(echo "${med[$k]}" | median) ms, p90 $(echo "${p90[$k]}" | median) ms (median of $R rounds)"
done
