#!/usr/bin/env python3
"""`just bench`: lanspread's figures, measured in the network lab (docs/lab.md#benchmarks).

Runs every scenario against its baseline in the same run, on release
binaries, in a lab of five hosts (id "bench"), and writes
bench/results/latest.json, latest.md (the table) and multi-peer.svg (per-peer
throughput over time). Each figure is the median of several runs, with min
and max; the previous latest.json is compared and differences over 10 % are
pointed out. Root only. Everything started here is ended by pid (through
`lab.sh down`), also on failure; the whole run is bounded (SIGALRM).

    bench/run.py [--only NAME[,NAME...]]

Scenario names: single, multi, fanout, discovery, idle, mesh, extract, many.
Release binaries are taken from $CARGO_TARGET_DIR/release (default
target/release). The lab id is "bench" unless LANSPREAD_BENCH_LAB says
otherwise (the mesh scenario adds a lab of its own, "<id>mesh").
LANSPREAD_BENCH_MANY_FILES sets the number of files of `many` (50 000).
"""

import argparse
import datetime
import filecmp
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
RESULTS = os.path.join(ROOT, "bench", "results")
# LANSPREAD_BENCH_LAB: another lab id, so two benches on one machine do not
# tear down each other's labs.
LAB_ID = os.environ.get("LANSPREAD_BENCH_LAB", "bench")
GAME = "openarena"
MIB = 1 << 20
TOTAL_LIMIT_S = 600
RUNS = 3
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


