#!/usr/bin/env python3
"""`just bench`: lanspread's figures, measured in the network lab (docs/lab.md#benchmarks).

Runs every scenario against its baseline in the same run, on release
binaries, in a lab of nine hosts (id "bench"), and writes
bench/results/latest.json, latest.md (the table), multi-peer.svg (per-peer
throughput over time) and fanout-sources.svg (bytes each fan-out downloader
received from seeders and from other downloaders); with --profile, also
flame-<scenario>-<side>.svg (perf + inferno). Each figure is the
median of several runs, with min and max; the previous latest.json is
compared and differences over 10 % are pointed out. Root only. Everything
started here is ended by pid (through `lab.sh down`), also on failure; the
whole run is bounded to 30 minutes (SIGALRM); a full run takes about 15.

    bench/run.py [--only NAME[,NAME...]]

Scenario names: single, ceiling, jumbo, multi, fanout, fanout-bt, fanout8,
fanout8-bt, discovery, idle, mesh, mesh20, extract, many, delta, prepare.

The delta scenario updates a 1 GiB game from h1 to h2 in issue 19's two
shapes — (a) 5 % of the files changed in place, one added, one removed;
(b) 1 MiB + 7 bytes inserted at 37 % of a 256 MiB archive and 3 MiB
overwritten in a 64 MiB file — with lanspread and with `rsync -a` from an
rsync daemon in h1 (the same old files on h2 each run), reports the bytes
h2's link received ÷ the bytes changed, the update times, and a full
lanspread download of the new version (about 5 minutes).

The fan-out scenarios shape every link of the swarm in both directions
(lab.sh shape2) and run rounds of "one downloader alone" and "all
downloaders together" from one seeder in h1 (SWARMS: 5 rounds of 1 → 4,
whose spread between rounds is as large as the effects worth measuring,
2 of 1 → 8):
  fanout      1 → 4 (h2..h5), 400 Mbit/s, 128 MiB, lanspread (about 90 s)
  fanout-bt   the same with BitTorrent: aria2c seeder and leechers, an
              opentracker in h1 that whitelists only the torrent, 4 MiB
              pieces (mktorrent -l 22), each round with a fresh tracker and
              seeder; needs no lanspread binary (about 70 s)
  fanout8     1 → 8 (h2..h9), 100 Mbit/s, 128 MiB, lanspread (about 90 s)
  fanout8-bt  the same with BitTorrent (about 70 s)
Each reports one alone, all done, their ratio, the bytes h1 sent (its veth
counters, headers included) ÷ the game size, and the Kumar–Ross lower
bound for the shaping, max(F/u_s, F/d_min, N·F/(u_s + Σu_i)), as a time and
÷ the measured one-alone time (the best ratio possible).

Release binaries are taken from $CARGO_TARGET_DIR/release (default
target/release). The lab id is "bench" unless LANSPREAD_BENCH_LAB says
otherwise (the mesh scenario adds a lab of its own, "<id>mesh").
LANSPREAD_BENCH_MANY_FILES sets the number of files of `many` (50 000);
LANSPREAD_BENCH_RESULTS another folder for the results (a trial run);
LANSPREAD_BENCH_LOG the daemons' RUST_LOG (info); LANSPREAD_BENCH_LOGS a
folder the swarm downloaders' logs are copied to.
"""

import argparse
import datetime
import filecmp
import glob
import hashlib
import json
import os
import platform
import queue
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(os.environ.get("CARGO_TARGET_DIR") or os.path.join(ROOT, "target"), "release")
LAB = os.path.join(ROOT, "scripts", "lab.sh")
# LANSPREAD_BENCH_RESULTS: write the results elsewhere (a trial run).
RESULTS = os.environ.get("LANSPREAD_BENCH_RESULTS") or os.path.join(ROOT, "bench", "results")
# LANSPREAD_BENCH_LAB: another lab id, so two benches on one machine do not
# tear down each other's labs.
LAB_ID = os.environ.get("LANSPREAD_BENCH_LAB", "bench")
GAME = "openarena"
MIB = 1 << 20
CHUNK_BYTES = 4 * MIB  # the manifest's chunk size (lanspread_proto::wire::CHUNK_SIZE)
TOTAL_LIMIT_S = 1800
RUNS = 3
LAB_HOSTS = 9  # h1 seeds to h2..h9 in fanout8
HZ = os.sysconf("SC_CLK_TCK")

# ---------------------------------------------------------------- plumbing


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def lab(*args, check=True):
    return subprocess.run([LAB, *args, "--id", LAB_ID], check=check,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def anchor(host):
    return lab("pid", host).stdout.strip()


def in_host(host, argv):
    """argv run inside a lab host; nsenter execs it, so the pid is argv's."""
    return ["nsenter", "-t", anchor(host), "-n", "-m", "-u", "--", *argv]


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / HZ


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def peak_rss_kib(pid):
    """The process's peak resident set (VmHWM) so far."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise RuntimeError("no VmHWM")


def context_switches(pid):
    """Voluntary plus involuntary context switches of every live thread of
    pid so far (a thread that ended takes its count with it)."""
    total = 0
    for status in glob.glob(f"/proc/{pid}/task/*/status"):
        try:
            with open(status) as f:
                for line in f:
                    if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")):
                        total += int(line.split()[1])
        except FileNotFoundError:
            pass
    return total


def summary(samples, digits=2):
    return {"median": round(statistics.median(samples), digits),
            "min": round(min(samples), digits), "max": round(max(samples), digits),
            "runs": len(samples)}


def write_game(root, size, seed):
    """A game folder with one `size`-byte file of random data and a version."""
    game = os.path.join(root, GAME)
    os.makedirs(game, exist_ok=True)
    with open(os.path.join(game, "pak0.eti"), "wb") as f:
        left = size
        while left:
            n = min(left, 16 * MIB)
            f.write(os.urandom(n))
            left -= n
    with open(os.path.join(game, "version.ini"), "w") as f:
        f.write(f"version={seed}\n")
    return game


def link_game(source_root, target_root):
    """The same bytes for another seeder, as hard links (seeders only read)."""
    os.makedirs(os.path.join(target_root, GAME))
    for name in os.listdir(os.path.join(source_root, GAME)):
        os.link(os.path.join(source_root, GAME, name), os.path.join(target_root, GAME, name))


def ctl(sock, *args, timeout=60):
    """`lanspreadctl --json ARGS` against the daemon at `sock`: its JSON
    output (docs/ipc.md, "lanspreadctl --json shapes"). The bench speaks to
    daemons only through lanspreadctl, never through its own copy of the
    IPC protocol."""
    out = subprocess.run([os.path.join(BIN, "lanspreadctl"), "--socket", sock, "--json", *args],
                         stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, timeout=timeout)
    if out.returncode != 0:
        raise RuntimeError(f"lanspreadctl {' '.join(args)}: {out.stderr.strip()}")
    return json.loads(out.stdout)


class Events:
    """`lanspreadctl --json events`: the daemon's events, one per line, read
    on a thread so waits can time out."""

    def __init__(self, sock):
        self.proc = subprocess.Popen([os.path.join(BIN, "lanspreadctl"), "--socket", sock,
                                      "--json", "events"],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True)
        self.lines = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            self.lines.put((time.monotonic(), json.loads(line)["event"]))
        self.lines.put((time.monotonic(), None))

    def wait(self, pred, what, timeout):
        """The first event that satisfies `pred`, and when it arrived."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                at, event = self.lines.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                raise RuntimeError(f"timed out waiting for {what}")
            if event is None:
                raise RuntimeError(f"the event stream ended while waiting for {what}")
            if pred(event):
                return at, event

    def collect(self, last, timeout):
        """[(arrived, event)] of every event read so far and on, until one
        satisfies `last` or `timeout` s pass without it."""
        out = []
        deadline = time.monotonic() + timeout
        while True:
            try:
                at, event = self.lines.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                return out
            if event is None:
                return out
            out.append((at, event))
            if last(event):
                return out

    def close(self):
        self.proc.terminate()
        self.proc.wait()


class Daemon:
    """A release lanspreadd in a lab host, with its own game and state dirs."""

    def __init__(self, work, host, name, games):
        self.dir = tempfile.mkdtemp(prefix=f"{name}-", dir=work)
        self.games = games or os.path.join(self.dir, "games")
        os.makedirs(self.games, exist_ok=True)
        self.socket = os.path.join(self.dir, "sock")
        self.log = os.path.join(self.dir, "log")
        self.started = time.monotonic()
        env = dict(os.environ, RUST_LOG=os.environ.get("LANSPREAD_BENCH_LOG", "info"))
        with open(self.log, "wb") as err:
            self.proc = subprocess.Popen(
                in_host(host, [os.path.join(BIN, "lanspreadd"), "--name", name,
                               "--game-dir", self.games,
                               "--state-dir", os.path.join(self.dir, "state"),
                               "--socket", self.socket]),
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err, env=env)
        deadline = time.monotonic() + 20
        while not os.path.exists(self.socket):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"lanspreadd {name} did not start:\n{open(self.log).read()}")
            time.sleep(0.02)

    @property
    def pid(self):
        return self.proc.pid

    def ctl(self, *args, timeout=60):
        return ctl(self.socket, *args, timeout=timeout)

    def wait_peers(self, count, timeout=30):
        deadline = time.monotonic() + timeout
        while self.ctl("status")["peer_count"] < count:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.dir}: fewer than {count} peers")
            time.sleep(0.1)

    def wait_game_peers(self, count, timeout=30):
        """Until `count` connected peers hold the game (their library known)."""
        deadline = time.monotonic() + timeout
        while not any(g["id"] == GAME and g["peers"] >= count for g in self.ctl("games")):
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.dir}: fewer than {count} peers hold {GAME}")
            time.sleep(0.1)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


PROFILE = None  # --profile DIR: perf records of the first single and many runs
FLAME_GRAPHS = []  # SVGs written into RESULTS from those records


