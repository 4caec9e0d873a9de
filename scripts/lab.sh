#!/usr/bin/env bash
# The network lab (docs/lab.md): N isolated hosts on one private bridge, each a
# network namespace with its own mount and UTS namespaces, D-Bus system bus,
# avahi-daemon, and private /run/lanspread and /var/lib/lanspread (so
# lanspreadd and lanspreadctl work there with their defaults). Root only. Nothing here ever runs avahi-daemon or sends
# multicast in the machine's own network namespace.
#
#   lab.sh up N [--id ID] [--avahi HOST:SECTION.KEY=VALUE]...
#                                  build hosts h1..hN (10.77.0.1..N/24); each
#                                  --avahi sets one avahi-daemon.conf option
#                                  of one host (e.g. h2:server.use-ipv4=no)
#   lab.sh run HOST CMD... [--id]  run CMD inside a host (HOST: h1, h2, ...)
#   lab.sh pid HOST [--id ID]      pid of the host's anchor process (for nsenter)
#   lab.sh cut HOST | restore HOST cut or restore a host's link (bridge side)
#   lab.sh shape HOST RATE         limit what HOST sends to RATE (tc tbf, e.g. 100mbit)
#   lab.sh shape2 HOST RATE        limit what HOST sends and what it receives, each
#                                  to RATE (the second tbf is on the bridge-side
#                                  end of the host's veth, vHOST in the bridge's
#                                  namespace)
#   lab.sh unshape HOST            remove both limits
#   lab.sh mtu HOST SIZE           set the MTU of HOST's link (both veth ends;
#                                  e.g. 9000 for jumbo frames)
#   lab.sh avahi-restart HOST      kill the host's avahi-daemon and start it again
#                                  (with the same configuration)
#   lab.sh down [--id ID]          end every process in the lab (by pid) and remove it
#
# Every lab has an id (default "dev"), so tests can run their own labs.
set -euo pipefail

id=dev
args=()
avahi_options=()
while (($#)); do
    case $1 in
        --id) id=$2; shift 2 ;;
        --avahi) avahi_options+=("$2"); shift 2 ;;
        *) args+=("$1"); shift ;;
    esac
done
set -- "${args[@]}"
command=${1:-}
shift || true

state=/run/lanspread-lab/$id
bridge_ns=lsl-$id-br
host_ns() { echo "lsl-$id-$1"; }
step_timeout=20

die() { echo "lab: $*" >&2; exit 1; }
need_root() { [[ $(id -u) == 0 ]] || die "the lab needs root (network namespaces)"; }
need_tools() {
    local tool
    for tool in ip unshare nsenter dbus-daemon avahi-daemon; do
        command -v "$tool" > /dev/null || die "missing $tool (install iproute2, util-linux, dbus, avahi-daemon)"
    done
}
anchor_pid() {
    local file=$state/$1.pid
    [[ -f $file ]] || die "no host $1 in lab $id (lab.sh up first)"
    cat "$file"
}
in_host() { local pid; pid=$(anchor_pid "$1"); shift; nsenter -t "$pid" -n -m -u --wd="$PWD" -- "$@"; }