def perf_record(pids, name):
    """`perf record` of pids until the returned process gets SIGINT."""
    return subprocess.Popen(["perf", "record", "-F", "999", "-g", "-o",
                             os.path.join(PROFILE, f"{name}.data"), "-p",
                             ",".join(map(str, pids))],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


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
    if end["type"] != "DownloadGameFilesFinished":
        raise RuntimeError(f"download failed: {end}")
    return end["bytes"], end["millis"] / 1000, cpu


def same_file(a, b):
    return filecmp.cmp(a, b, shallow=False)


class LinkSampler:
    """Bytes each lab host sends, read on the bridge side every 0.2 s."""

    def __init__(self, hosts):
        self.hosts = hosts
        self.samples = []
        self.stop_flag = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _read(self):
        out = subprocess.run(["ip", "-n", f"lsl-{LAB_ID}-br", "-s", "-j", "link", "show"],
                             check=True, stdout=subprocess.PIPE, text=True).stdout
        by_name = {link["ifname"]: link["stats64"]["rx"]["bytes"] for link in json.loads(out)}
        return {h: by_name[f"v{h}"] for h in self.hosts}

    def _run(self):
        start = time.monotonic()
        while not self.stop_flag.is_set():
            self.samples.append((time.monotonic() - start, self._read()))
            time.sleep(0.2)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop_flag.set()
        self.thread.join()

    def series(self):
        """Per host: [(t, Mbit/s over the previous interval)]."""
        out = {h: [] for h in self.hosts}
        for (t0, a), (t1, b) in zip(self.samples, self.samples[1:]):
            for h in self.hosts:
                out[h].append((round(t1, 2), round((b[h] - a[h]) * 8 / (t1 - t0) / 1e6, 1)))
        return out


# ---------------------------------------------------------------- scenarios


def scenario_single(work):
    """1 GiB from one seeder (h1) to h2, unshaped: lanspread vs nginx + curl."""
    size = 1024 * MIB
    seed_games = os.path.join(work, "single-seed")
    write_game(seed_games, size, "single")
    source = os.path.join(seed_games, GAME, "pak0.eti")
    seeder = Daemon(work, "h1", "seed", seed_games)
    ours, ours_cpu_seed, ours_cpu_leech = [], [], []
    for run in range(RUNS):
        leech = leech_in(work, "h2", f"leech{run}", 1)
        got, secs, cpu = download(leech, watch_pids=[seeder.pid],
                                  profile="single" if run == 0 else None)
        leech.stop()
        if not same_file(source, os.path.join(leech.games, GAME, "pak0.eti")):
            raise RuntimeError("lanspread: downloaded bytes differ")
        gib = got / (1 << 30)
        ours.append(got / MIB / secs)
        ours_cpu_seed.append(cpu[seeder.pid] / gib)
        ours_cpu_leech.append(cpu[leech.pid] / gib)
        log(f"  lanspread run {run + 1}: {ours[-1]:.0f} MiB/s")
        shutil.rmtree(leech.dir)
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
        "https_cpu_s_per_gib_nginx": summary(theirs_cpu_seed),
        "https_cpu_s_per_gib_curl": summary(theirs_cpu_leech),
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
            sent = {h: last[h] - first[h] for h in MULTI_RATES}
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


FANOUT_RATE = 400  # Mbit/s


def scenario_fanout(work):
    """One seeder (h1, shaped), four downloaders together vs one alone."""
    size = 128 * MIB
    seed_games = os.path.join(work, "fanout-seed")
    write_game(seed_games, size, "fanout")
    lab("shape", "h1", f"{FANOUT_RATE}mbit")
    seeder = Daemon(work, "h1", "fanout-seed", seed_games)
    hosts = ["h2", "h3", "h4", "h5"]
    alone, together, ratios = [], [], []
    try:
        for run in range(RUNS):
            leech = leech_in(work, "h2", f"alone{run}", 1)
            started = time.monotonic()
            download(leech)
            alone.append(time.monotonic() - started)
            leech.stop()
            shutil.rmtree(leech.dir)

            leeches = [leech_in(work, h, f"fan{run}-{h}", 1) for h in hosts]
            done = {}

            def one(leech):
                started = time.monotonic()
                try:
                    download(leech)
                    done[leech.dir] = time.monotonic() - started
                except Exception as err:  # reported below
                    done[leech.dir] = err

            started = time.monotonic()
            threads = [threading.Thread(target=one, args=(leech,)) for leech in leeches]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            errors = [v for v in done.values() if isinstance(v, Exception)]
            if errors:
                raise RuntimeError(f"fan-out download failed: {errors[0]}")
            together.append(time.monotonic() - started)
            ratios.append(together[-1] / alone[-1])
            for leech in leeches:
                leech.stop()
                if not same_file(os.path.join(seed_games, GAME, "pak0.eti"),
                                 os.path.join(leech.games, GAME, "pak0.eti")):
                    raise RuntimeError("fan-out: downloaded bytes differ")
                shutil.rmtree(leech.dir)
            log(f"  run {run + 1}: alone {alone[-1]:.1f} s, four {together[-1]:.1f} s ({ratios[-1]:.2f})")
    finally:
        seeder.stop()
        lab("unshape", "h1")
    shutil.rmtree(seed_games)
    return {
        "game_mib": size // MIB,
        "seeder_link_mbit": FANOUT_RATE,
        "one_alone_s": summary(alone),
        "four_together_s": summary(together),
        "four_over_one": summary(ratios),
    }


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
MESH_IDLE_S = 60


def scenario_mesh(_work):
    """12 lab hosts start a daemon each at once: time until all see all; idle CPU, RSS."""
    global LAB_ID
    # Not "<LAB_ID>-…": `lab.sh down --id X` removes every lsl-X-* namespace.
    lab_id = f"{LAB_ID}mesh"
    work = tempfile.mkdtemp(prefix="mesh.", dir="/var/tmp")
    subprocess.run([LAB, "down", "--id", lab_id], stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    subprocess.run([LAB, "up", str(MESH_HOSTS), "--id", lab_id], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    main_lab, LAB_ID = LAB_ID, lab_id
    daemons = []
    try:
        started = time.monotonic()
        daemons = [Daemon(work, f"h{i}", f"mesh{i}", None) for i in range(1, MESH_HOSTS + 1)]
        # Event streams (lanspreadctl events), not polling: the figure is
        # when each daemon reported all its peers connected.
        streams = [Events(d.socket) for d in daemons]
        seen_all = [None] * len(daemons)
        try:
            for i, stream in enumerate(streams):
                left = max(0.01, started + 60 - time.monotonic())
                try:
                    at, _ = stream.wait(lambda e: e["type"] == "PeerCountChanged"
                                        and e["count"] == MESH_HOSTS - 1,
                                        "all peers connected", left)
                except RuntimeError:
                    if daemons[i].ctl("status")["peer_count"] < MESH_HOSTS - 1:
                        counts = [d.ctl("status")["peer_count"] for d in daemons]
                        raise RuntimeError(f"mesh incomplete after 60 s: peer counts {counts}")
                    at = time.monotonic()  # connected before the stream began
                seen_all[i] = at - started
        finally:
            for stream in streams:
                stream.close()
        time.sleep(2)
        before = {d.pid: cpu_seconds(d.pid) for d in daemons}
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
        "hosts": MESH_HOSTS,
        "all_see_all_s": round(max(seen_all), 2),
        "each_sees_all_s": summary(seen_all),
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
    """Many files (50 000) of 1–64 KiB, h1 → h2: lanspread vs rsync daemon → rsync -a + sync."""
    seed_games = os.path.join(work, "many-seed")
    total = write_many_files(seed_games, MANY_FILES)
    source = os.path.join(seed_games, GAME)
    mib = total / MIB
    seeder = Daemon(work, "h1", "many-seed", seed_games)
    ours = []
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
            shutil.rmtree(leech.dir)
    finally:
        seeder.stop()

    # The baseline: an rsync daemon on the seeder's host, `rsync -a` and one
    # `sync` on the downloader's (lanspread's time includes making every
    # file durable; so does this).
    rsync_dir = os.path.join(work, "rsyncd")
    os.makedirs(rsync_dir)
    conf = os.path.join(rsync_dir, "rsyncd.conf")
    with open(conf, "w") as f:
        f.write(f"""pid file = {rsync_dir}/rsyncd.pid
log file = {rsync_dir}/rsyncd.log
use chroot = no
[game]
    path = {source}
    read only = yes
    uid = root
    gid = root
""")
    rsyncd = subprocess.Popen(in_host("h1", ["rsync", "--daemon", "--no-detach",
                                             f"--config={conf}", "--address=10.77.0.1",
                                             "--port=8873"]),
                              stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    url = "rsync://10.77.0.1:8873/game/"
    theirs = []
    try:
        deadline = time.monotonic() + 10
        while subprocess.run(in_host("h2", ["rsync", url]), stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL).returncode != 0:
            if rsyncd.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("rsync daemon did not serve: "
                                   + open(f"{rsync_dir}/rsyncd.log").read())
            time.sleep(0.1)
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
            shutil.rmtree(dest)
    finally:
        rsyncd.terminate()
        rsyncd.wait()
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


SCENARIOS = {
    "single": scenario_single,
    "multi": scenario_multi,
    "fanout": scenario_fanout,
    "discovery": scenario_discovery,
    "idle": scenario_idle,
    "mesh": scenario_mesh,
    "extract": scenario_extract,
    "many": scenario_many,
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
    ("multi", "achieved_mbit", "3 seeders (400+400+100 Mbit/s): achieved", "Mbit/s", True),
    ("multi", "achieved_over_sum", "3 seeders: achieved ÷ sum of links", "", True),
    ("fanout", "one_alone_s", "fan-out (seeder 400 Mbit/s, 128 MiB): one alone", "s", False),
    ("fanout", "four_together_s", "fan-out: four together, all done", "s", False),
    ("fanout", "four_over_one", "fan-out: four ÷ one (4.0 = seeder link bound)", "", False),
    ("discovery", "start_to_peer_connected_s", "daemon start → PeerConnected on another host", "s", False),
    ("mesh", "each_sees_all_s", "mesh of 12 started together: start → sees all 11 others", "s", False),
    ("mesh", "idle_cpu_percent_per_daemon", "mesh of 12: idle CPU per daemon (11 peers)", "%", False),
    ("mesh", "idle_rss_mib_per_daemon", "mesh of 12: RSS per daemon", "MiB", False),
    ("idle", "idle_cpu_percent_10s_windows", "idle CPU, 2 peers (10 s windows over 60 s)", "%", False),
    ("idle", "idle_cpu_percent_60s", "idle CPU, 2 peers (whole 60 s)", "%", False),
    ("idle", "sigterm_to_exit_s", "SIGTERM → exit, idle daemon with 2 peers", "s", False),
    ("idle", "ipc_p50_us", "IPC round trip p50", "µs", False),
    ("idle", "ipc_p99_us", "IPC round trip p99", "µs", False),
    ("extract", "lanspread_mib_per_s", "extraction: lanspread (fsyncs every file)", "MiB/s", True),
    ("extract", "bsdtar_mib_per_s", "extraction: bsdtar -xf", "MiB/s", True),
    ("many", "lanspread_files_per_s", "many files (1–64 KiB): lanspread", "files/s", True),
    ("many", "rsync_files_per_s", "many files: rsync daemon → rsync -a + sync", "files/s", True),
    ("many", "lanspread_mib_per_s", "many files: lanspread", "MiB/s", True),
    ("many", "rsync_mib_per_s", "many files: rsync", "MiB/s", True),
]


def fmt(v):
    return (f"{v:.0f}" if v >= 100 else f"{v:.1f}" if v >= 10 else f"{v:.2f}" if v >= 0.1
            else f"{v:.3f}")


def compare(results, previous):
    """Medians that moved more than 10 % since the previous latest.json."""
    notes = []
    for scen, key, label, unit, higher in ROWS:
        now = results.get(scen, {}).get(key)
        before = (previous or {}).get("scenarios", {}).get(scen, {}).get(key)
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
        "| figure | median | min | max | runs |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for scen, key, label, unit, _ in ROWS:
        v = s.get(scen, {}).get(key)
        if isinstance(v, dict):
            u = f" {unit}" if unit else ""
            lines.append(f"| {label} | **{fmt(v['median'])}{u}** | {fmt(v['min'])} | "
                         f"{fmt(v['max'])} | {v['runs']} |")
    extra = []
    if "single" in s:
        extra.append(f"- lanspread ÷ HTTPS baseline, one seeder: **{s['single']['lanspread_over_https']}**")
    if "multi" in s:
        extra.append(f"- 3 seeders, bytes served per seeder (median run): {s['multi']['bytes_share_median_run']}; "
                     f"share of link capacity: {s['multi']['link_share']}. "
                     "Per-peer throughput over time: [multi-peer.svg](multi-peer.svg)")
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


# ---------------------------------------------------------------- main


# Tools only some scenarios use.
SCENARIO_TOOLS = {"single": ("nginx", "curl"), "extract": ("bsdtar",), "many": ("rsync",)}


def preflight(names):
    if os.geteuid() != 0:
        sys.exit("bench: the network lab needs root")
    needed = [t for name in names for t in SCENARIO_TOOLS.get(name, ())]
    for tool in (*needed, "ip", "nsenter", "avahi-daemon", "dbus-daemon"):
        if not shutil.which(tool):
            sys.exit(f"bench: {tool} is missing (`just bench` installs it through "
                     "scripts/apt-install.sh)")
    for binary in ("lanspreadd", "examples/ipc_bench", "examples/extract_bench"):
        if not os.path.exists(os.path.join(BIN, binary)):
            sys.exit(f"bench: {BIN}/{binary} is missing (`just bench` builds it)")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", help="comma-separated scenario names")
    parser.add_argument("--profile", metavar="DIR",
                        help="perf record the downloader and seeder of the first run of single "
                        "and of many into DIR (perf report -i DIR/single-downloader.data)")
    args = parser.parse_args()
    global PROFILE
    PROFILE = args.profile and os.path.abspath(args.profile)
    if PROFILE:
        if not shutil.which("perf"):
            sys.exit("bench: --profile needs perf (apt-get install linux-perf)")
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
        lab("up", "5")
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
        "scenarios": results,
        "discovery_misses": DISCOVERY_MISSES,
    }
    notes = compare(results, previous)
    os.makedirs(RESULTS, exist_ok=True)
    with open(latest, "w") as f:
        json.dump(report, f, indent=2)
        f.write("\n")
    if series:
        svg_chart(series, MULTI_RATES, os.path.join(RESULTS, "multi-peer.svg"))
    table = markdown(report, notes)
    with open(os.path.join(RESULTS, "latest.md"), "w") as f:
        f.write(table)
    print(table)


if __name__ == "__main__":
    main()