def perf_record(pids, name):
    """`perf record` of pids until the returned process gets SIGINT."""
    return subprocess.Popen(["perf", "record", "-F", "999", "-g", "-o",
                             os.path.join(PROFILE, f"{name}.data"), "-p",
                             ",".join(map(str, pids))],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def flame_graph(name):
    """RESULTS/flame-<name>.svg from PROFILE/<name>.data: perf script,
    folded by inferno-collapse-perf, drawn by inferno-flamegraph."""
    svg = f"flame-{name}.svg"
    os.makedirs(RESULTS, exist_ok=True)
    script = subprocess.Popen(["perf", "script", "-i", os.path.join(PROFILE, f"{name}.data")],
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    folded = subprocess.run(["inferno-collapse-perf"], stdin=script.stdout,
                            stdout=subprocess.PIPE, check=True).stdout
    script.wait()
    with open(os.path.join(RESULTS, svg), "wb") as out:
        subprocess.run(["inferno-flamegraph", "--title", f"lanspreadd, {name} (perf, 999 Hz)"],
                       input=folded, stdout=out, check=True)
    FLAME_GRAPHS.append(svg)
    log(f"  flame graph: {svg}")


# Downloaders that found too few seeders within 30 s and were restarted,
# and discovery rounds that missed: counted and reported, never hidden
# (issue 15 removed the cause seen before, resolutions to IPv6 link-local
# addresses only; docs/discovery.md).
DISCOVERY_MISSES = []


def leech_in(work, host, name, peers):
    """A fresh downloader in `host` that sees `peers` seeders of the game;
    restarted once (and the miss recorded) if discovery falls short."""
    daemon = Daemon(work, host, name, None)
    try:
        daemon.wait_game_peers(peers)
        return daemon
    except RuntimeError as err:
        DISCOVERY_MISSES.append(f"{name} in {host}: {err}")
        log(f"  discovery miss ({err}); restarting {name}")
        daemon.stop()
    daemon = Daemon(work, host, name + "-again", None)
    daemon.wait_game_peers(peers)
    return daemon


def download(daemon, timeout=300, watch_pids=(), profile=None):
    """One whole download through lanspreadctl; returns (bytes, seconds, cpu
    per pid). Seconds are the daemon's own (`millis` of the finished event)."""
    daemon.ctl("get", GAME, timeout=120)  # hashing is not timed
    pids = [daemon.pid, *watch_pids]
    perf = [perf_record([pid], f"{profile}-{name}")
            for pid, name in zip(pids, ("downloader", "seeder"))] if profile and PROFILE else []
    cpu_before = {pid: cpu_seconds(pid) for pid in pids}
    try:
        end = daemon.ctl("download", GAME, timeout=timeout)["event"]
    finally:
        cpu = {pid: cpu_seconds(pid) - cpu_before[pid] for pid in pids}
        for p in perf:
            p.send_signal(signal.SIGINT)
            p.wait()
        for name in ("downloader", "seeder")[:len(perf)]:
            flame_graph(f"{profile}-{name}")
    if end["type"] != "DownloadGameFilesFinished":
        raise RuntimeError(f"download failed: {end}")
    return end["bytes"], end["millis"] / 1000, cpu


def same_file(a, b):
    return filecmp.cmp(a, b, shallow=False)


class LinkSampler:
    """Bytes each lab host sent and received, read on the bridge side
    every `period` seconds: samples are (t, {host: (sent, received)})."""

    def __init__(self, hosts, period=0.2):
        self.hosts, self.period = hosts, period
        self.samples = []
        self.started = None
        self.stop_flag = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _read(self):
        counters = link_counters()
        return {h: counters[f"v{h}"] for h in self.hosts}

    def _run(self):
        start = self.started = time.monotonic()
        while not self.stop_flag.is_set():
            self.samples.append((time.monotonic() - start, self._read()))
            time.sleep(self.period)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop_flag.set()
        self.thread.join()

    def series(self):
        """Per host: [(t, Mbit/s it sent over the previous interval)]."""
        out = {h: [] for h in self.hosts}
        for (t0, a), (t1, b) in zip(self.samples, self.samples[1:]):
            for h in self.hosts:
                bits = (b[h][0] - a[h][0]) * 8
                out[h].append((round(t1, 2), round(bits / (t1 - t0) / 1e6, 1)))
        return out


# ---------------------------------------------------------------- scenarios


CEILING_PORT = 7443


def scenario_ceiling(work):
    """The bare transport's ceiling: 1 GiB from memory in h1 to a file in h2
    over s2n-quic with the daemon's transport settings and as many
    connections as a download uses, fdatasync'd (examples/quic_ceiling.rs)."""
    size = 1024 * MIB
    exe = os.path.join(BIN, "examples", "quic_ceiling")
    server = subprocess.Popen(in_host("h1", [exe, "serve", f"10.77.0.1:{CEILING_PORT}"]),
                              stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    rates, cpu_sender, cpu_receiver = [], [], []
    try:
        time.sleep(0.5)
        for run in range(RUNS):
            out = os.path.join(work, "ceiling.out")
            sender_before = cpu_seconds(server.pid)
            children_before = resource.getrusage(resource.RUSAGE_CHILDREN)
            got = subprocess.run(in_host("h2", [exe, "fetch", f"10.77.0.1:{CEILING_PORT}",
                                                str(size), out]),
                                 check=True, capture_output=True, text=True, timeout=120)
            children = resource.getrusage(resource.RUSAGE_CHILDREN)
            result = json.loads(got.stdout)
            gib = result["bytes"] / (1 << 30)
            rates.append(result["bytes"] / MIB / result["seconds"])
            cpu_sender.append((cpu_seconds(server.pid) - sender_before) / gib)
            cpu_receiver.append((children.ru_utime + children.ru_stime
                                 - children_before.ru_utime - children_before.ru_stime) / gib)
            log(f"  bare transport run {run + 1}: {rates[-1]:.0f} MiB/s")
            os.unlink(out)
    finally:
        server.terminate()
        server.wait(10)
    return {"game_mib": size // MIB, "ceiling_mib_per_s": summary(rates, 1),
            "ceiling_cpu_s_per_gib_sender": summary(cpu_sender),
            "ceiling_cpu_s_per_gib_receiver": summary(cpu_receiver)}


JUMBO_MTU = 9000


def scenario_jumbo(work):
    """The single-seeder scenario with jumbo frames (MTU 9000 on h1 and h2's
    links): lanspread probes the path MTU up to 9000, TCP uses it too."""
    for host in ("h1", "h2"):
        lab("mtu", host, str(JUMBO_MTU))
    run_dir = os.path.join(work, "jumbo-run")
    os.makedirs(run_dir, exist_ok=True)
    try:
        out = scenario_single(run_dir)
    finally:
        for host in ("h1", "h2"):
            lab("mtu", host, "1500", check=False)
    out["mtu"] = JUMBO_MTU
    return out


def scenario_single(work):
    """1 GiB from one seeder (h1) to h2, unshaped: lanspread vs nginx + curl."""
    size = 1024 * MIB
    seed_games = os.path.join(work, "single-seed")
    write_game(seed_games, size, "single")
    source = os.path.join(seed_games, GAME, "pak0.eti")
    seeder = Daemon(work, "h1", "seed", seed_games)
    ours, ours_cpu_seed, ours_cpu_leech, leech_peak = [], [], [], []
    switches_seed, switches_leech = [], []
    for run in range(RUNS):
        leech = leech_in(work, "h2", f"leech{run}", 1)
        switched = {pid: context_switches(pid) for pid in (leech.pid, seeder.pid)}
        got, secs, cpu = download(leech, watch_pids=[seeder.pid],
                                  profile="single" if run == 0 else None)
        switched = {pid: context_switches(pid) - n for pid, n in switched.items()}
        leech_peak.append(peak_rss_kib(leech.pid) / 1024)
        leech.stop()
        if not same_file(source, os.path.join(leech.games, GAME, "pak0.eti")):
            raise RuntimeError("lanspread: downloaded bytes differ")
        gib = got / (1 << 30)
        ours.append(got / MIB / secs)
        ours_cpu_seed.append(cpu[seeder.pid] / gib)
        ours_cpu_leech.append(cpu[leech.pid] / gib)
        switches_seed.append(switched[seeder.pid] / gib / 1000)
        switches_leech.append(switched[leech.pid] / gib / 1000)
        log(f"  lanspread run {run + 1}: {ours[-1]:.0f} MiB/s")
        shutil.rmtree(leech.dir)
    seeder_peak = peak_rss_kib(seeder.pid) / 1024
    seeder.stop()

    # The baseline: the same file over HTTPS (TLS 1.3 only, the same
    # certificate and key as the peer transport) between the same hosts.
    nginx_dir = os.path.join(work, "nginx")
    os.makedirs(nginx_dir)
    conf = os.path.join(nginx_dir, "nginx.conf")
    with open(conf, "w") as f:
        f.write(f"""daemon off;
master_process off;
worker_processes 1;
pid {nginx_dir}/nginx.pid;
error_log {nginx_dir}/error.log info;
events {{ worker_connections 64; }}
http {{
    access_log off;
    client_body_temp_path {nginx_dir}/body;
    proxy_temp_path {nginx_dir}/proxy;
    fastcgi_temp_path {nginx_dir}/fastcgi;
    uwsgi_temp_path {nginx_dir}/uwsgi;
    scgi_temp_path {nginx_dir}/scgi;
    server {{
        listen 10.77.0.1:8443 ssl;
        ssl_certificate {ROOT}/certs/cert.pem;
        ssl_certificate_key {ROOT}/certs/key.pem;
        ssl_protocols TLSv1.3;
        root {seed_games};
    }}
}}
""")
    with open(os.path.join(nginx_dir, "stderr"), "wb") as err:
        nginx = subprocess.Popen(in_host("h1", ["nginx", "-e", f"{nginx_dir}/error.log",
                                                "-c", conf]),
                                 stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err)
    url = f"https://10.77.0.1:8443/{GAME}/pak0.eti"
    curl = ["curl", "-sS", "--fail", "--insecure", "--tlsv1.3", "--tls-max", "1.3",
            "--max-time", "120"]
    deadline = time.monotonic() + 10
    while subprocess.run(in_host("h2", curl + ["-o", "/dev/null", "-r", "0-0", url]),
                         stderr=subprocess.DEVNULL).returncode != 0:
        if nginx.poll() is not None or time.monotonic() > deadline:
            nginx.kill()
            raise RuntimeError("nginx did not serve: " + open(f"{nginx_dir}/error.log").read()
                               + open(f"{nginx_dir}/stderr").read())
        time.sleep(0.1)
    theirs, theirs_cpu_seed, theirs_cpu_leech = [], [], []
    try:
        for run in range(RUNS):
            out = os.path.join(work, "curl.out")
            nginx_before = cpu_seconds(nginx.pid)
            children_before = resource.getrusage(resource.RUSAGE_CHILDREN)
            started = time.monotonic()
            subprocess.run(in_host("h2", curl + ["-o", out, url]), check=True)
            # lanspread's time includes making the chunks durable; so does this.
            fd = os.open(out, os.O_RDONLY)
            os.fdatasync(fd)
            os.close(fd)
            secs = time.monotonic() - started
            children = resource.getrusage(resource.RUSAGE_CHILDREN)
            if not same_file(source, out):
                raise RuntimeError("https: downloaded bytes differ")
            gib = size / (1 << 30)
            theirs.append(size / MIB / secs)
            theirs_cpu_seed.append((cpu_seconds(nginx.pid) - nginx_before) / gib)
            theirs_cpu_leech.append((children.ru_utime + children.ru_stime
                                     - children_before.ru_utime - children_before.ru_stime) / gib)
            log(f"  nginx+curl run {run + 1}: {theirs[-1]:.0f} MiB/s")
            os.unlink(out)
    finally:
        nginx.send_signal(signal.SIGQUIT)
        try:
            nginx.wait(10)
        except subprocess.TimeoutExpired:
            nginx.kill()
            nginx.wait()
    shutil.rmtree(seed_games)
    return {
        "game_mib": size // MIB,
        "lanspread_mib_per_s": summary(ours, 1),
        "https_mib_per_s": summary(theirs, 1),
        "lanspread_over_https": round(statistics.median(ours) / statistics.median(theirs), 2),
        "lanspread_cpu_s_per_gib_seeder": summary(ours_cpu_seed),
        "lanspread_cpu_s_per_gib_downloader": summary(ours_cpu_leech),
        "lanspread_kswitches_per_gib_seeder": summary(switches_seed, 1),
        "lanspread_kswitches_per_gib_downloader": summary(switches_leech, 1),
        "https_cpu_s_per_gib_nginx": summary(theirs_cpu_seed),
        "https_cpu_s_per_gib_curl": summary(theirs_cpu_leech),
        # Peak RSS: each downloader over its download; the seeder over its
        # whole life (start, preparing the manifest, every run).
        "lanspread_peak_rss_mib_downloader": summary(leech_peak, 1),
        "lanspread_peak_rss_mib_seeder": round(seeder_peak, 1),
    }


MULTI_RATES = {"h1": 400, "h2": 400, "h3": 100}  # Mbit/s each seeder may send


def scenario_multi(work):
    """Three seeders on shaped links, one downloader (h4): achieved ÷ sum."""
    size = 1024 * MIB
    base = os.path.join(work, "multi-seed")
    write_game(base, size, "multi")
    seeders = []
    for host, rate in MULTI_RATES.items():
        lab("shape", host, f"{rate}mbit")
        games = os.path.join(work, f"multi-{host}")
        link_game(base, games)
        seeders.append(Daemon(work, host, f"seed-{host}", games))
    link_sum = sum(MULTI_RATES.values())
    ratios, rates, shares, series = [], [], [], []
    try:
        for run in range(RUNS):
            leech = leech_in(work, "h4", f"multi-leech{run}", len(seeders))
            with LinkSampler(list(MULTI_RATES)) as sampler:
                got, secs, _ = download(leech)
            leech.stop()
            if not same_file(os.path.join(base, GAME, "pak0.eti"),
                             os.path.join(leech.games, GAME, "pak0.eti")):
                raise RuntimeError("multi: downloaded bytes differ")
            mbit = got * 8 / secs / 1e6
            rates.append(mbit)
            ratios.append(mbit / link_sum)
            first, last = sampler.samples[0][1], sampler.samples[-1][1]
            sent = {h: last[h][0] - first[h][0] for h in MULTI_RATES}
            shares.append({h: round(sent[h] / sum(sent.values()), 3) for h in MULTI_RATES})
            series.append(sampler.series())
            log(f"  run {run + 1}: {mbit:.0f} Mbit/s of {link_sum} ({ratios[-1]:.2f}); shares {shares[-1]}")
            shutil.rmtree(leech.dir)
    finally:
        for seeder in seeders:
            seeder.stop()
        for host in MULTI_RATES:
            lab("unshape", host)
    median_run = sorted(range(RUNS), key=lambda i: ratios[i])[RUNS // 2]
    shutil.rmtree(base)
    return {
        "game_mib": size // MIB,
        "link_mbit": MULTI_RATES,
        "achieved_mbit": summary(rates, 0),
        "achieved_over_sum": summary(ratios),
        "bytes_share_median_run": shares[median_run],
        "link_share": {h: round(r / link_sum, 3) for h, r in MULTI_RATES.items()},
        "series_median_run": series[median_run],
    }


# Fan-out: one seeder (h1), N downloaders, every lab link shaped in both
# directions (lab.sh shape2). lanspread's figures and BitTorrent's (aria2c
# with an opentracker tracker) come from separate scenarios, so either can
# run alone: fanout / fanout-bt (1 → 4) and fanout8 / fanout8-bt (1 → 8).
SWARMS = {
    "fanout": {"rate": 400, "hosts": [f"h{i}" for i in range(2, 6)], "mib": 128, "runs": 5},
    "fanout8": {"rate": 100, "hosts": [f"h{i}" for i in range(2, 10)], "mib": 128, "runs": 2},
}
SEEDER = "h1"


def link_counters():
    """Bridge-side byte counters of every lab veth: {"vh1": (rx, tx)}. On the
    bridge side, rx is what the host sent and tx what it received."""
    out = subprocess.run(["ip", "-n", f"lsl-{LAB_ID}-br", "-s", "-j", "link", "show"],
                         check=True, stdout=subprocess.PIPE, text=True).stdout
    return {link["ifname"]: (link["stats64"]["rx"]["bytes"], link["stats64"]["tx"]["bytes"])
            for link in json.loads(out)}


def sent_by(host):
    """Bytes `host` has sent on its lab link (headers included)."""
    return link_counters()[f"v{host}"][0]


def kumar_ross(size, seeder_mbit, upload_mbit, download_mbit):
    """The least time (s) in which every downloader can hold the whole file:
    max(F/u_s, F/d_min, N·F/(u_s + Σu_i)) (Kumar and Ross, 2006). F in
    bytes, rates in Mbit/s (of payload: link headers are not counted)."""
    bits = size * 8
    return max(bits / (seeder_mbit * 1e6), bits / (min(download_mbit) * 1e6),
               len(upload_mbit) * bits / ((seeder_mbit + sum(upload_mbit)) * 1e6))


class Shaped:
    """Every host of a swarm scenario shaped to `rate` Mbit/s both ways
    (lab.sh shape2), unshaped on exit."""

    def __init__(self, hosts, rate):
        self.hosts, self.rate = hosts, rate

    def __enter__(self):
        for host in self.hosts:
            lab("shape2", host, f"{self.rate}mbit")
        return self

    def __exit__(self, *exc):
        for host in self.hosts:
            lab("unshape", host, check=False)


def swarm_figures(cfg, alone, together, sent, sent_alone):
    """The figures common to lanspread's and BitTorrent's fan-out."""
    n, rate, size = len(cfg["hosts"]), cfg["rate"], cfg["mib"] * MIB
    bound = kumar_ross(size, rate, [rate] * n, [rate] * n)
    return {
        "game_mib": cfg["mib"],
        "downloaders": n,
        "link_mbit_both_ways": rate,
        "one_alone_s": summary(alone),
        "all_done_s": summary(together),
        "all_over_one": summary([t / a for t, a in zip(together, alone)]),
        "seeder_sent_over_size": summary(sent),
        "seeder_sent_over_size_alone": summary(sent_alone),
        "kumar_ross_bound_s": round(bound, 2),
        "bound_over_one_alone": summary([bound / a for a in alone]),
    }


def progress_point(started, at, event):
    """(t, bytes done, from seeders, from downloaders) of a progress or
    finished event; the last two are None from a daemon without them."""
    done = event.get("bytes_done", event.get("bytes"))
    return (round(at - started, 2), done, event.get("bytes_from_seeders"),
            event.get("bytes_from_downloaders"))


def swarm_lanspread(work, name):
    """lanspread: one alone vs all downloaders together, seeder bytes from h1's veth."""
    cfg = SWARMS[name]
    size, hosts = cfg["mib"] * MIB, cfg["hosts"]
    seed_games = os.path.join(work, f"{name}-seed")
    write_game(seed_games, size, name)
    source = os.path.join(seed_games, GAME, "pak0.eti")
    alone, together, sent, sent_alone, runs, alone_idle = [], [], [], [], [], []
    with Shaped([SEEDER, *hosts], cfg["rate"]):
        seeder = Daemon(work, SEEDER, f"{name}-seed", seed_games)
        try:
            for run in range(cfg["runs"]):
                leech = leech_in(work, "h2", f"{name}-alone{run}", 1)
                with LinkSampler([SEEDER, "h2"], period=0.1) as links:
                    before = sent_by(SEEDER)
                    started = time.monotonic()
                    download(leech)
                    alone.append(time.monotonic() - started)
                idle = downlink_idle(links, started, {"h2": alone[-1]}, cfg["rate"],
                                     CHUNK_BYTES)["h2"]
                alone_idle.append(sum(idle.values()))
                sent_alone.append((sent_by(SEEDER) - before) / size)
                leech.stop()
                if not same_file(source, os.path.join(leech.games, GAME, "pak0.eti")):
                    raise RuntimeError(f"{name}: downloaded bytes differ")
                shutil.rmtree(leech.dir)
                runs.append(swarm_lanspread_together(work, name, run, source, size))
                together.append(runs[-1]["all_done_s"])
                sent.append(runs[-1]["seeder_sent_over_size"])
                log(f"  lanspread run {run + 1}: alone {alone[-1]:.1f} s, {len(hosts)} together "
                    f"{together[-1]:.1f} s ({together[-1] / alone[-1]:.2f}); seeder sent "
                    f"{sent[-1]:.2f} × the game; from downloaders "
                    f"{runs[-1]['from_downloaders_share']}")
        finally:
            seeder.stop()
            keep_logs(seeder)
    shutil.rmtree(seed_games)
    out = swarm_figures(cfg, alone, together, sent, sent_alone)
    median_run = sorted(range(cfg["runs"]), key=lambda i: together[i])[cfg["runs"] // 2]
    shares = [r["from_downloaders_share"] for r in runs if r["from_downloaders_share"] is not None]
    out["from_downloaders_share"] = summary(shares) if shares else None
    out["done_s_median_run"] = runs[median_run]["done_s"]
    out["alone_downlink_idle_s"] = summary(alone_idle)
    for phase in ("start", "middle", "end"):
        # Per run, the mean over the downloaders.
        out[f"downlink_idle_{phase}_s"] = summary(
            [statistics.mean(h[phase] for h in r["downlink_idle_s"].values()) for r in runs])
    out["progress_median_run"] = runs[median_run]["progress"]
    return out


def downlink_idle(links, started, done, rate_mbit, first_round_bytes):
    """Seconds each downloader's downlink sat idle during a swarm run, in
    three phases: "start" until the seeder had sent `first_round_bytes`
    (one chunk per downloader: until then there is little to share),
    "middle" while the seeder still sent, "end" after it stopped, each up
    to the host's own done time. `links` is a LinkSampler of the seeder and
    the downloaders, `started` the run's start (time.monotonic()). Idle is
    1 - received ÷ link rate (headers count as received, so an idle figure
    is a slight underestimate).
    Summed over the phases, less what one alone's downlink sat idle
    (start-up, the last round trips), it is about how much later than one
    alone a downloader finished: what keeps the ratio above 1."""
    # Sample times from the run's start.
    samples = [(t + links.started - started, counters) for t, counters in links.samples]
    seeder_at = [(t, counters[SEEDER][0]) for t, counters in samples]
    base = seeder_at[0][1]
    first_round = next((t for t, b in seeder_at if b - base >= first_round_bytes), None)
    active = [t1 for (t0, a), (t1, b) in zip(seeder_at, seeder_at[1:])
              if (b - a) * 8 / (t1 - t0) > 0.05 * rate_mbit * 1e6]
    last_sent = active[-1] if active else None
    out = {}
    for host, finished in done.items():
        idle = {"start": 0.0, "middle": 0.0, "end": 0.0}
        received = [(t, counters[host][1]) for t, counters in samples]
        for (t0, a), (t1, b) in zip(received, received[1:]):
            # The part of the interval inside the run, up to done.
            lo, hi = max(t0, 0.0), min(t1, finished)
            if hi <= lo:
                continue
            used = min(1.0, (b - a) * 8 / (t1 - t0) / (rate_mbit * 1e6))
            mid = (lo + hi) / 2
            phase = ("start" if first_round is None or mid < first_round else
                     "middle" if last_sent is None or mid < last_sent else "end")
            idle[phase] += (1 - used) * (hi - lo)
        out[host] = {k: round(v, 3) for k, v in idle.items()}
    return out


def keep_logs(daemon):
    """Copies a daemon's log to $LANSPREAD_BENCH_LOGS (when set) before
    its directory is removed: for a closer look at a swarm run."""
    logs = os.environ.get("LANSPREAD_BENCH_LOGS")
    if logs:
        os.makedirs(logs, exist_ok=True)
        shutil.copy(daemon.log, os.path.join(logs, os.path.basename(daemon.dir) + ".log"))


def swarm_lanspread_together(work, name, run, source, size):
    """One round of every downloader of the scenario starting at once; each
    daemon's progress events (with bytes by source kind) are recorded."""
    hosts = SWARMS[name]["hosts"]
    leeches = {h: leech_in(work, h, f"{name}{run}-{h}", 1) for h in hosts}
    streams = {h: Events(leech.socket) for h, leech in leeches.items()}
    time.sleep(0.5)  # the event subscriptions are in place
    done = {}

    def one(host, leech):
        try:
            download(leech)
            done[host] = time.monotonic() - started
        except Exception as err:  # reported below
            done[host] = err

    links = LinkSampler([SEEDER, *hosts], period=0.1)
    try:
        with links:
            before = sent_by(SEEDER)
            started = time.monotonic()
            threads = [threading.Thread(target=one, args=item) for item in leeches.items()]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            seeder_sent = sent_by(SEEDER) - before
        errors = [v for v in done.values() if isinstance(v, Exception)]
        if errors:
            raise RuntimeError(f"{name}: a download failed: {errors[0]}")
        # The finished event may reach the event stream just after
        # `lanspreadctl download` returned.
        events = {h: s.collect(lambda e: e["type"] == "DownloadGameFilesFinished"
                               and e.get("id") == GAME, 3) for h, s in streams.items()}
    finally:
        for stream in streams.values():
            stream.close()
        for leech in leeches.values():
            leech.stop()
    progress, finished = {}, {}
    for host in hosts:
        progress[host] = []
        for at, event in events[host]:
            if event.get("id") != GAME:
                continue
            if event["type"] == "DownloadGameFilesProgress":
                progress[host].append(progress_point(started, at, event))
            elif event["type"] == "DownloadGameFilesFinished":
                progress[host].append(progress_point(started, at, event))
                finished[host] = event
    for host, leech in leeches.items():
        if not same_file(source, os.path.join(leech.games, GAME, "pak0.eti")):
            raise RuntimeError(f"{name}: downloaded bytes differ in {host}")
        keep_logs(leech)
        shutil.rmtree(leech.dir)
    from_seeders = [e.get("bytes_from_seeders") for e in finished.values()]
    from_downloaders = [e.get("bytes_from_downloaders") for e in finished.values()]
    share = None
    if len(finished) == len(hosts) and None not in from_seeders + from_downloaders:
        total = sum(from_seeders) + sum(from_downloaders)
        share = round(sum(from_downloaders) / total, 3) if total else None
    idle = downlink_idle(links, started, done, SWARMS[name]["rate"], len(hosts) * CHUNK_BYTES)
    return {"all_done_s": max(done.values()), "seeder_sent_over_size": seeder_sent / size,
            "done_s": {h: round(done[h], 2) for h in hosts},
            "downlink_idle_s": idle,
            "from_downloaders_share": share, "progress": progress}


def scenario_fanout(work):
    """1 → 4, every link 400 Mbit/s both ways, 128 MiB: lanspread, one alone vs four together."""
    out = swarm_lanspread(work, "fanout")
    # The names of the runs before both-way shaping, for the comparison.
    out["four_together_s"] = out["all_done_s"]
    out["four_over_one"] = out["all_over_one"]
    return out


def scenario_fanout8(work):
    """1 → 8, every link 100 Mbit/s both ways, 128 MiB: lanspread, one alone vs eight together."""
    return swarm_lanspread(work, "fanout8")


# ------------------------------------------------- the BitTorrent baseline

BT_TRACKER_PORT = 6969
BT_ANNOUNCE = f"http://10.77.0.1:{BT_TRACKER_PORT}/announce"


def bdecode(data, i=0):
    """(value, end) of the bencoded value at data[i]; a dict maps each key to
    (value, start, end), so a slice of the original bytes can be hashed."""
    c = data[i:i + 1]
    if c == b"i":
        end = data.index(b"e", i)
        return int(data[i + 1:end]), end + 1
    if c in (b"l", b"d"):
        i += 1
        items = [] if c == b"l" else {}
        while data[i:i + 1] != b"e":
            if c == b"l":
                value, i = bdecode(data, i)
                items.append(value)
            else:
                key, i = bdecode(data, i)
                start = i
                value, i = bdecode(data, i)
                items[key] = (value, start, i)
        return items, i + 1
    colon = data.index(b":", i)
    n = int(data[i:colon])
    return data[colon + 1:colon + 1 + n], colon + 1 + n


def info_hash(torrent):
    with open(torrent, "rb") as f:
        data = f.read()
    top, _ = bdecode(data)
    _, start, end = top[b"info"]
    return hashlib.sha1(data[start:end]).digest()


def stop_process(proc, timeout=10):
    """SIGTERM, then SIGKILL: a process this bench started, by its pid."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def tracker_get(query, host="h2"):
    """A tracker request from a lab host (curl in `host`); the raw answer."""
    out = subprocess.run(in_host(host, ["curl", "-sS", "--max-time", "3",
                                        f"http://10.77.0.1:{BT_TRACKER_PORT}/{query}"]),
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    return out.stdout if out.returncode == 0 else None


class BtSwarm:
    """An opentracker (whitelisting only the torrent's info hash) and an
    aria2c seeder in h1, fresh for each round so no round sees the peers of
    the one before; leechers are added with `leech`."""

    def __init__(self, work, torrent, seed_dir, tag):
        self.work, self.torrent, self.tag = work, torrent, tag
        self.hash = info_hash(torrent)
        quoted = "".join(f"%{b:02x}" for b in self.hash)
        root = os.path.join(work, f"{tag}-tracker")
        os.makedirs(root, exist_ok=True)
        os.chmod(root, 0o755)
        with open(os.path.join(root, "whitelist.txt"), "w") as f:
            f.write(self.hash.hex() + "\n")
        os.chmod(os.path.join(root, "whitelist.txt"), 0o644)
        self.procs = []
        try:
            self._start(root, quoted, seed_dir)
        except BaseException:
            self.close()
            raise

    def _start(self, root, quoted, seed_dir):
        # opentracker chroots to -d and drops to nobody: the whitelist path
        # is inside the chroot.
        self.tracker = self._spawn(SEEDER, "tracker", [
            "opentracker", "-i", "10.77.0.1", "-p", str(BT_TRACKER_PORT),
            "-P", str(BT_TRACKER_PORT), "-d", root, "-u", "nobody", "-w", "/whitelist.txt"])
        # A "stopped" announce registers nobody and is refused until the
        # whitelist is loaded.
        probe = (f"announce?info_hash={quoted}&peer_id=lanspreadbenchprobe0&port=1"
                 "&uploaded=0&downloaded=0&left=0&event=stopped")
        self._until(lambda: (tracker_get(probe) or b"failure").find(b"failure") < 0,
                    "opentracker to accept the torrent", self.tracker)
        self.seeder = self._spawn(SEEDER, "seeder", self._aria2(seed_dir) + [
            "--bt-seed-unverified=true", self.torrent])
        scrape = f"scrape?info_hash={quoted}"
        self._until(lambda: b"8:completei1e" in (tracker_get(scrape) or b""),
                    "the aria2c seeder to announce", self.seeder)

    def _spawn(self, host, name, argv, env=None):
        log_path = os.path.join(self.work, f"{self.tag}-{name}.log")
        with open(log_path, "ab") as out:
            proc = subprocess.Popen(in_host(host, argv), stdin=subprocess.DEVNULL, stdout=out,
                                    stderr=subprocess.STDOUT, env=env)
        proc.log_path = log_path
        self.procs.append(proc)
        return proc

    def _until(self, pred, what, proc, timeout=20):
        deadline = time.monotonic() + timeout
        while not pred():
            if proc.poll() is not None or time.monotonic() > deadline:
                with open(proc.log_path) as f:
                    tail = f.read()[-2000:]
                raise RuntimeError(f"bt: timed out waiting for {what}:\n{tail}")
            time.sleep(0.1)

    @staticmethod
    def _aria2(directory):
        return ["aria2c", f"--dir={directory}", "--enable-dht=false", "--enable-dht6=false",
                "--bt-enable-lpd=false", "--disable-ipv6=true", "--seed-ratio=0",
                "--file-allocation=none", "--summary-interval=0", "--console-log-level=warn",
                "--listen-port=6881", "--auto-save-interval=0"]

    def leech(self, host, directory, hook, done_file):
        """An aria2c in `host` downloading into `directory`; it stays on as a
        seeder, and the hook writes the time it had the whole file (synced)."""
        os.makedirs(directory)
        env = dict(os.environ, LANSPREAD_BENCH_DONE=done_file)
        return self._spawn(host, f"leech-{host}", self._aria2(directory) + [
            f"--on-bt-download-complete={hook}", self.torrent], env=env)

    def close(self):
        for proc in reversed(self.procs):
            stop_process(proc)


BT_HOOK = """#!/bin/sh
# aria2c --on-bt-download-complete: $1 GID, $2 number of files, $3 the first
# file. lanspread's time includes making the file durable; so does this.
sync "$3"
date +%s.%N > "$LANSPREAD_BENCH_DONE.tmp"
mv "$LANSPREAD_BENCH_DONE.tmp" "$LANSPREAD_BENCH_DONE"
"""


def bt_round(work, name, torrent, seed_dir, source, hosts, size, tag, hook):
    """One round: fresh tracker and seeder, `hosts` start aria2c together.
    Returns (seconds until the last one had the file, seeder bytes sent ÷
    size, {host: seconds})."""
    swarm = BtSwarm(work, torrent, seed_dir, tag)
    try:
        dirs = {h: os.path.join(work, f"{tag}-{h}") for h in hosts}
        done_files = {h: os.path.join(work, f"{tag}-{h}.done") for h in hosts}
        before = sent_by(SEEDER)
        started = time.time()
        leeches = {h: swarm.leech(h, dirs[h], hook, done_files[h]) for h in hosts}
        deadline = time.monotonic() + 300
        while not all(os.path.exists(f) for f in done_files.values()):
            for host, proc in leeches.items():
                if proc.poll() is not None:
                    with open(proc.log_path) as f:
                        tail = f.read()[-2000:]
                    raise RuntimeError(f"{name}: aria2c in {host} exited ({proc.returncode}):\n{tail}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name}: aria2c downloads not done after 300 s")
            time.sleep(0.05)
        sent = sent_by(SEEDER) - before
    finally:
        swarm.close()
    done = {}
    for host in hosts:
        with open(done_files[host]) as f:
            done[host] = round(float(f.read()) - started, 2)
        if not same_file(source, os.path.join(dirs[host], "pak0.eti")):
            raise RuntimeError(f"{name}: aria2c's bytes differ in {host}")
        shutil.rmtree(dirs[host])
        os.unlink(done_files[host])
    return max(done.values()), sent / size, done


def swarm_bt(work, name):
    """The BitTorrent baseline of a swarm scenario: aria2c + opentracker,
    4 MiB pieces, the same shaping, game size and hosts."""
    cfg = SWARMS[name]
    size, hosts = cfg["mib"] * MIB, cfg["hosts"]
    seed_games = os.path.join(work, f"{name}-bt-seed")
    write_game(seed_games, size, name)
    seed_dir = os.path.join(seed_games, GAME)
    source = os.path.join(seed_dir, "pak0.eti")
    torrent = os.path.join(work, f"{name}.torrent")
    subprocess.run(["mktorrent", "-l", "22", "-a", BT_ANNOUNCE, "-o", torrent, source],
                   check=True, stdout=subprocess.DEVNULL)
    hook = os.path.join(work, "bt-done-hook.sh")
    with open(hook, "w") as f:
        f.write(BT_HOOK)
    os.chmod(hook, 0o755)
    alone, together, sent, sent_alone, done_runs = [], [], [], [], []
    with Shaped([SEEDER, *hosts], cfg["rate"]):
        for run in range(cfg["runs"]):
            secs, ratio, _ = bt_round(work, name, torrent, seed_dir, source, ["h2"], size,
                                      f"{name}-bt{run}-alone", hook)
            alone.append(secs)
            sent_alone.append(ratio)
            secs, ratio, done = bt_round(work, name, torrent, seed_dir, source, hosts, size,
                                         f"{name}-bt{run}-all", hook)
            together.append(secs)
            sent.append(ratio)
            done_runs.append(done)
            log(f"  aria2c run {run + 1}: alone {alone[-1]:.1f} s, {len(hosts)} together "
                f"{together[-1]:.1f} s ({together[-1] / alone[-1]:.2f}); seeder sent "
                f"{sent[-1]:.2f} × the game")
    shutil.rmtree(seed_games)
    out = swarm_figures(cfg, alone, together, sent, sent_alone)
    median_run = sorted(range(cfg["runs"]), key=lambda i: together[i])[cfg["runs"] // 2]
    out["done_s_median_run"] = done_runs[median_run]
    out["piece_kib"] = 4096
    return out


def scenario_fanout_bt(work):
    """1 → 4 as fanout, with BitTorrent: aria2c leechers, aria2c seeder, opentracker."""
    return swarm_bt(work, "fanout")


def scenario_fanout8_bt(work):
    """1 → 8 as fanout8, with BitTorrent: aria2c leechers, aria2c seeder, opentracker."""
    return swarm_bt(work, "fanout8")


DISCOVERY_ROUNDS = 20
DISCOVERY_MISS_S = 10


def scenario_discovery(work):
    """Daemon start on h2 → PeerConnected on h1, 20 back-to-back restarts."""
    games = os.path.join(work, "discovery-games")
    write_game(games, 1024, "discovery")
    observer = Daemon(work, "h1", "observer", games)
    watch = Events(observer.socket)
    samples = []
    misses = 0
    try:
        for run in range(DISCOVERY_ROUNDS):
            newcomer = Daemon(work, "h2", f"newcomer{run}", games)
            peer_id = newcomer.ctl("status")["peer_id"]
            try:
                at, _ = watch.wait(lambda e: e["type"] == "PeerConnected"
                                   and e["peer"]["peer_id"] == peer_id, "PeerConnected",
                                   DISCOVERY_MISS_S)
                samples.append(at - newcomer.started)
            except RuntimeError as err:
                misses += 1
                DISCOVERY_MISSES.append(f"discovery round {run}: {err}")
                log(f"  discovery miss in round {run}: {err}")
            newcomer.stop()
            shutil.rmtree(newcomer.dir)
    finally:
        watch.close()
        observer.stop()
    if len(samples) < 5:
        raise RuntimeError(f"discovery missed {misses} of {DISCOVERY_ROUNDS} newcomers")
    return {"start_to_peer_connected_s": summary(samples),
            "first_10_median_s": round(statistics.median(samples[:10]), 2),
            "rounds": DISCOVERY_ROUNDS, "misses": misses}


MESH_HOSTS = 12
MESH20_HOSTS = 20
MESH_IDLE_S = 60
# Seconds after the mesh is complete (plus 2) before idle CPU is measured.
MESH_SETTLE_S = 30


def scenario_mesh(_work):
    """12 lab hosts start a daemon each at once: time until all see all; idle CPU, RSS."""
    return mesh(MESH_HOSTS)


def scenario_mesh20(_work):
    """The same with 20 hosts: idle CPU with 19 peers (a LAN party's size)."""
    return mesh(MESH20_HOSTS)


def mesh(hosts):
    """`hosts` lab hosts start a daemon each at once: time until all see all;
    idle CPU, RSS."""
    global LAB_ID
    # Not "<LAB_ID>-…": `lab.sh down --id X` removes every lsl-X-* namespace.
    lab_id = f"{LAB_ID}mesh"
    work = tempfile.mkdtemp(prefix="mesh.", dir="/var/tmp")
    subprocess.run([LAB, "down", "--id", lab_id], stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    subprocess.run([LAB, "up", str(hosts), "--id", lab_id], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    main_lab, LAB_ID = LAB_ID, lab_id
    daemons = []
    try:
        started = time.monotonic()
        daemons = [Daemon(work, f"h{i}", f"mesh{i}", None) for i in range(1, hosts + 1)]
        # Event streams (lanspreadctl events), not polling: the figure is
        # when each daemon reported all its peers connected.
        streams = [Events(d.socket) for d in daemons]
        seen_all = [None] * len(daemons)
        try:
            for i, stream in enumerate(streams):
                left = max(0.01, started + 60 - time.monotonic())
                try:
                    at, _ = stream.wait(lambda e: e["type"] == "PeerCountChanged"
                                        and e["count"] == hosts - 1,
                                        "all peers connected", left)
                except RuntimeError:
                    if daemons[i].ctl("status")["peer_count"] < hosts - 1:
                        counts = [d.ctl("status")["peer_count"] for d in daemons]
                        raise RuntimeError(f"mesh incomplete after 60 s: peer counts {counts}")
                    at = time.monotonic()  # connected before the stream began
                seen_all[i] = at - started
        finally:
            for stream in streams:
                stream.close()
        # The first seconds of every new connection are setup, not idle
        # cost: s2n-quic probes the path MTU (up to 9000 bytes; on a 1500-
        # byte lab link a probe every second or so for ~15 s per
        # connection) and the libraries are fetched. Reported apart.
        time.sleep(2)
        settling = {d.pid: cpu_seconds(d.pid) for d in daemons}
        time.sleep(MESH_SETTLE_S)
        before = {d.pid: cpu_seconds(d.pid) for d in daemons}
        settle_cpu = [(before[d.pid] - settling[d.pid]) / MESH_SETTLE_S * 100 for d in daemons]
        time.sleep(MESH_IDLE_S)
        for d in daemons:
            if d.proc.poll() is not None:
                with open(d.log) as f:
                    tail = f.read()[-3000:]
                raise RuntimeError(f"{d.dir}: lanspreadd exited ({d.proc.returncode}):\n{tail}")
        cpu = [(cpu_seconds(d.pid) - before[d.pid]) / MESH_IDLE_S * 100 for d in daemons]
        rss = [rss_kib(d.pid) / 1024 for d in daemons]
    finally:
        for daemon in daemons:
            daemon.stop()
        LAB_ID = main_lab
        subprocess.run([LAB, "down", "--id", lab_id], stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
        shutil.rmtree(work, ignore_errors=True)
    return {
        "hosts": hosts,
        "all_see_all_s": round(max(seen_all), 2),
        "each_sees_all_s": summary(seen_all),
        "settling_cpu_percent_per_daemon": summary(settle_cpu, 3),
        "idle_cpu_percent_per_daemon": summary(cpu, 3),
        "idle_rss_mib_per_daemon": summary(rss, 1),
    }


def scenario_idle(work):
    """The observer (h1) with two peers: CPU and RSS over 60 s; IPC latency."""
    games = os.path.join(work, "idle-games")
    write_game(games, 1024, "idle")
    daemons = [Daemon(work, h, f"idle-{h}", games) for h in ("h1", "h2", "h3")]
    observer = daemons[0]
    try:
        observer.wait_peers(2)
        time.sleep(2)
        windows = []
        start = cpu_seconds(observer.pid)
        for _ in range(6):
            before = cpu_seconds(observer.pid)
            time.sleep(10)
            windows.append((cpu_seconds(observer.pid) - before) / 10 * 100)
        # One clock tick is 0.1 % of a 10 s window: the whole minute
        # resolves 0.017 %.
        whole_minute = (cpu_seconds(observer.pid) - start) / 60 * 100
        rss = rss_kib(observer.pid)
        p50, p99 = [], []
        for _ in range(RUNS):
            out = subprocess.run([os.path.join(BIN, "examples", "ipc_bench"), observer.socket,
                                  "10000"], check=True, stdout=subprocess.PIPE, text=True).stdout
            figures = json.loads(out)
            p50.append(figures["p50_us"])
            p99.append(figures["p99_us"])
        rss_after = rss_kib(observer.pid)
        shutdown = []
        for daemon in daemons:
            t0 = time.monotonic()
            daemon.stop()
            shutdown.append(time.monotonic() - t0)
    finally:
        for daemon in daemons:
            daemon.stop()
    return {
        "idle_cpu_percent_10s_windows": summary(windows),
        "idle_cpu_percent_60s": summary([whole_minute], 3),
        "sigterm_to_exit_s": summary(shutdown, 3),
        "idle_rss_mib": round(rss / 1024, 1),
        "rss_after_30000_ipc_requests_mib": round(rss_after / 1024, 1),
        "ipc_p50_us": summary(p50, 1),
        "ipc_p99_us": summary(p99, 1),
    }


MANY_FILES = int(os.environ.get("LANSPREAD_BENCH_MANY_FILES", "50000"))


def write_many_files(games, count):
    """`count` files of 1 to 64 KiB (distinct content) in folders of 500,
    plus version.ini, under games/GAME; returns the payload bytes."""
    game = os.path.join(games, GAME)
    block = os.urandom(128 * 1024)
    total = 0
    for i in range(count):
        folder = os.path.join(game, "data", f"{i // 500:04}")
        if i % 500 == 0:
            os.makedirs(folder)
        mixed = (i * 0x9E3779B97F4A7C15 % (1 << 64)) >> 32
        size = 1024 + mixed % (63 * 1024)
        start = (mixed // 7) % (len(block) - size)
        with open(os.path.join(folder, f"f{i:06}.dat"), "wb") as f:
            f.write(i.to_bytes(8, "little") + block[start + 8:start + size])
        total += size
    with open(os.path.join(game, "version.ini"), "w") as f:
        f.write("version=many\n")
    return total


def same_tree(a, b):
    """Every file of tree a is in tree b with the same bytes, and b has no
    other files."""
    def listing(root):
        out = set()
        for d, _dirs, files in os.walk(root):
            out.update(os.path.relpath(os.path.join(d, f), root) for f in files)
        return out
    names = listing(a)
    return names == listing(b) and all(
        filecmp.cmp(os.path.join(a, n), os.path.join(b, n), shallow=False) for n in names)


def scenario_many(work):
    """Many files (50 000) of 1–64 KiB, h1 → h2: lanspread vs rsync daemon → rsync -a + sync.

    Every run's copy is kept until the scenario ends: on an ext4 without a
    journal (the lab machine's), a file created within about a minute of
    deleting many others waits while the allocator reads and skips each
    recently freed inode (`recently_deleted`): 50 000 files took 1.1 s to
    create fresh and 13.7 s right after 50 000 were deleted. Deleting one
    run's copy before the next measured that, not the tools."""
    seed_games = os.path.join(work, "many-seed")
    total = write_many_files(seed_games, MANY_FILES)
    source = os.path.join(seed_games, GAME)
    mib = total / MIB
    seeder = Daemon(work, "h1", "many-seed", seed_games)
    ours, copies = [], []
    try:
        for run in range(RUNS):
            leech = leech_in(work, "h2", f"many-leech{run}", 1)
            _, secs, _ = download(leech, timeout=600, watch_pids=[seeder.pid],
                                  profile="many" if run == 0 else None)
            leech.stop()
            if not same_tree(source, os.path.join(leech.games, GAME)):
                raise RuntimeError("many: downloaded files differ")
            ours.append(secs)
            log(f"  lanspread run {run + 1}: {secs:.2f} s, {MANY_FILES / secs:.0f} files/s, "
                f"{mib / secs:.0f} MiB/s")
            copies.append(leech.dir)
    finally:
        seeder.stop()

    # The baseline: an rsync daemon on the seeder's host, `rsync -a` and one
    # `sync` on the downloader's (lanspread's time includes making every
    # file durable; so does this).
    rsyncd, url = rsync_daemon(work, "many", source)
    theirs = []
    try:
        for run in range(RUNS):
            dest = os.path.join(work, f"rsync-dest{run}")
            started = time.monotonic()
            subprocess.run(in_host("h2", ["rsync", "-a", url, dest + "/"]), check=True)
            subprocess.run(["sync"], check=True)
            secs = time.monotonic() - started
            if not same_tree(source, dest):
                raise RuntimeError("rsync: copied files differ")
            theirs.append(secs)
            log(f"  rsync run {run + 1}: {secs:.2f} s, {MANY_FILES / secs:.0f} files/s, "
                f"{mib / secs:.0f} MiB/s")
            copies.append(dest)
    finally:
        rsyncd.terminate()
        rsyncd.wait()
    for copy in copies:
        shutil.rmtree(copy)
    shutil.rmtree(seed_games)
    per_s = lambda samples, amount: summary([amount / s for s in samples], 1)
    return {
        "files": MANY_FILES,
        "game_mib": round(mib),
        "lanspread_mib_per_s": per_s(ours, mib),
        "lanspread_files_per_s": per_s(ours, MANY_FILES),
        "rsync_mib_per_s": per_s(theirs, mib),
        "rsync_files_per_s": per_s(theirs, MANY_FILES),
        "lanspread_over_rsync": round(statistics.median(theirs) / statistics.median(ours), 2),
    }


DELTA_FILES = 44  # 16 MiB each, besides the 256 MiB archive and the 64 MiB file: 1 GiB


def write_random(path, size):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        left = size
        while left:
            n = min(left, 16 * MIB)
            f.write(os.urandom(n))
            left -= n


def delta_versions(work):
    """Version 1 of a 1 GiB game (archive.eti 256 MiB, big.eti 64 MiB, 44
    files of 16 MiB) and the two version 2 of issue 19's update scenarios,
    each a games folder (unchanged files hard-linked: seeders only read).
    Returns (v1, {name: (v2, changed bytes)})."""
    v1 = os.path.join(work, "delta-v1")
    g1 = os.path.join(v1, GAME)
    write_random(os.path.join(g1, "archive.eti"), 256 * MIB)
    write_random(os.path.join(g1, "big.eti"), 64 * MIB)
    names = [f"data/{i:02}.eti" for i in range(DELTA_FILES)]
    for name in names:
        write_random(os.path.join(g1, name), 16 * MIB)
    versions = {}

    def version(tag, changed_files):
        games = os.path.join(work, f"delta-{tag}")
        game = os.path.join(games, GAME)
        for d, _dirs, files in os.walk(g1):
            for name in files:
                rel = os.path.relpath(os.path.join(d, name), g1)
                if rel in changed_files or name == "version.ini":
                    continue
                os.makedirs(os.path.join(game, os.path.dirname(rel)), exist_ok=True)
                os.link(os.path.join(g1, rel), os.path.join(game, rel))
        with open(os.path.join(game, "version.ini"), "w") as f:
            f.write(f"version=2-{tag}\n")
        return games, game

    def rewrite(src, dst, edit):
        with open(src, "rb") as f:
            data = bytearray(f.read())
        data = edit(data)
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        with open(dst, "wb") as f:
            f.write(data)

    # (a) 5 % of the files changed in place (2 of 46: 1 MiB each, not
    # block-aligned), one file added (8 MiB), one removed.
    removed, changed = names[-1], names[:2]
    games, game = version("a", set(changed) | {removed})
    for name in changed:
        def overwrite(data):
            data[5 * MIB + 3:6 * MIB + 3] = os.urandom(MIB)
            return data
        rewrite(os.path.join(g1, name), os.path.join(game, name), overwrite)
    write_random(os.path.join(game, "data/added.eti"), 8 * MIB)
    versions["a"] = (games, 2 * MIB + 8 * MIB)
    # (b) 1 MiB + 7 bytes inserted at 37 % of the archive, 3 MiB
    # overwritten in the 64 MiB file.
    games, game = version("b", {"archive.eti", "big.eti"})
    inserted = MIB + 7
    rewrite(os.path.join(g1, "archive.eti"), os.path.join(game, "archive.eti"),
            lambda d: d[:len(d) * 37 // 100] + os.urandom(inserted) + d[len(d) * 37 // 100:])

    def overwrite3(data):
        data[40 * MIB + 1000:43 * MIB + 1000] = os.urandom(3 * MIB)
        return data
    rewrite(os.path.join(g1, "big.eti"), os.path.join(game, "big.eti"), overwrite3)
    versions["b"] = (games, inserted + 3 * MIB)
    with open(os.path.join(g1, "version.ini"), "w") as f:
        f.write("version=1\n")
    return v1, versions


def same_files(expected_game, actual_game):
    """Every file of expected_game is in actual_game with the same bytes."""
    for d, _dirs, files in os.walk(expected_game):
        for name in files:
            rel = os.path.relpath(os.path.join(d, name), expected_game)
            if not filecmp.cmp(os.path.join(d, name), os.path.join(actual_game, rel),
                               shallow=False):
                return False
    return True


def wait_log(daemon, text, timeout=300):
    deadline = time.monotonic() + timeout
    while True:
        with open(daemon.log, errors="replace") as f:
            if text in f.read():
                return
        if daemon.proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{daemon.dir}: no '{text}' in its log")
        time.sleep(0.1)


def rsync_daemon(work, tag, path):
    """An rsync daemon in h1 serving `path` as module `game`; returns
    (process, url) once it answers."""
    rsync_dir = os.path.join(work, f"rsyncd-{tag}")
    os.makedirs(rsync_dir)
    conf = os.path.join(rsync_dir, "rsyncd.conf")
    with open(conf, "w") as f:
        f.write(f"""pid file = {rsync_dir}/rsyncd.pid
log file = {rsync_dir}/rsyncd.log
use chroot = no
[game]
    path = {path}
    read only = yes
    uid = root
    gid = root
""")
    proc = subprocess.Popen(in_host("h1", ["rsync", "--daemon", "--no-detach", f"--config={conf}",
                                           "--address=10.77.0.1", "--port=8873"]),
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    url = "rsync://10.77.0.1:8873/game/"
    deadline = time.monotonic() + 10
    while subprocess.run(in_host("h2", ["rsync", url]), stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL).returncode != 0:
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError("rsync daemon did not serve: "
                               + open(f"{rsync_dir}/rsyncd.log").read())
        time.sleep(0.1)
    return proc, url


def received_by(host):
    """Bytes `host` has received on its lab link (headers included)."""
    return link_counters()[f"v{host}"][1]


def scenario_delta(work):
    """Updates of a 1 GiB game, h1 → h2: (a) 5 % of files changed in place, one added, one
    removed; (b) 1 MiB + 7 bytes inserted at 37 % of a 256 MiB archive, 3 MiB overwritten
    in a 64 MiB file. lanspread vs rsync -a from an rsync daemon, and a full download."""
    v1, versions = delta_versions(work)
    out = {}
    for tag, (v2, changed) in versions.items():
        source = os.path.join(v2, GAME)
        seeder = Daemon(work, "h1", f"delta-seed-{tag}", v2)
        ours, ours_bytes, reused = [], [], []
        try:
            wait_log(seeder, "file list ready")
            for run in range(RUNS):
                games = os.path.join(work, f"delta-leech-{tag}{run}")
                shutil.copytree(v1, games)
                subprocess.run(["sync"], check=True)  # the copy's writeback is not the update's
                leech = Daemon(work, "h2", f"delta-leech-{tag}{run}", games)
                leech.wait_game_peers(1)
                wait_log(leech, "file list ready")  # its own v1, hashed before the clock starts
                before = received_by("h2")
                started = time.monotonic()
                end = leech.ctl("update", GAME, timeout=600)["event"]
                secs = time.monotonic() - started
                got = received_by("h2") - before
                leech.stop()
                if end["type"] != "DownloadGameFilesFinished":
                    raise RuntimeError(f"delta {tag}: update failed: {end}")
                if not same_files(source, os.path.join(games, GAME)):
                    raise RuntimeError(f"delta {tag}: updated files differ")
                ours.append(secs)
                ours_bytes.append(got)
                reused.append(end["bytes_reused"])
                log(f"  ({tag}) lanspread run {run + 1}: {secs:.2f} s, received {got / MIB:.2f} MiB "
                    f"({got / changed:.3f} × the {changed / MIB:.2f} MiB changed), "
                    f"{end['bytes_reused'] / MIB:.0f} MiB from local files")
                shutil.rmtree(games)
                shutil.rmtree(leech.dir)
            # A full download of version 2, for scale.
            full = []
            for run in range(RUNS):
                leech = leech_in(work, "h2", f"delta-full-{tag}{run}", 1)
                _, secs, _ = download(leech, timeout=600)
                leech.stop()
                full.append(secs)
                shutil.rmtree(leech.dir)
        finally:
            seeder.stop()
        rsyncd, url = rsync_daemon(work, tag, source)
        theirs, theirs_bytes = [], []
        try:
            for run in range(RUNS):
                dest = os.path.join(work, f"delta-rsync-{tag}{run}")
                shutil.copytree(os.path.join(v1, GAME), dest)
                subprocess.run(["sync"], check=True)
                before = received_by("h2")
                started = time.monotonic()
                subprocess.run(in_host("h2", ["rsync", "-a", url, dest + "/"]), check=True)
                subprocess.run(["sync"], check=True)
                secs = time.monotonic() - started
                got = received_by("h2") - before
                if not same_files(source, dest):
                    raise RuntimeError(f"delta {tag}: rsync's files differ")
                theirs.append(secs)
                theirs_bytes.append(got)
                log(f"  ({tag}) rsync run {run + 1}: {secs:.2f} s, received {got / MIB:.2f} MiB "
                    f"({got / changed:.3f} × the changes)")
                shutil.rmtree(dest)
        finally:
            rsyncd.terminate()
            rsyncd.wait()
        shutil.rmtree(v2)
        out[tag] = {
            "changed_mib": round(changed / MIB, 2),
            "lanspread_received_over_changed": summary([b / changed for b in ours_bytes], 3),
            "rsync_received_over_changed": summary([b / changed for b in theirs_bytes], 3),
            "lanspread_update_s": summary(ours),
            "rsync_update_s": summary(theirs),
            "full_download_s": summary(full),
            "lanspread_reused_mib": summary([r / MIB for r in reused], 0),
            "update_over_rsync_time": round(statistics.median(ours) / statistics.median(theirs), 2),
            "update_over_full_download_time": round(statistics.median(ours)
                                                    / statistics.median(full), 2),
        }
    shutil.rmtree(v1)
    return {f"{tag}_{key}": value for tag, figures in out.items() for key, value in figures.items()}


def scenario_extract(_work):
    """scripts/bench-extract.sh: the unpacker vs bsdtar on the same zip."""
    out = subprocess.run([os.path.join(ROOT, "scripts", "bench-extract.sh")], check=True,
                         stdout=subprocess.PIPE, text=True).stdout
    figures = json.loads(out.strip().splitlines()[-1])
    mib = figures["extracted_mib"]
    rate = lambda s: {"median": round(mib / s["median"], 1), "min": round(mib / s["max"], 1),
                      "max": round(mib / s["min"], 1), "runs": RUNS}
    return {
        "extracted_mib": mib,
        "lanspread_mib_per_s": rate(figures["lanspread_s"]),
        "bsdtar_mib_per_s": rate(figures["bsdtar_s"]),
        "lanspread_over_bsdtar": round(figures["bsdtar_s"]["median"] / figures["lanspread_s"]["median"], 2),
    }


PREPARE_GIB = 10


def scenario_prepare(work):
    """A 10 GiB game: seeder start → manifest ready, against b3sum over the same files."""
    games = os.path.join(work, "prepare-games")
    game = os.path.join(games, GAME)
    os.makedirs(game, exist_ok=True)
    # Ten 1 GiB files from one random 64 MiB block (BLAKE3 does not care
    # that it repeats; writing 10 GiB of urandom would take minutes).
    block = os.urandom(64 * MIB)
    files = []
    for i in range(PREPARE_GIB):
        path = os.path.join(game, f"pak{i}.eti")
        with open(path, "wb") as f:
            for _ in range(1024 // 64):
                f.write(block)
        files.append(path)
    with open(os.path.join(game, "version.ini"), "w") as f:
        f.write("version=prepare\n")
    size = PREPARE_GIB << 30
    # Both read from the page cache (24 GiB of RAM hold the game): warm it.
    for path in files:
        with open(path, "rb") as f:
            while f.read(64 * MIB):
                pass
    b3, daemon_s = [], []
    for _ in range(2):
        started = time.monotonic()
        subprocess.run(["b3sum", "--no-names", *files], check=True, stdout=subprocess.DEVNULL)
        b3.append(time.monotonic() - started)
        daemon = Daemon(work, "h1", "prepare", games)
        try:
            # The preparer logs "file list ready" when peers can have it.
            while True:
                with open(daemon.log, errors="replace") as log_file:
                    if "file list ready" in log_file.read():
                        break
                if time.monotonic() - daemon.started > 600:
                    raise RuntimeError("prepare: the manifest was not ready in 10 minutes")
                time.sleep(0.1)
            daemon_s.append(time.monotonic() - daemon.started)
        finally:
            daemon.stop()
            shutil.rmtree(daemon.dir)  # its index: the next run hashes again
        log(f"  b3sum {b3[-1]:.1f} s, lanspreadd start → ready {daemon_s[-1]:.1f} s")
    shutil.rmtree(games)
    return {
        "game_gib": PREPARE_GIB,
        "b3sum_s": summary(b3),
        "lanspread_ready_s": summary(daemon_s),
        "ready_over_b3sum": summary([d / b for d, b in zip(daemon_s, b3)]),
        "lanspread_gib_per_s": summary([PREPARE_GIB / d for d in daemon_s]),
        "b3sum_gib_per_s": summary([PREPARE_GIB / b for b in b3]),
    }


SCENARIOS = {
    "single": scenario_single,
    "ceiling": scenario_ceiling,
    "jumbo": scenario_jumbo,
    "multi": scenario_multi,
    "fanout": scenario_fanout,
    "fanout-bt": scenario_fanout_bt,
    "fanout8": scenario_fanout8,
    "fanout8-bt": scenario_fanout8_bt,
    "discovery": scenario_discovery,
    "idle": scenario_idle,
    "mesh": scenario_mesh,
    "mesh20": scenario_mesh20,
    "extract": scenario_extract,
    "many": scenario_many,
    "delta": scenario_delta,
    "prepare": scenario_prepare,
}

# ---------------------------------------------------------------- report

# (scenario, key, label, unit, higher is better)
ROWS = [
    ("single", "lanspread_mib_per_s", "1 seeder, 1 GiB: lanspread", "MiB/s", True),
    ("single", "https_mib_per_s", "1 seeder, 1 GiB: nginx + curl (HTTPS, TLS 1.3)", "MiB/s", True),
    ("single", "lanspread_cpu_s_per_gib_seeder", "CPU per GiB, lanspread seeder", "s", False),
    ("single", "https_cpu_s_per_gib_nginx", "CPU per GiB, nginx", "s", False),
    ("single", "lanspread_cpu_s_per_gib_downloader", "CPU per GiB, lanspread downloader", "s", False),
    ("single", "https_cpu_s_per_gib_curl", "CPU per GiB, curl", "s", False),
    ("single", "lanspread_kswitches_per_gib_seeder", "context switches per GiB, lanspread seeder (thousands)", "", False),
    ("single", "lanspread_kswitches_per_gib_downloader", "context switches per GiB, lanspread downloader (thousands)", "", False),
    ("single", "lanspread_peak_rss_mib_downloader", "peak RSS moving 1 GiB, lanspread downloader", "MiB", False),
    ("single", "lanspread_peak_rss_mib_seeder", "peak RSS over its life (start, file list, three uploads of 1 GiB), lanspread seeder", "MiB", False),
    ("ceiling", "ceiling_mib_per_s", "1 GiB over bare s2n-quic, daemon's settings, memory → file (the transport's ceiling)", "MiB/s", True),
    ("ceiling", "ceiling_cpu_s_per_gib_sender", "CPU per GiB, bare transport sender", "s", False),
    ("ceiling", "ceiling_cpu_s_per_gib_receiver", "CPU per GiB, bare transport receiver", "s", False),
    ("jumbo", "lanspread_mib_per_s", "MTU 9000, 1 seeder, 1 GiB: lanspread", "MiB/s", True),
    ("jumbo", "https_mib_per_s", "MTU 9000, 1 seeder, 1 GiB: nginx + curl", "MiB/s", True),
    ("jumbo", "lanspread_cpu_s_per_gib_seeder", "MTU 9000, CPU per GiB, lanspread seeder", "s", False),
    ("jumbo", "lanspread_cpu_s_per_gib_downloader", "MTU 9000, CPU per GiB, lanspread downloader", "s", False),
    ("multi", "achieved_mbit", "3 seeders (400+400+100 Mbit/s): achieved", "Mbit/s", True),
    ("multi", "achieved_over_sum", "3 seeders: achieved ÷ sum of links", "", True),
    ("fanout", "one_alone_s", "fan-out 1 → 4 (all links 400 Mbit/s both ways, 128 MiB), lanspread: one alone", "s", False),
    ("fanout", "four_together_s", "fan-out 1 → 4, lanspread: four together, all done", "s", False),
    ("fanout", "four_over_one", "fan-out 1 → 4, lanspread: all done ÷ one alone", "", False),
    ("fanout", "seeder_sent_over_size", "fan-out 1 → 4, lanspread: seeder bytes sent ÷ game size", "", False),
    ("fanout", "kumar_ross_bound_s", "fan-out 1 → 4: Kumar–Ross lower bound for all done", "s", False),
    ("fanout", "bound_over_one_alone", "fan-out 1 → 4, lanspread: bound ÷ one alone (best ratio possible)", "", False),
    ("fanout", "from_downloaders_share", "fan-out 1 → 4, lanspread: share of bytes from other downloaders", "", True),
    ("fanout", "alone_downlink_idle_s", "fan-out 1 → 4, lanspread: one alone, its downlink idle (start-up, the last round trips)", "s", False),
    ("fanout", "downlink_idle_start_s", "fan-out 1 → 4, lanspread: a downloader's downlink idle until the seeder sent one chunk per downloader", "s", False),
    ("fanout", "downlink_idle_middle_s", "fan-out 1 → 4, lanspread: … idle while the seeder sends", "s", False),
    ("fanout", "downlink_idle_end_s", "fan-out 1 → 4, lanspread: … idle after the seeder's last byte, until done", "s", False),
    ("fanout-bt", "one_alone_s", "fan-out 1 → 4, BitTorrent (aria2c): one alone", "s", False),
    ("fanout-bt", "all_done_s", "fan-out 1 → 4, BitTorrent: four together, all done", "s", False),
    ("fanout-bt", "all_over_one", "fan-out 1 → 4, BitTorrent: all done ÷ one alone", "", False),
    ("fanout-bt", "seeder_sent_over_size", "fan-out 1 → 4, BitTorrent: seeder bytes sent ÷ game size", "", False),
    ("fanout-bt", "bound_over_one_alone", "fan-out 1 → 4, BitTorrent: bound ÷ one alone (best ratio possible)", "", False),
    ("fanout8", "one_alone_s", "fan-out 1 → 8 (all links 100 Mbit/s both ways, 128 MiB), lanspread: one alone", "s", False),
    ("fanout8", "all_done_s", "fan-out 1 → 8, lanspread: eight together, all done", "s", False),
    ("fanout8", "all_over_one", "fan-out 1 → 8, lanspread: all done ÷ one alone", "", False),
    ("fanout8", "seeder_sent_over_size", "fan-out 1 → 8, lanspread: seeder bytes sent ÷ game size", "", False),
    ("fanout8", "kumar_ross_bound_s", "fan-out 1 → 8: Kumar–Ross lower bound for all done", "s", False),
    ("fanout8", "bound_over_one_alone", "fan-out 1 → 8, lanspread: bound ÷ one alone (best ratio possible)", "", False),
    ("fanout8", "from_downloaders_share", "fan-out 1 → 8, lanspread: share of bytes from other downloaders", "", True),
    ("fanout8", "alone_downlink_idle_s", "fan-out 1 → 8, lanspread: one alone, its downlink idle (start-up, the last round trips)", "s", False),
    ("fanout8", "downlink_idle_start_s", "fan-out 1 → 8, lanspread: a downloader's downlink idle until the seeder sent one chunk per downloader", "s", False),
    ("fanout8", "downlink_idle_middle_s", "fan-out 1 → 8, lanspread: … idle while the seeder sends", "s", False),
    ("fanout8", "downlink_idle_end_s", "fan-out 1 → 8, lanspread: … idle after the seeder's last byte, until done", "s", False),
    ("fanout8-bt", "one_alone_s", "fan-out 1 → 8, BitTorrent (aria2c): one alone", "s", False),
    ("fanout8-bt", "all_done_s", "fan-out 1 → 8, BitTorrent: eight together, all done", "s", False),
    ("fanout8-bt", "all_over_one", "fan-out 1 → 8, BitTorrent: all done ÷ one alone", "", False),
    ("fanout8-bt", "seeder_sent_over_size", "fan-out 1 → 8, BitTorrent: seeder bytes sent ÷ game size", "", False),
    ("fanout8-bt", "bound_over_one_alone", "fan-out 1 → 8, BitTorrent: bound ÷ one alone (best ratio possible)", "", False),
    ("discovery", "start_to_peer_connected_s", "daemon start → PeerConnected on another host", "s", False),
    ("mesh", "each_sees_all_s", "mesh of 12 started together: start → sees all 11 others", "s", False),
    ("mesh", "settling_cpu_percent_per_daemon", "mesh of 12: CPU per daemon over the 30 s after it formed (path MTU probes, library fetches)", "%", False),
    ("mesh", "idle_cpu_percent_per_daemon", "mesh of 12: idle CPU per daemon (11 peers; 60 s from 32 s after it formed)", "%", False),
    ("mesh", "idle_rss_mib_per_daemon", "mesh of 12: RSS per daemon", "MiB", False),
    ("mesh20", "each_sees_all_s", "mesh of 20 started together: start → sees all 19 others", "s", False),
    ("mesh20", "settling_cpu_percent_per_daemon", "mesh of 20: CPU per daemon over the 30 s after it formed", "%", False),
    ("mesh20", "idle_cpu_percent_per_daemon", "mesh of 20: idle CPU per daemon (19 peers; 60 s from 32 s after it formed)", "%", False),
    ("idle", "idle_cpu_percent_10s_windows", "idle CPU, 2 peers (10 s windows over 60 s)", "%", False),
    ("idle", "idle_cpu_percent_60s", "idle CPU, 2 peers (whole 60 s)", "%", False),
    ("idle", "sigterm_to_exit_s", "SIGTERM → exit, idle daemon with 2 peers", "s", False),
    ("idle", "ipc_p50_us", "IPC round trip p50", "µs", False),
    ("idle", "ipc_p99_us", "IPC round trip p99", "µs", False),
    ("extract", "lanspread_mib_per_s", "extraction: lanspread (fsyncs every file)", "MiB/s", True),
    ("extract", "bsdtar_mib_per_s", "extraction: bsdtar -xf", "MiB/s", True),
    ("delta", "a_lanspread_received_over_changed", "update (a) 5 % of files changed in place, 1 GiB: lanspread, bytes received ÷ bytes changed", "", False),
    ("delta", "a_rsync_received_over_changed", "update (a): rsync -a, bytes received ÷ bytes changed", "", False),
    ("delta", "a_lanspread_update_s", "update (a): lanspread", "s", False),
    ("delta", "a_rsync_update_s", "update (a): rsync -a + sync", "s", False),
    ("delta", "a_full_download_s", "update (a): full download of the new version, lanspread", "s", False),
    ("delta", "b_lanspread_received_over_changed", "update (b) 1 MiB inserted in a 256 MiB archive + 3 MiB overwritten: lanspread, bytes received ÷ bytes changed", "", False),
    ("delta", "b_rsync_received_over_changed", "update (b): rsync -a, bytes received ÷ bytes changed", "", False),
    ("delta", "b_lanspread_update_s", "update (b): lanspread", "s", False),
    ("delta", "b_rsync_update_s", "update (b): rsync -a + sync", "s", False),
    ("delta", "b_full_download_s", "update (b): full download of the new version, lanspread", "s", False),
    ("many", "lanspread_files_per_s", "many files (1–64 KiB): lanspread", "files/s", True),
    ("many", "rsync_files_per_s", "many files: rsync daemon → rsync -a + sync", "files/s", True),
    ("many", "lanspread_mib_per_s", "many files: lanspread", "MiB/s", True),
    ("many", "rsync_mib_per_s", "many files: rsync", "MiB/s", True),
    ("prepare", "lanspread_ready_s", "10 GiB game: lanspreadd start → manifest ready", "s", False),
    ("prepare", "b3sum_s", "10 GiB game: b3sum over the same files", "s", False),
    ("prepare", "ready_over_b3sum", "manifest ready ÷ b3sum (1.0 = as fast)", "", False),
]


def median(v):
    """The median of a summary(), or a plain figure as it is."""
    return v["median"] if isinstance(v, dict) else v


def fmt(v):
    return (f"{v:.0f}" if v >= 100 else f"{v:.1f}" if v >= 10 else f"{v:.2f}" if v >= 0.1
            else f"{v:.3f}")


def compare(results, previous):
    """Medians that moved more than 10 % since the previous latest.json."""
    notes = []
    for scen, key, label, unit, higher in ROWS:
        now = results.get(scen, {}).get(key)
        before_scen = (previous or {}).get("scenarios", {}).get(scen, {})
        before = before_scen.get(key)
        if scen in SWARMS and (before_scen.get("link_mbit_both_ways")
                               != results.get(scen, {}).get("link_mbit_both_ways")):
            continue  # the links were shaped otherwise
        if not (isinstance(now, dict) and isinstance(before, dict)) or not before["median"]:
            continue
        change = (now["median"] - before["median"]) / before["median"]
        if abs(change) > 0.10:
            better = (change > 0) == higher
            notes.append(f"- {label}: {fmt(before['median'])} → {fmt(now['median'])} {unit} "
                         f"({change:+.0%}, {'better' if better else 'worse'})")
    return notes


def markdown(report, notes):
    s = report["scenarios"]
    lines = [
        "# lanspread benchmark results",
        "",
        f"`just bench` on {report['date']}: {report['machine']}. Each figure is the median "
        "of the runs shown, with min and max (the spread is the machine's noise). Lab hosts "
        "are network namespaces on one veth bridge, so an \"unshaped link\" is bounded by "
        "the two shared CPU cores, not by a wire.",
        "",
        *([f"This run measured {', '.join(report['measured'])}; the other figures are kept "
           "from earlier runs (this file's history says when)."]
          if set(report.get("measured") or SCENARIOS) != set(SCENARIOS) else []),
        "",
        "| figure | median | min | max | runs |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for scen, key, label, unit, _ in ROWS:
        if scen in SWARMS and "link_mbit_both_ways" not in s.get(scen, {}):
            continue  # a fan-out of before both-way shaping: other conditions
        v = s.get(scen, {}).get(key)
        u = f" {unit}" if unit else ""
        if isinstance(v, dict):
            lines.append(f"| {label} | **{fmt(v['median'])}{u}** | {fmt(v['min'])} | "
                         f"{fmt(v['max'])} | {v['runs']} |")
        elif isinstance(v, (int, float)):  # computed, not measured
            lines.append(f"| {label} | **{fmt(v)}{u}** | | | |")
    extra = []
    if "single" in s:
        extra.append(f"- lanspread ÷ HTTPS baseline, one seeder: **{s['single']['lanspread_over_https']}**")
        if "lanspread_peak_rss_mib_seeder" in s["single"]:
            extra.append(f"- peak RSS of the seeder over its whole life (three 1 GiB uploads): "
                         f"**{s['single']['lanspread_peak_rss_mib_seeder']} MiB**")
    if "single" in s and "ceiling" in s:
        ratio = s["single"]["lanspread_mib_per_s"]["median"] / s["ceiling"]["ceiling_mib_per_s"]["median"]
        extra.append(f"- lanspread ÷ the transport's ceiling, one seeder: **{ratio:.2f}**")
    if "jumbo" in s:
        extra.append(f"- with jumbo frames (MTU {s['jumbo']['mtu']}), lanspread ÷ HTTPS: "
                     f"**{s['jumbo']['lanspread_over_https']}**")
    if "multi" in s:
        extra.append(f"- 3 seeders, bytes served per seeder (median run): {s['multi']['bytes_share_median_run']}; "
                     f"share of link capacity: {s['multi']['link_share']}. "
                     "Per-peer throughput over time: [multi-peer.svg](multi-peer.svg)")
    for scen, n in (("fanout", 4), ("fanout8", 8)):
        for tool in (scen, f"{scen}-bt"):
            v = s.get(tool, {})
            if "all_done_s" not in v:  # absent, or from before both-way shaping
                continue
            who = "BitTorrent (aria2c + opentracker, 4 MiB pieces)" if tool.endswith("-bt") \
                else "lanspread"
            extra.append(
                f"- fan-out 1 → {n}, {who}: all done **{fmt(median(v['all_done_s']))} s**, "
                f"÷ one alone **{fmt(median(v['all_over_one']))}**; Kumar–Ross bound for "
                f"{v['link_mbit_both_ways']} Mbit/s links both ways: "
                f"**{fmt(v['kumar_ross_bound_s'])} s**, ÷ measured one alone "
                f"**{fmt(median(v['bound_over_one_alone']))}** (the best ratio possible); "
                f"seeder sent {fmt(median(v['seeder_sent_over_size']))} × the game "
                f"({fmt(median(v['seeder_sent_over_size_alone']))} × when one downloads "
                "alone)")
        if "all_done_s" in s.get(scen, {}) and "all_done_s" in s.get(f"{scen}-bt", {}):
            ours, theirs = median(s[scen]["all_done_s"]), median(s[f"{scen}-bt"]["all_done_s"])
            extra.append(f"- fan-out 1 → {n}, all done, BitTorrent ÷ lanspread: "
                         f"**{theirs / ours:.2f}** (above 1: lanspread is faster)")
    if has_source_split(s.get("fanout", {}).get("progress_median_run")):
        extra.append("- fan-out 1 → 4, lanspread, bytes each downloader received from the seeder "
                     "and from other downloaders over time: [fanout-sources.svg](fanout-sources.svg)")
    if report.get("flame_graphs"):
        extra.append("- flame graphs of the profiled runs (first run of each): " + ", ".join(
            f"[{svg[len('flame-'):-len('.svg')]}]({svg})" for svg in report["flame_graphs"]))
    if "idle" in s:
        extra.append(f"- idle RSS with 2 peers: **{s['idle']['idle_rss_mib']} MiB** "
                     f"({s['idle']['rss_after_30000_ipc_requests_mib']} MiB after 30 000 IPC requests)")
    if "discovery" in s:
        extra.append(f"- discovery misses (not connected within {DISCOVERY_MISS_S} s) over "
                     f"{s['discovery'].get('rounds', 10)} restarts: **{s['discovery']['misses']}**")
    if "mesh" in s:
        extra.append(f"- mesh of {s['mesh']['hosts']}: every daemon sees all others after "
                     f"**{s['mesh']['all_see_all_s']} s**")
    if "extract" in s:
        extra.append(f"- extraction, lanspread ÷ bsdtar: **{s['extract']['lanspread_over_bsdtar']}** "
                     f"({s['extract']['extracted_mib']} MiB extracted)")
    if "many" in s:
        extra.append(f"- many files ({s['many']['files']} files, {s['many']['game_mib']} MiB), "
                     f"lanspread ÷ rsync: **{s['many']['lanspread_over_rsync']}**")
    misses = report.get("discovery_misses") or []
    extra.append(f"- downloaders restarted because discovery missed a seeder for 30 s: "
                 f"**{len(misses)}**" + "".join(f"\n  - {m}" for m in misses))
    lines += ["", *extra, "", "## Compared with the previous run", ""]
    lines += notes or ["- no median moved more than 10 %" if report.get("previous_date")
                       else "- no previous results"]
    if report.get("previous_date"):
        lines.append(f"\n(previous run: {report['previous_date']})")
    lines.append(f"\nTotal bench time: {report['seconds']:.0f} s.")
    return "\n".join(lines) + "\n"


def svg_chart(series, rates, path):
    """Per-peer throughput over time (Mbit/s), with each link's cap dashed."""
    width, height, left, bottom, top, right = 720, 360, 60, 40, 30, 110
    t_max = max(t for pts in series.values() for t, _ in pts) or 1
    total = {}
    for pts in series.values():
        for t, v in pts:
            total[t] = total.get(t, 0) + v
    y_max = max(sum(rates.values()) * 1.1, max(total.values(), default=1))
    x = lambda t: left + (width - left - right) * t / t_max
    y = lambda v: height - bottom - (height - bottom - top) * v / y_max
    colors = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728"]
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'font-family="sans-serif" font-size="12">',
           f'<rect width="{width}" height="{height}" fill="white"/>',
           f'<text x="{left}" y="18" font-size="14">Three seeders on shaped links: '
           f'throughput per seeder during one download (Mbit/s)</text>']
    for i in range(6):
        v = y_max * i / 5
        out.append(f'<line x1="{left}" x2="{width - right}" y1="{y(v):.1f}" y2="{y(v):.1f}" '
                   f'stroke="#ddd"/><text x="{left - 6}" y="{y(v) + 4:.1f}" '
                   f'text-anchor="end">{v:.0f}</text>')
    for i in range(6):
        t = t_max * i / 5
        out.append(f'<text x="{x(t):.1f}" y="{height - bottom + 16}" '
                   f'text-anchor="middle">{t:.1f} s</text>')
    for i, (host, pts) in enumerate(series.items()):
        color = colors[i % len(colors)]
        out.append(f'<line x1="{left}" x2="{width - right}" y1="{y(rates[host]):.1f}" '
                   f'y2="{y(rates[host]):.1f}" stroke="{color}" stroke-dasharray="4 4"/>')
        points = " ".join(f"{x(t):.1f},{y(v):.1f}" for t, v in pts)
        out.append(f'<polyline fill="none" stroke="{color}" stroke-width="2" points="{points}"/>')
        out.append(f'<text x="{width - right + 8}" y="{top + 20 + 18 * i}" fill="{color}">'
                   f'{host} (cap {rates[host]})</text>')
    points = " ".join(f"{x(t):.1f},{y(v):.1f}" for t, v in sorted(total.items()))
    out.append(f'<polyline fill="none" stroke="#555" stroke-width="1.5" points="{points}"/>')
    out.append(f'<text x="{width - right + 8}" y="{top + 20 + 18 * len(series)}" fill="#555">'
               f'sum (cap {sum(rates.values())})</text>')
    out.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(out) + "\n")


def has_source_split(progress):
    """Whether recorded progress points carry bytes by source kind (a
    lanspreadd older than those event fields sends none)."""
    points = [p for pts in (progress or {}).values() for p in pts]
    return bool(points) and all(p[2] is not None and p[3] is not None for p in points)


def svg_sources(progress, path, title):
    """Bytes each downloader received over time (MiB), split by source kind:
    from complete holders (solid) and from other downloaders (dashed).
    False (and nothing written) when the events lack the split."""
    if not has_source_split(progress):
        return False
    points = [p for pts in progress.values() for p in pts]
    width, height, left, bottom, top, right = 760, 380, 60, 40, 30, 170
    t_max = max(p[0] for p in points) or 1
    y_max = max(max(p[2], p[3]) for p in points) / MIB * 1.1 or 1
    x = lambda t: left + (width - left - right) * t / t_max
    y = lambda v: height - bottom - (height - bottom - top) * v / y_max
    colors = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
              "#7f7f7f"]
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'font-family="sans-serif" font-size="12">',
           f'<rect width="{width}" height="{height}" fill="white"/>',
           f'<text x="{left}" y="18" font-size="14">{title}</text>']
    for i in range(6):
        v = y_max * i / 5
        out.append(f'<line x1="{left}" x2="{width - right}" y1="{y(v):.1f}" y2="{y(v):.1f}" '
                   f'stroke="#ddd"/><text x="{left - 6}" y="{y(v) + 4:.1f}" '
                   f'text-anchor="end">{v:.0f}</text>')
    for i in range(6):
        t = t_max * i / 5
        out.append(f'<text x="{x(t):.1f}" y="{height - bottom + 16}" '
                   f'text-anchor="middle">{t:.1f} s</text>')
    for i, (host, pts) in enumerate(progress.items()):
        color = colors[i % len(colors)]
        pts = [(0, 0, 0, 0), *sorted(pts)]
        for field, dash in ((2, ""), (3, ' stroke-dasharray="5 4"')):
            line = " ".join(f"{x(p[0]):.1f},{y(p[field] / MIB):.1f}" for p in pts)
            out.append(f'<polyline fill="none" stroke="{color}" stroke-width="2"{dash} '
                       f'points="{line}"/>')
        out.append(f'<text x="{width - right + 8}" y="{top + 20 + 18 * i}" fill="{color}">'
                   f'{host}</text>')
    legend = top + 30 + 18 * len(progress)
    out.append(f'<line x1="{width - right + 8}" x2="{width - right + 38}" y1="{legend}" '
               f'y2="{legend}" stroke="#333" stroke-width="2"/><text x="{width - right + 44}" '
               f'y="{legend + 4}">from seeders</text>')
    out.append(f'<line x1="{width - right + 8}" x2="{width - right + 38}" y1="{legend + 18}" '
               f'y2="{legend + 18}" stroke="#333" stroke-width="2" stroke-dasharray="5 4"/>'
               f'<text x="{width - right + 44}" y="{legend + 22}">from downloaders</text>')
    out.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(out) + "\n")
    return True


# ---------------------------------------------------------------- main


# Tools only some scenarios use.
SCENARIO_TOOLS = {"single": ("nginx", "curl"), "extract": ("bsdtar",), "many": ("rsync",),
                  "delta": ("rsync",),
                  "prepare": ("b3sum",),
                  "fanout-bt": ("aria2c", "mktorrent", "opentracker", "curl"),
                  "fanout8-bt": ("aria2c", "mktorrent", "opentracker", "curl")}
BT_PACKAGES = {"aria2c": "aria2", "mktorrent": "mktorrent", "opentracker": "opentracker"}
# The release binaries each scenario runs (the BitTorrent baselines none).
SCENARIO_BINARIES = {"fanout-bt": (), "fanout8-bt": (),
                     "idle": ("lanspreadd", "lanspreadctl", "examples/ipc_bench"),
                     "extract": ("examples/extract_bench",)}


def preflight(names):
    if os.geteuid() != 0:
        sys.exit("bench: the network lab needs root")
    needed = [t for name in names for t in SCENARIO_TOOLS.get(name, ())]
    # The BitTorrent baseline's packages (the justfile's list predates it).
    missing = sorted({BT_PACKAGES[t] for t in needed if t in BT_PACKAGES and not shutil.which(t)})
    if missing:
        subprocess.run([os.path.join(ROOT, "scripts", "apt-install.sh"), *missing], check=True)
    for tool in (*needed, "ip", "nsenter", "avahi-daemon", "dbus-daemon"):
        if not shutil.which(tool):
            sys.exit(f"bench: {tool} is missing (`just bench` installs it through "
                     "scripts/apt-install.sh)")
    binaries = {b for name in names
                for b in SCENARIO_BINARIES.get(name, ("lanspreadd", "lanspreadctl"))}
    for binary in sorted(binaries):
        if not os.path.exists(os.path.join(BIN, binary)):
            sys.exit(f"bench: {BIN}/{binary} is missing (`just bench` builds it)")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", help="comma-separated scenario names")
    parser.add_argument("--profile", metavar="DIR",
                        help="perf record the downloader and seeder of the first run of single "
                        "and of many into DIR (perf report -i DIR/single-downloader.data), and "
                        "draw a flame graph of each into the results (flame-*.svg; needs "
                        "inferno: cargo install inferno)")
    args = parser.parse_args()
    global PROFILE
    PROFILE = args.profile and os.path.abspath(args.profile)
    if PROFILE:
        if not shutil.which("perf"):
            sys.exit("bench: --profile needs perf (apt-get install linux-perf)")
        for tool in ("inferno-collapse-perf", "inferno-flamegraph"):
            if not shutil.which(tool):
                sys.exit(f"bench: --profile needs {tool} (cargo install inferno)")
        os.makedirs(PROFILE, exist_ok=True)
    names = args.only.split(",") if args.only else list(SCENARIOS)
    for name in names:
        if name not in SCENARIOS:
            sys.exit(f"bench: unknown scenario {name} (known: {', '.join(SCENARIOS)})")
    preflight(names)

    def overtime(*_):
        raise TimeoutError(f"bench: over the {TOTAL_LIMIT_S} s limit")
    signal.signal(signal.SIGALRM, overtime)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit("bench: terminated"))
    signal.alarm(TOTAL_LIMIT_S)

    started = time.monotonic()
    work = tempfile.mkdtemp(prefix="lanspread-bench.", dir="/var/tmp")
    lab("down", check=False)
    results = {}
    failed = True
    try:
        lab("up", str(LAB_HOSTS))
        for name in names:
            log(f"{name}: {SCENARIOS[name].__doc__.strip()}")
            t0 = time.monotonic()
            results[name] = SCENARIOS[name](work)
            log(f"{name}: done in {time.monotonic() - t0:.0f} s")
        failed = False
    finally:
        signal.alarm(0)
        lab("down", check=False)
        if failed or os.environ.get("LANSPREAD_BENCH_KEEP"):
            # The daemons' logs stay for the post-mortem (big game files go).
            for root, _dirs, files in os.walk(work):
                for name in files:
                    if name.endswith(".eti") or name == "curl.out":
                        os.unlink(os.path.join(root, name))
            log(f"daemon logs kept in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)

    latest = os.path.join(RESULTS, "latest.json")
    previous = None
    if os.path.exists(latest):
        with open(latest) as f:
            previous = json.load(f)
    series = results.get("multi", {}).get("series_median_run")
    fanout_progress = results.get("fanout", {}).get("progress_median_run")
    if previous and args.only:
        # A partial run keeps the other scenarios' last figures.
        merged = dict(previous.get("scenarios", {}))
        merged.update(results)
        results = merged
    report = {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{os.cpu_count()} cores, {platform.system()} {platform.release()}, "
                   f"load average at start {os.getloadavg()[0]:.2f}",
        "seconds": round(time.monotonic() - started, 1),
        "previous_date": previous.get("date") if previous else None,
        # A partial run (--only) measured these; the others are kept.
        "measured": names,
        "scenarios": results,
        "discovery_misses": DISCOVERY_MISSES,
        # A partial run that drew none keeps the links to the last ones.
        "flame_graphs": FLAME_GRAPHS or ((previous or {}).get("flame_graphs", []) if args.only
                                         else []),
    }
    notes = compare(results, previous)
    os.makedirs(RESULTS, exist_ok=True)
    with open(latest, "w") as f:
        json.dump(report, f, indent=2)
        f.write("\n")
    if series:
        svg_chart(series, MULTI_RATES, os.path.join(RESULTS, "multi-peer.svg"))
    if fanout_progress:
        cfg = SWARMS["fanout"]
        if svg_sources(fanout_progress, os.path.join(RESULTS, "fanout-sources.svg"),
                       f"Fan-out 1 → {len(cfg['hosts'])} ({cfg['rate']} Mbit/s links, "
                       f"{cfg['mib']} MiB): MiB each downloader received, by source"):
            log("fanout: wrote fanout-sources.svg")
        else:
            log("fanout: the progress events carry no bytes_from_seeders / "
                "bytes_from_downloaders (an older lanspreadd?): no fanout-sources.svg")
    table = markdown(report, notes)
    with open(os.path.join(RESULTS, "latest.md"), "w") as f:
        f.write(table)
    print(table)


if __name__ == "__main__":
    main()