# Each host's avahi-daemon.conf: the system's, with the host's --avahi
# options replacing (or adding) their keys in their sections.
write_avahi_conf() {
    local host=$1 option
    local -a mine=()
    for option in "${avahi_options[@]}"; do
        [[ $option == "$host":* ]] && mine+=("${option#*:}")
    done
    awk -v options="${mine[*]}" '
        BEGIN {
            n = split(options, o, " ")
            for (i = 1; i <= n; i++) {
                eq = index(o[i], "="); dot = index(o[i], ".")
                section[i] = substr(o[i], 1, dot - 1)
                key[i] = substr(o[i], dot + 1, eq - dot - 1)
                value[i] = substr(o[i], eq + 1)
            }
        }
        /^\[/ {
            current = substr($0, 2, length($0) - 2); print
            for (i = 1; i <= n; i++) if (section[i] == current) print key[i] "=" value[i]
            next
        }
        {
            name = $0; sub(/[ \t]*=.*/, "", name)
            for (i = 1; i <= n; i++) if (section[i] == current && key[i] == name) next
            print
        }' /etc/avahi/avahi-daemon.conf > "$state/$host-avahi.conf"
}

# What each host's anchor runs: private /run/dbus and /run/avahi-daemon,
# its own host name, then D-Bus and Avahi (with the host's configuration
# file), then it waits to be killed.
host_init='
set -euo pipefail
if [[ $(readlink /proc/self/ns/net) == $(readlink /proc/1/ns/net) ]]; then
    echo "lab: refusing to start avahi-daemon in the machine'\''s own network namespace" >&2
    exit 1
fi
hostname "$1"
# Private runtime and state dirs: a daemon started with its defaults gets
# its own socket and peer id in each host.
for dir in /run/dbus /run/avahi-daemon /run/lanspread /var/lib/lanspread; do
    mkdir -p "$dir"
    mount -t tmpfs -o size=16m lanspread-lab "$dir"
done
dbus-daemon --system --fork
avahi-daemon -D --no-rlimits -f "$2"
exec sleep infinity
'

start_avahi() {
    in_host "$1" bash -c '
        [[ $(readlink /proc/self/ns/net) != $(readlink /proc/1/ns/net) ]] || exit 1
        avahi-daemon -D --no-rlimits -f "$1"' start-avahi "$state/$1-avahi.conf"
}

avahi_pid() { in_host "$1" cat /run/avahi-daemon/pid 2> /dev/null || true; }
avahi_running() { in_host "$1" avahi-daemon --check; }

wait_for() {
    local what=$1 deadline=$((SECONDS + step_timeout)); shift
    until "$@" > /dev/null 2>&1; do
        ((SECONDS < deadline)) || die "timed out waiting for $what"
        sleep 0.1
    done
}

case $command in
    up)
        need_root; need_tools
        n=${1:?usage: lab.sh up N}
        ((n >= 1 && n <= 32)) || die "N must be 1..32"
        [[ ! -d $state ]] || die "lab $id exists (lab.sh down --id $id first)"
        mkdir -p "$state"
        ip netns add "$bridge_ns"
        ip -n "$bridge_ns" link add br0 type bridge
        ip -n "$bridge_ns" link set br0 up
        for i in $(seq "$n"); do
            host=h$i ns=$(host_ns "h$i")
            ip netns add "$ns"
            ip link add eth0 netns "$ns" type veth peer name "v$host" netns "$bridge_ns"
            ip -n "$bridge_ns" link set "v$host" master br0 up
            ip -n "$ns" link set lo up
            ip -n "$ns" addr add "10.77.0.$i/24" dev eth0
            ip -n "$ns" link set eth0 up
            write_avahi_conf "$host"
            ip netns exec "$ns" unshare --mount --uts --propagation private \
                bash -c "$host_init" host-init "lab-$id-$host" "$state/$host-avahi.conf" \
                < /dev/null > "$state/$host.log" 2>&1 &
            echo $! > "$state/$host.pid"
        done
        for i in $(seq "$n"); do
            wait_for "avahi-daemon in h$i to run" avahi_running "h$i"
        done
        echo "lab $id: $n hosts up (10.77.0.1-$n)"
        ;;
    run)
        host=${1:?usage: lab.sh run HOST CMD...}; shift
        in_host "$host" "$@"
        ;;
    pid)
        anchor_pid "${1:?usage: lab.sh pid HOST}"
        ;;
    cut | restore)
        host=${1:?usage: lab.sh $command HOST}
        [[ $command == cut ]] && updown=down || updown=up
        ip -n "$bridge_ns" link set "v$host" "$updown"
        ;;
    shape | shape2)
        host=${1:?usage: lab.sh $command HOST RATE}
        rate=${2:?usage: lab.sh $command HOST RATE}
        anchor_pid "$host" > /dev/null
        ip netns exec "$(host_ns "$host")" tc qdisc replace dev eth0 root tbf \
            rate "$rate" burst 256kb latency 200ms
        if [[ $command == shape2 ]]; then
            # What leaves the bridge towards the host: what the host receives.
            ip netns exec "$bridge_ns" tc qdisc replace dev "v$host" root tbf \
                rate "$rate" burst 256kb latency 200ms
        fi
        ;;
    mtu)
        host=${1:?usage: lab.sh mtu HOST SIZE}
        size=${2:?usage: lab.sh mtu HOST SIZE}
        anchor_pid "$host" > /dev/null
        # Both ends of the host's veth, and the bridge (which takes the
        # smallest MTU of its ports when it is not set).
        ip -n "$bridge_ns" link set "v$host" mtu "$size"
        ip -n "$(host_ns "$host")" link set eth0 mtu "$size"
        ip -n "$bridge_ns" link set br0 mtu "$size" 2> /dev/null || true
        ;;
    unshape)
        host=${1:?usage: lab.sh unshape HOST}
        ip netns exec "$(host_ns "$host")" tc qdisc del dev eth0 root 2> /dev/null || true
        ip netns exec "$bridge_ns" tc qdisc del dev "v$host" root 2> /dev/null || true
        ;;
    avahi-restart)
        host=${1:?usage: lab.sh avahi-restart HOST}
        pid=$(avahi_pid "$host")
        [[ -n $pid ]] || die "no avahi-daemon runs in $host"
        kill "$pid"
        wait_for "avahi-daemon in $host to exit" bash -c "! kill -0 $pid"
        start_avahi "$host"
        wait_for "avahi-daemon in $host to run" avahi_running "$host"
        ;;
    down)
        # Every process inside the lab's namespaces was started in the lab
        # (anchors, D-Bus, Avahi, daemons run with `lab.sh run`): end them
        # by pid, then remove the namespaces.
        for ns in $(ip netns list | awk '{print $1}' | grep -E "^lsl-$id-" || true); do
            pids=$(ip netns pids "$ns" 2> /dev/null || true)
            [[ -n $pids ]] && kill $pids 2> /dev/null || true
        done
        sleep 0.2
        for ns in $(ip netns list | awk '{print $1}' | grep -E "^lsl-$id-" || true); do
            pids=$(ip netns pids "$ns" 2> /dev/null || true)
            [[ -n $pids ]] && kill -9 $pids 2> /dev/null || true
            ip netns del "$ns" 2> /dev/null || true
        done
        rm -rf "$state"
        echo "lab $id: down"
        ;;
    *)
        sed -n '2,27p' "$0" | sed 's/^# \{0,1\}//'
        exit 2
        ;;
esac
