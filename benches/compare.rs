//! flowrun against the tools people would use instead, run by hand: `cargo bench --bench compare [NAME...]`.
//!
//! Each comparison runs A and B interleaved for several rounds (FLOWRUN_BENCH_ROUNDS, default 5) and prints
//! the medians and their ratio. Names: pipe, queue, python, broadcast, each, validate, lateness, state, flood,
//! idle, scale, hop, api, rss, cluster (sharedq: its shared durable queue alone).
//! Not part of CI's pass/fail: timings depend on the machine; the goals are printed next to the figures.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn flowrun() -> &'static str {
    env!("CARGO_BIN_EXE_flowrun")
}

fn rounds() -> usize {
    std::env::var("FLOWRUN_BENCH_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(5)
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

fn time(cmd: &mut Command) -> Duration {
    let start = Instant::now();
    let status = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "{cmd:?} failed");
    start.elapsed()
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn sh(script: &str) -> Command {
    let mut c = Command::new("/bin/sh");
    c.arg("-c").arg(script);
    c
}

fn run(file: &Path) -> Command {
    let mut c = Command::new(flowrun());
    c.arg(file).arg("--progress").arg("never");
    c
}

/// A/B interleaved; prints both medians and the ratio against the goal.
fn compare(name: &str, goal: f64, mut ours: Command, mut theirs: Command, theirs_label: &str) {
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for _ in 0..rounds() {
        a.push(time(&mut ours));
        b.push(time(&mut theirs));
    }
    let (a, b) = (median(a), median(b));
    let ratio = a.as_secs_f64() / b.as_secs_f64();
    println!(
        "{name:<10} flowrun {:>8.3}s   {theirs_label:<42} {:>8.3}s   ratio {ratio:.2} (goal <= {goal}) {}",
        a.as_secs_f64(),
        b.as_secs_f64(),
        if ratio <= goal { "ok" } else { "MISSED" }
    );
}

/// Lateness (scheduled instant to spawn) of every run of a workflow run for `secs` seconds, from the JSON log.
fn lateness(file: &Path, secs: u64) -> Vec<f64> {
    lateness_with(file, secs, &[])
}

fn lateness_with(file: &Path, secs: u64, extra: &[&str]) -> Vec<f64> {
    let mut child = Command::new(flowrun())
        .arg(file)
        .args(["--log-format", "json", "--for", &format!("{secs}s")])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut late = Vec::new();
    for line in BufReader::new(child.stderr.take().unwrap()).lines() {
        let line = line.unwrap();
        // Output events may come by the million (the flood); only starts are parsed.
        if !line.starts_with(r#"{"event":"run.start""#) {
            continue;
        }
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        // A `start` firing (the flood's noisy job) is not a time firing.
        if v["event"] == "run.start" && v["job"] != "noisy" {
            late.push(v["lateness_us"].as_f64().unwrap() / 1000.0);
        }
    }
    child.wait().unwrap();
    late.sort_by(f64::total_cmp);
    late
}

fn pct(v: &[f64], p: f64) -> f64 {
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

fn print_lateness(name: &str, late: &[f64]) {
    println!(
        "{name:<28} runs {:>6}   median {:>6.3} ms   p99 {:>6.3} ms   max {:>7.3} ms   (goal: median < 1 ms, p99 < 5 ms)",
        late.len(),
        pct(late, 0.5),
        pct(late, 0.99),
        late.last().copied().unwrap_or(0.0)
    );
}

/// CPU time (user + system, seconds) of a process so far.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap()
        .split_whitespace()
        .collect();
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    ticks / 100.0
}

fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

fn many_jobs(n: usize, trigger: &str) -> String {
    let mut text = format!("executors: {{ default: {{ max_workers: {n} }} }}\njobs:\n");
    for i in 0..n {
        text.push_str(&format!(
            "  job{i}: {{ run: [/bin/true], trigger: {trigger} }}\n"
        ));
    }
    text
}

fn main() {
    let wanted: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let want = |name: &str| wanted.is_empty() || wanted.iter().any(|w| w == name);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    println!(
        "flowrun benchmarks, {} rounds, medians; {}",
        rounds(),
        chrono::Utc::now().format("%Y-%m-%d")
    );

    if want("pipe") {
        let f = write(d, "pipe.yaml", "channels: { raw: { kind: pipe } }\njobs:\n  gen: { run: head -c 1G /dev/zero, stdout: raw }\n  count: { run: wc -c, stdin: raw }\n");
        compare(
            "pipe",
            1.05,
            run(&f),
            sh("head -c 1G /dev/zero | wc -c"),
            "head -c 1G /dev/zero | wc -c",
        );
    }
    if want("queue") {
        let f = write(d, "queue.yaml", "channels: { lines: { kind: queue } }\njobs:\n  gen: { run: seq 10000000, stdout: lines }\n  count: { run: wc -l, stdin: lines }\n");
        compare(
            "queue",
            1.5,
            run(&f),
            sh("seq 10000000 | wc -l"),
            "seq 10000000 | wc -l",
        );
    }
    if want("python")
        && Command::new("python3")
            .arg("-c")
            .arg("import multiprocessing")
            .status()
            .is_ok_and(|s| s.success())
    {
        // Manager().Queue() is too slow for 10 M messages: both sides move 100,000 and the rates are compared.
        let py = write(
            d,
            "manager_queue.py",
            "import multiprocessing as mp\n\
def produce(q, n):\n    for i in range(n):\n        q.put(i)\n    q.put(None)\n\
def consume(q):\n    c = 0\n    while q.get() is not None:\n        c += 1\n    print(c)\n\
if __name__ == '__main__':\n    m = mp.Manager()\n    q = m.Queue()\n\
    p = mp.Process(target=produce, args=(q, 100000)); c = mp.Process(target=consume, args=(q,))\n\
    p.start(); c.start(); p.join(); c.join()\n",
        );
        let f = write(d, "queue100k.yaml", "channels: { lines: { kind: queue } }\njobs:\n  gen: { run: seq 100000, stdout: lines }\n  count: { run: wc -l, stdin: lines }\n");
        let (mut a, mut b) = (Vec::new(), Vec::new());
        for _ in 0..rounds().min(3) {
            a.push(time(&mut run(&f)));
            b.push(time(Command::new("python3").arg(&py)));
        }
        let (a, b) = (median(a), median(b));
        println!(
            "python     100,000 messages: flowrun queue {:.3}s ({:.0} msg/s), Manager().Queue() {:.3}s ({:.0} msg/s): {:.0}x",
            a.as_secs_f64(),
            1e5 / a.as_secs_f64(),
            b.as_secs_f64(),
            1e5 / b.as_secs_f64(),
            b.as_secs_f64() / a.as_secs_f64()
        );
    }
    if want("broadcast") {
        let f = write(d, "broadcast.yaml", "channels: { lines: { kind: broadcast } }\njobs:\n  gen: { run: seq 10000000, stdout: lines }\n  a: { run: wc -l, stdin: lines }\n  b: { run: wc -l, stdin: lines }\n");
        let fifo = d.join("fifo");
        compare(
            "broadcast",
            1.5,
            run(&f),
            sh(&format!(
                "rm -f {0}; mkfifo {0}; wc -l < {0} & seq 10000000 | tee {0} | wc -l; wait",
                fifo.display()
            )),
            "seq 10000000 | tee FIFO | wc -l (+ wc -l < FIFO)",
        );
    }
    if want("each") {
        let f = write(d, "each.yaml", "executors: { pool: { max_workers: 4 } }\nchannels: { items: {} }\njobs:\n  gen: { run: seq 2000, stdout: items }\n  work: { run: [/bin/true], trigger: { each: items }, executor: pool, max_instances: 4 }\n");
        compare(
            "each",
            1.0,
            run(&f),
            sh("seq 2000 | xargs -P4 -n1 /bin/true"),
            "seq 2000 | xargs -P4 -n1 /bin/true",
        );
    }
    if want("validate") {
        let mut text = String::from("channels:\n");
        for i in 0..1000 {
            text.push_str(&format!("  c{i}: {{ kind: queue }}\n"));
        }
        text.push_str("jobs:\n");
        for i in 0..4000 {
            let wiring = match i % 4 {
                0 => format!("stdout: c{}", i / 4),
                1 => format!("stdin: c{}", i / 4),
                2 => "trigger: { cron: \"*/5 * * * *\", timezone: Europe/Berlin }".to_string(),
                _ => format!("trigger: {{ after: job{} }}", i - 1),
            };
            text.push_str(&format!(
                "  job{i}: {{ run: \"echo {i}\", timeout: 5m, {wiring} }}\n"
            ));
        }
        let f = write(d, "big.yaml", &text);
        let mut times = Vec::new();
        for _ in 0..rounds() {
            times.push(time(Command::new(flowrun()).arg("validate").arg(&f)));
        }
        println!(
            "validate   4,000 jobs ({} KiB): median {:.3}s (goal well under 0.5 s)",
            text.len() / 1024,
            median(times).as_secs_f64()
        );
    }
    if want("lateness") {
        let f = write(
            d,
            "interval.yaml",
            "jobs:\n  tick: { run: [/bin/true], trigger: { interval: 100ms } }\n",
        );
        print_lateness("interval 100ms for 10s", &lateness(&f, 10));
        // The same with both cores kept busy by two spinning shells (the machine "otherwise busy").
        let mut load: Vec<_> = (0..2)
            .map(|_| {
                Command::new("/bin/sh")
                    .args(["-c", "while :; do :; done"])
                    .spawn()
                    .unwrap()
            })
            .collect();
        print_lateness("interval 100ms, 2 busy cores", &lateness(&f, 10));
        for l in &mut load {
            l.kill().unwrap();
            l.wait().unwrap();
        }
        let f = write(d, "thousand.yaml", &many_jobs(1000, "{ interval: 1s }"));
        print_lateness("1,000 jobs every 1s for 10s", &lateness(&f, 10));
    }
    if want("state") {
        state(d);
    }
    if want("cluster") {
        cluster(d);
    } else if want("sharedq") {
        if let Some((mut server, url)) = redis_on_free_port(&d.join("sharedq-redis")) {
            shared_queue(d, &url);
            let _ = server.kill();
            let _ = server.wait();
        }
    }
    if want("flood") {
        // A neighbour printing as fast as it can must not delay time triggers (the printer thread takes it).
        let f = write(
            d,
            "flood.yaml",
            "jobs:\n  tick: { run: [/bin/true], trigger: { interval: 50ms }, coalesce: false }\n  noisy: { run: yes 0123456789 }\n",
        );
        print_lateness("interval 50ms, stdout flood", &lateness(&f, 10));
    }
    if want("idle") {
        let f = write(
            d,
            "idle.yaml",
            "jobs:\n  yearly: { run: [/bin/true], trigger: { cron: \"@yearly\" } }\n",
        );
        let cpu = runner_cpu(&f, &[], Duration::from_millis(500), Duration::from_secs(10));
        println!(
            "idle       CPU over 10 s: {:.3} s ({:.4}%)",
            cpu,
            cpu / 10.0 * 100.0
        );
    }
    if want("scale") {
        scale(d, 1_000);
        scale(d, 10_000);
    }
    if want("hop") {
        hop(d);
    }
    if want("durable") {
        durable(d);
    }
    if want("api") {
        api(d);
    }
    if want("rss") {
        let f = write(d, "rss.yaml", &many_jobs(1000, "{ interval: 1s }"));
        let mut child = Command::new(flowrun())
            .arg(&f)
            .args(["--for", "5s"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let pid = child.id();
        let mut peak = 0;
        while child.try_wait().unwrap().is_none() {
            if let Ok(true) = std::fs::exists(format!("/proc/{pid}/status")) {
                peak = peak.max(std::panic::catch_unwind(|| peak_rss_kib(pid)).unwrap_or(0));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        println!(
            "rss        peak resident memory with 1,000 jobs firing every second: {:.1} MiB",
            peak as f64 / 1024.0
        );
    }
}

/// `n` jobs, each a daily cron at a random minute in Europe/Berlin (the same jobs for flowrun and APScheduler).
fn cron_jobs(n: usize) -> Vec<(u32, u32)> {
    let mut seed = 12345u64;
    let mut next = move |m: u64| {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((seed >> 33) % m) as u32
    };
    (0..n).map(|_| (next(60), next(24))).collect()
}

/// Resident memory (KiB) and CPU seconds of a process, from /proc.
/// A runner's CPU seconds over `over`, after `settle` (its start left out); the runner is killed after.
fn runner_cpu(file: &Path, args: &[&str], settle: Duration, over: Duration) -> f64 {
    let mut child = Command::new(flowrun())
        .arg(file)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(settle);
    let before = cpu_seconds(child.id());
    std::thread::sleep(over);
    let after = cpu_seconds(child.id());
    child.kill().unwrap();
    child.wait().unwrap();
    after - before
}

fn rss_and_cpu(pid: u32) -> (u64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let rss = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    (rss, cpu_seconds(pid))
}

/// Validate and run `n` cron jobs: validate time and peak memory, the runner's resident memory and CPU after
/// 2 s; the same jobs in APScheduler 3 (MemoryJobStore, BackgroundScheduler) when it can be imported.
fn scale(d: &Path, n: usize) {
    let jobs = cron_jobs(n);
    let mut yaml = String::from("jobs:\n");
    for (i, (m, h)) in jobs.iter().enumerate() {
        yaml.push_str(&format!(
            "  job{i}: {{ run: [/bin/true], trigger: {{ cron: \"{m} {h} * * *\", timezone: Europe/Berlin }} }}\n"
        ));
    }
    let f = write(d, &format!("cron{n}.yaml"), &yaml);
    busy_neighbour(d, n, &yaml);
    let mut times = Vec::new();
    let mut peak = 0;
    for _ in 0..rounds() {
        let start = Instant::now();
        let out = Command::new("/usr/bin/time")
            .args(["-f", "%M"])
            .arg(flowrun())
            .arg("validate")
            .arg(&f)
            .stdout(Stdio::null())
            .output()
            .unwrap();
        times.push(start.elapsed());
        let err = String::from_utf8_lossy(&out.stderr);
        peak = err
            .lines()
            .last()
            .and_then(|l| l.trim().parse().ok())
            .unwrap_or(0u64);
    }
    let mut child = Command::new(flowrun())
        .arg(&f)
        .args(["--for", "3s", "--progress", "never"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(2));
    let (rss, cpu) = rss_and_cpu(child.id());
    child.wait().unwrap();
    println!(
        "scale      {n:>6} cron jobs: validate {:.3}s (peak {:.1} MiB); runner after 2 s: {:.1} MiB resident, {:.2} s CPU",
        median(times).as_secs_f64(),
        peak as f64 / 1024.0,
        rss as f64 / 1024.0,
        cpu
    );
    let py = write(
        d,
        "aps.py",
        "import sys, time\nfrom apscheduler.schedulers.background import BackgroundScheduler\nfrom apscheduler.triggers.cron import CronTrigger\n\
         def job():\n    pass\ns = BackgroundScheduler(timezone='Europe/Berlin')\n\
         for line in open(sys.argv[1]):\n    m, h = line.split()\n    s.add_job(job, CronTrigger(minute=int(m), hour=int(h), timezone='Europe/Berlin'))\n\
         s.start()\nprint('started', flush=True)\ntime.sleep(60)\n",
    );
    let list: String = jobs.iter().map(|(m, h)| format!("{m} {h}\n")).collect();
    let list_file = write(d, "aps.txt", &list);
    let ok = Command::new("python3")
        .args(["-c", "import apscheduler"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        println!("scale      {n:>6} cron jobs: APScheduler column skipped (python3 -c 'import apscheduler' fails here)");
        return;
    }
    let mut child = Command::new("python3")
        .arg(&py)
        .arg(&list_file)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    std::thread::sleep(Duration::from_secs(2));
    let (rss, cpu) = rss_and_cpu(child.id());
    child.kill().unwrap();
    child.wait().unwrap();
    println!(
        "scale      {n:>6} cron jobs: APScheduler 3 after 2 s: {:.1} MiB resident, {:.2} s CPU",
        rss as f64 / 1024.0,
        cpu
    );
}

/// What `n` idle cron jobs cost a busy neighbour: a 20 ms interval job's runner CPU over 3 s (150 runs, after
/// the first second), with the `n` jobs beside it and alone. An input should cost what it touches, not a pass
/// over every job.
fn busy_neighbour(d: &Path, n: usize, cron_yaml: &str) {
    let tick = "  tick: { run: [/bin/true], trigger: { interval: 20ms } }\n";
    let with = write(d, &format!("busy{n}.yaml"), &format!("{cron_yaml}{tick}"));
    let alone = write(d, "busy-alone.yaml", &format!("jobs:\n{tick}"));
    let cpu_over_3s = |file: &Path| {
        runner_cpu(
            file,
            &["--progress", "never", "--state", "none"],
            Duration::from_secs(1),
            Duration::from_secs(3),
        )
    };
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for _ in 0..rounds().min(3) {
        a.push(cpu_over_3s(&with));
        b.push(cpu_over_3s(&alone));
    }
    a.sort_by(f64::total_cmp);
    b.sort_by(f64::total_cmp);
    println!(
        "scale      {n:>6} idle cron jobs beside a 20 ms interval job: runner CPU over 3 s {:.3} s, the interval job alone {:.3} s",
        a[a.len() / 2],
        b[b.len() / 2]
    );
}

/// One message every millisecond from a writer to a reader (python3 both, timestamps in the message): latency
/// p50 and p99 through a shell pipe and through a flowrun queue channel.
/// The hop's writer (one timestamped line a millisecond) and reader (p50 and p99 of the lateness, in us).
fn hop_scripts(d: &Path) -> (PathBuf, PathBuf) {
    let w = write(
        d,
        "w.py",
        "import time, sys\nn = int(sys.argv[1]); out = sys.stdout\nt0 = time.monotonic_ns()\n\
         for i in range(n):\n    target = t0 + i * 1_000_000\n    while True:\n        d = target - time.monotonic_ns()\n        if d <= 0: break\n        time.sleep(d / 1e9 if d > 200_000 else 0)\n    out.write(f'{time.monotonic_ns()}\\n'); out.flush()\n",
    );
    let r = write(
        d,
        "r.py",
        "import time, sys\nlat = []\nfor line in sys.stdin:\n    lat.append(time.monotonic_ns() - int(line))\nlat.sort()\n\
         p = lambda q: lat[int((len(lat)-1)*q)] / 1000\nprint(f'{p(0.5):.1f} {p(0.99):.1f}')\n",
    );
    (w, r)
}

/// The last line of a hop reader's output (after a `job#n | ` prefix): (p50, p99) in us.
fn hop_parse(text: &str) -> (f64, f64) {
    let line = text.lines().last().unwrap_or("0 0");
    let line = line.rsplit("| ").next().unwrap();
    let v: Vec<f64> = line
        .split_whitespace()
        .map(|x| x.parse().unwrap())
        .collect();
    (v[0], v[1])
}

fn hop(d: &Path) {
    let (w, r) = hop_scripts(d);
    let f = write(
        d,
        "hop.yaml",
        &format!(
            "channels: {{ q: {{}} }}\njobs:\n  w: {{ run: [python3, {}, \"3000\"], stdout: q }}\n  r: {{ run: [python3, {}], stdin: q }}\n",
            w.display(),
            r.display()
        ),
    );
    let parse = hop_parse;
    // The relay is the floor for anything that sits in a message's path: `cat` does nothing but read and write,
    // yet it pays the same second wake-up a queue pays.
    let (mut ours, mut theirs, mut relay) = (Vec::new(), Vec::new(), Vec::new());
    // Every round: the issue asks for the hop over 9 (`FLOWRUN_BENCH_ROUNDS=9`).
    for _ in 0..rounds() {
        let out = sh(&format!(
            "python3 {} 3000 | python3 {}",
            w.display(),
            r.display()
        ))
        .output()
        .unwrap();
        theirs.push(parse(&String::from_utf8_lossy(&out.stdout)));
        let out = sh(&format!(
            "python3 {} 3000 | cat | python3 {}",
            w.display(),
            r.display()
        ))
        .output()
        .unwrap();
        relay.push(parse(&String::from_utf8_lossy(&out.stdout)));
        let out = Command::new(flowrun())
            .arg(&f)
            .args(["--progress", "never"])
            .output()
            .unwrap();
        ours.push(parse(&String::from_utf8_lossy(&out.stdout)));
    }
    let med = |v: &[(f64, f64)], i: usize| {
        let mut x: Vec<f64> = v.iter().map(|p| if i == 0 { p.0 } else { p.1 }).collect();
        x.sort_by(f64::total_cmp);
        x[x.len() / 2]
    };
    let (o50, o99, t50, t99, c50, c99) = (
        med(&ours, 0),
        med(&ours, 1),
        med(&theirs, 0),
        med(&theirs, 1),
        med(&relay, 0),
        med(&relay, 1),
    );
    println!(
        "hop        1,000 msg/s, 3,000 messages: queue p50 {o50:.1} us p99 {o99:.1} us; shell pipe p50 {t50:.1} us p99 {t99:.1} us; ratio p50 {:.2} (goal <= 2) p99 {:.2} (goal <= 3); through `| cat |` p50 {c50:.1} us p99 {c99:.1} us ({:.2}x / {:.2}x the pipe; the queue {:.2}x / {:.2}x of it)",
        o50 / t50,
        o99 / t99,
        c50 / t50,
        c99 / t99,
        o50 / c50,
        o99 / c99
    );
}

/// Durable queues (issue 25): 10 M lines through a durable queue against a plain one; a hop at 1,000 msg/s;
/// what a commit's fsync costs here.
fn durable(d: &Path) {
    let yaml = |durable: bool| {
        format!("channels: {{ lines: {{ durable: {durable} }} }}\njobs:\n  gen: {{ run: seq 10000000, stdout: lines }}\n  count: {{ run: wc -l, stdin: lines }}\n")
    };
    let (plain, kept) = (
        write(d, "plain.yaml", &yaml(false)),
        write(d, "kept.yaml", &yaml(true)),
    );
    let state = d.join("durable-state");
    let mut ours = run(&kept);
    ours.arg("--state").arg(&state);
    let mut theirs = run(&plain);
    theirs.arg("--state").arg(d.join("plain-state"));
    compare(
        "durable",
        2.0,
        ours,
        theirs,
        "the same through a plain queue",
    );
    let store = state.join("queues/lines");
    let on_disk: u64 = std::fs::read_dir(&store)
        .map(|e| {
            e.flatten()
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0);
    println!(
        "durable    the store after 10 M messages done: {:.1} KiB on disk (goal < 1 MiB)",
        on_disk as f64 / 1024.0
    );
    let (w, r) = hop_scripts(d);
    let f = write(d, "hop-durable.yaml", &format!(
        "channels: {{ q: {{ durable: true }} }}\njobs:\n  w: {{ run: [python3, {}, \"3000\"], stdout: q }}\n  r: {{ run: [python3, {}], stdin: q }}\n",
        w.display(), r.display()));
    let mut hops: Vec<(f64, f64)> = (0..rounds().min(3))
        .map(|_| {
            let out = run(&f)
                .arg("--state")
                .arg(d.join("hop-state"))
                .output()
                .unwrap();
            hop_parse(&String::from_utf8_lossy(&out.stdout))
        })
        .collect();
    hops.sort_by(|a, b| a.1.total_cmp(&b.1));
    let (p50, p99) = hops[hops.len() / 2];
    println!("durable    hop at 1,000 msg/s, 3,000 messages: p50 {p50:.1} us p99 {p99:.1} us (goal p99 <= 15 ms)");
    fsync_cost(d);
    redis_streams(d);
}

/// For reference: 1 M messages through a Redis stream (XADD pipelined 1,000 at a time, then XREADGROUP and XACK
/// 1,000 at a time), against the same through a durable queue. A local `redis-server` on a free port, its
/// append-only file on with `appendfsync everysec` (its usual durable setting; `always` would sync every command).
/// Skipped without `redis-server`.
fn redis_streams(d: &Path) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = d.join("redis");
    std::fs::create_dir_all(&dir).unwrap();
    let Ok(mut server) = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--dir"])
        .arg(&dir)
        .args([
            "--appendonly",
            "yes",
            "--appendfsync",
            "everysec",
            "--save",
            "",
        ])
        .stdout(Stdio::null())
        .spawn()
    else {
        println!("durable    Redis Streams: skipped (no redis-server)");
        return;
    };
    let url = format!("redis://127.0.0.1:{port}/");
    let client = redis::Client::open(url.as_str()).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut con = loop {
        match client.get_connection() {
            Ok(con) => break con,
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => panic!("redis-server did not answer: {e}"),
        }
    };
    const N: usize = 1_000_000;
    let start = Instant::now();
    for block in (0..N).step_by(1000) {
        let mut pipe = redis::pipe();
        for i in block..block + 1000 {
            pipe.cmd("XADD").arg("s").arg("*").arg("m").arg(i).ignore();
        }
        let () = pipe.query(&mut con).unwrap();
    }
    let _: () = redis::cmd("XGROUP")
        .arg(&["CREATE", "s", "g", "0"])
        .query(&mut con)
        .unwrap();
    let mut read = 0;
    while read < N {
        let reply: redis::streams::StreamReadReply = redis::cmd("XREADGROUP")
            .arg(&["GROUP", "g", "c", "COUNT", "1000", "STREAMS", "s", ">"])
            .query(&mut con)
            .unwrap();
        let ids: Vec<String> = reply
            .keys
            .iter()
            .flat_map(|k| k.ids.iter().map(|m| m.id.clone()))
            .collect();
        read += ids.len();
        let _: u64 = redis::cmd("XACK")
            .arg("s")
            .arg("g")
            .arg(&ids)
            .query(&mut con)
            .unwrap();
    }
    let redis_time = start.elapsed();
    let _ = server.kill();
    let _ = server.wait();
    let f = write(
        d,
        "kept1m.yaml",
        "channels: { lines: { durable: true } }\njobs:\n  gen: { run: seq 1000000, stdout: lines }\n  count: { run: wc -l, stdin: lines }\n",
    );
    let ours = time(run(&f).arg("--state").arg(d.join("kept1m-state")));
    println!(
        "durable    1 M messages: a durable queue {:.3}s; Redis Streams (XADD, XREADGROUP, XACK, pipelined by 1,000; AOF everysec) {:.3}s: {:.0}x",
        ours.as_secs_f64(),
        redis_time.as_secs_f64(),
        redis_time.as_secs_f64() / ours.as_secs_f64()
    );
}

/// A commit of one small message to a durable queue's store, with and without its sync, 1,000 times each.
fn fsync_cost(d: &Path) {
    use flowrun::durable::{local::LocalLog, DurableStore};
    let mut log = LocalLog::open(&d.join("fsync-store")).unwrap();
    let mut timed = |sync: bool| {
        let mut t: Vec<Duration> = (0..1000)
            .map(|i| {
                let start = Instant::now();
                log.append(format!("{i}\n").as_bytes(), 1).unwrap();
                let staged = log.stage().unwrap();
                if sync {
                    staged().unwrap();
                }
                log.settle().unwrap();
                start.elapsed()
            })
            .collect();
        t.sort();
        (t[500], t[990])
    };
    let (with50, with99) = timed(true);
    let (no50, no99) = timed(false);
    println!(
        "durable    one commit: with fsync p50 {:.0} us p99 {:.0} us; written, not synced p50 {:.0} us p99 {:.0} us",
        with50.as_secs_f64() * 1e6, with99.as_secs_f64() * 1e6, no50.as_secs_f64() * 1e6, no99.as_secs_f64() * 1e6
    );
}

/// The cost of the state store (issue 13): 10,000 `each` runs of `/bin/true` and a 100 ms interval's lateness,
/// each with a state directory and with `--state none`, interleaved.
fn state(d: &Path) {
    let f = write(d, "each10k.yaml", "executors: { pool: { max_workers: 4 } }\nchannels: { items: {} }\njobs:\n  gen: { run: seq 10000, stdout: items }\n  work: { run: [/bin/true], trigger: { each: items }, executor: pool, max_instances: 4 }\n");
    let (mut with, mut without) = (Vec::new(), Vec::new());
    for i in 0..rounds() {
        let dir = d.join(format!("state-each-{i}"));
        with.push(time(run(&f).arg("--state").arg(&dir)));
        without.push(time(run(&f).args(["--state", "none"])));
    }
    let (a, b) = (median(with), median(without));
    println!(
        "state      10,000 each runs of /bin/true: with state {:.3}s, --state none {:.3}s: ratio {:.3} (goal <= 1.05); history costs {:.1} us a run",
        a.as_secs_f64(),
        b.as_secs_f64(),
        a.as_secs_f64() / b.as_secs_f64(),
        (a.as_secs_f64() - b.as_secs_f64()) * 1e6 / 10_000.0
    );
    let f = write(
        d,
        "state-interval.yaml",
        "jobs:\n  tick: { run: [/bin/true], trigger: { interval: 100ms } }\n",
    );
    let (mut with, mut without) = (Vec::new(), Vec::new());
    for i in 0..4 {
        // A fresh state each time: with the same one, the second run's first firing would be a catch-up of the
        // firings due between the two runs (late by design).
        let dir = d.join(format!("state-interval-{i}"));
        with.extend(lateness_with(&f, 10, &["--state", dir.to_str().unwrap()]));
        without.extend(lateness_with(&f, 10, &["--state", "none"]));
    }
    with.sort_by(f64::total_cmp);
    without.sort_by(f64::total_cmp);
    print_lateness("interval 100ms, with state", &with);
    print_lateness("interval 100ms, --state none", &without);
}

/// The control API under load (issue: a flood of API requests made timers late and the runner huge): a 100 ms
/// interval's lateness for 10 s with `--listen` idle, then while 1,000 clients hammer `GET /api/v1/status`, then
/// while 64 clients ask `history?limit=100000` of a store of 100,000 rows; with the runner's peak resident memory.
fn api(d: &Path) {
    let f = write(
        d,
        "api-interval.yaml",
        "jobs:\n  tick: { run: [/bin/true], trigger: { interval: 100ms } }\n",
    );
    let big = api_state_of_100k_rows(d);
    let mut phases = Vec::new();
    for (i, (name, clients, path)) in [
        ("idle", 0, ""),
        ("1,000 clients on /status", 1000, "/api/v1/status"),
        ("64 clients on history", 64, "/api/v1/history?limit=100000"),
    ]
    .into_iter()
    .enumerate()
    {
        // A fresh state for each phase but the history one (the same state again would make the first firing a
        // catch-up of those due meanwhile, late by design); the history's state never ran `tick`.
        let state = match clients {
            64 => big.clone(),
            _ => d.join(format!("api-state-{i}")),
        };
        let (late, peak, answers) = lateness_under_load(&f, &state, clients, path);
        phases.push((name, late, peak, answers));
    }
    let idle_p99 = pct(&phases[0].1, 0.99);
    for (name, late, peak, answers) in &phases {
        let p99 = pct(late, 0.99);
        println!(
            "api        {name:<26} runs {:>4}   p50 {:>6.3} ms   p99 {:>7.3} ms ({:.1}x idle, goal <= 2x {})   peak RSS {:>6.1} MiB   answers {answers}",
            late.len(),
            pct(late, 0.5),
            p99,
            p99 / idle_p99,
            if p99 <= 2.0 * idle_p99 { "ok" } else { "MISSED" },
            *peak as f64 / 1024.0,
        );
    }
}

/// How long each phase of `api` lasts: `FLOWRUN_BENCH_API_SECS`, else 10 s (about 100 firings: a p99 of 100
/// samples is the second worst; 30 s gives it more to stand on).
fn api_secs() -> u64 {
    std::env::var("FLOWRUN_BENCH_API_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10)
}

/// A state directory whose history holds 100,000 rows (a job `old` the interval workflow does not have).
fn api_state_of_100k_rows(d: &Path) -> PathBuf {
    let state = d.join("api-state-100k");
    let f = write(
        d,
        "api-old.yaml",
        "jobs:\n  old: { run: [/bin/true], trigger: start }\n",
    );
    time(run(&f).arg("--state").arg(&state));
    let mut db = rusqlite::Connection::open(state.join("state.db")).unwrap();
    let tx = db.transaction().unwrap();
    // Recent: the runner prunes history older than its retention when it starts.
    let at = |s: i64| {
        (chrono::Utc::now() - chrono::Duration::seconds(s))
            .to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
    };
    for run in 2..=100_000u64 {
        let ago = 100_001 - run as i64;
        tx.execute(
            "INSERT INTO runs (job, run, trigger, scheduled, started, ended, duration_ms, code, outcome, pid, log)
             VALUES ('old', ?1, 'cron `* * * * *` (UTC)', ?2, ?2, ?3, 1000, 0, 'succeeded', 4242, ?4)",
            rusqlite::params![run, at(ago + 1), at(ago), format!("/var/lib/flowrun/logs/old/{run}.log")],
        )
        .unwrap();
    }
    tx.commit().unwrap();
    state
}

/// Run `file` for `api_secs()` with `--listen` and `--state state` while `clients` threads (none: idle) each ask `path`
/// over and over, a new connection each time; the lateness of its time firings, its peak resident memory (KiB)
/// and how many answers the clients got (by status code).
fn lateness_under_load(
    file: &Path,
    state: &Path,
    clients: usize,
    path: &str,
) -> (Vec<f64>, u64, String) {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let listen = format!("127.0.0.1:{port}");
    let extra = ["--listen", &listen, "--state", state.to_str().unwrap()];
    let mut child = Command::new(flowrun())
        .arg(file)
        .args(["--log-format", "json", "--for", &format!("{}s", api_secs())])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let stderr = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || lateness_of(stderr));
    let stop = Arc::new(AtomicBool::new(false));
    let load: Vec<_> = (0..clients)
        .map(|_| {
            let (stop, path) = (stop.clone(), path.to_string());
            std::thread::Builder::new()
                .stack_size(64 * 1024)
                .spawn(move || api_client(port, &path, &stop))
                .unwrap()
        })
        .collect();
    let mut peak = 0;
    while child.try_wait().unwrap().is_none() {
        peak = peak.max(std::panic::catch_unwind(|| peak_rss_kib(pid)).unwrap_or(0));
        std::thread::sleep(Duration::from_millis(50));
    }
    stop.store(true, Ordering::Relaxed);
    let (mut answers, mut bytes) = (std::collections::BTreeMap::<u16, u64>::new(), 0);
    for client in load {
        let (counts, read) = client.join().unwrap();
        bytes += read;
        for (status, n) in counts {
            *answers.entry(status).or_default() += n;
        }
    }
    let mut answers: Vec<String> = answers.iter().map(|(s, n)| format!("{s}: {n}")).collect();
    answers.push(format!("{:.0} MiB read", bytes as f64 / 1048576.0));
    (reader.join().unwrap(), peak, answers.join(", "))
}

/// The lateness (ms) of every time firing in a JSON event log, sorted.
fn lateness_of(stderr: std::process::ChildStderr) -> Vec<f64> {
    let mut late = Vec::new();
    for line in BufReader::new(stderr).lines() {
        let line = line.unwrap();
        if line.starts_with(r#"{"event":"run.start""#) {
            let v: serde_json::Value = serde_json::from_str(&line).unwrap();
            late.push(v["lateness_us"].as_f64().unwrap() / 1000.0);
        }
    }
    late.sort_by(f64::total_cmp);
    late
}

/// One client: `GET path` on a new connection, again and again until `stop`; the count of each status (0: no
/// answer: refused, reset or timed out) and the bytes read. Every wait is bounded, so the client ends soon after
/// `stop`.
fn api_client(
    port: u16,
    path: &str,
    stop: &std::sync::atomic::AtomicBool,
) -> (Vec<(u16, u64)>, u64) {
    use std::io::{Read, Write};
    let mut counts = std::collections::HashMap::<u16, u64>::new();
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let request = format!("GET {path} HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n");
    let (mut answer, mut bytes) = (Vec::new(), 0);
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        let status = (|| {
            let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
            s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
            s.write_all(request.as_bytes()).ok()?;
            answer.clear();
            s.read_to_end(&mut answer).ok()?;
            bytes += answer.len() as u64;
            std::str::from_utf8(answer.get(9..12)?).ok()?.parse().ok()
        })();
        if status.is_none() {
            // The runner is not up yet, or is gone: do not spin.
            std::thread::sleep(Duration::from_millis(20));
        }
        *counts.entry(status.unwrap_or(0)).or_default() += 1;
    }
    (counts.into_iter().collect(), bytes)
}

/// A `redis-server` on a free port (no persistence: the cluster's figures, not the disk's), or `None` without one.
fn redis_on_free_port(dir: &Path) -> Option<(std::process::Child, String)> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    std::fs::create_dir_all(dir).unwrap();
    let server = Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
        ])
        .arg(dir)
        .stdout(Stdio::null())
        .spawn()
        .ok()?;
    let url = format!("redis://127.0.0.1:{port}/0");
    let client = redis::Client::open(url.as_str()).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while client.get_connection().is_err() {
        assert!(Instant::now() < deadline, "redis-server did not answer");
        std::thread::sleep(Duration::from_millis(20));
    }
    Some((server, url))
}

/// Several runners on one Redis (SPEC §9): the lateness a claim adds to a 100 ms interval (one runner with the
/// store against the embedded one, then three runners sharing it); 1,000 jobs every second claimed by three
/// runners (firings a second, lateness); 10,000 idle cron jobs on three runners (each runner's memory, Redis's).
fn cluster(d: &Path) {
    let Some((mut server, url)) = redis_on_free_port(&d.join("cluster-redis")) else {
        println!("cluster    skipped (no redis-server)");
        return;
    };
    let f = write(
        d,
        "cluster-interval.yaml",
        "name: lat\njobs:\n  tick: { run: [/bin/true], trigger: { interval: 100ms } }\n",
    );
    for round in 0..2 {
        let state = d.join(format!("cluster-embedded-{round}"));
        let embedded = lateness_with(&f, 20, &["--state", state.to_str().unwrap()]);
        print_lateness("interval 100ms, embedded", &embedded);
        let state = d.join(format!("cluster-one-{round}"));
        let one = lateness_with(
            &f,
            20,
            &[
                "--state",
                state.to_str().unwrap(),
                "--store",
                &url,
                "--runner-id",
                &format!("one{round}"),
            ],
        );
        print_lateness("interval 100ms, Redis store", &one);
    }
    // Three runners share the firings: the lateness of the runs, wherever they ran.
    let three = run_cluster(d, &f, &url, 3, 20);
    print_lateness("interval 100ms, 3 runners", &three.0);
    let f = write(
        d,
        "cluster-thousand.yaml",
        &format!(
            "name: thousand\n{}",
            many_jobs(1000, "{ cron: '* * * * * *' }")
        ),
    );
    let (late, runs, _) = run_cluster(d, &f, &url, 3, 10);
    print_lateness("1,000 jobs every 1s, 3 runners", &late);
    println!("cluster    1,000 jobs every 1s on 3 runners for 10 s: {runs} runs ({:.0} firings a second claimed and run)", runs as f64 / 10.0);
    let f = write(
        d,
        "cluster-idle.yaml",
        &format!("name: idle\n{}", many_jobs(10_000, "{ cron: '0 0 1 1 *' }")),
    );
    let (_, _, rss) = run_cluster(d, &f, &url, 3, 5);
    let client = redis::Client::open(url.as_str()).unwrap();
    let mut con = client.get_connection().unwrap();
    let info: String = redis::cmd("INFO").arg("memory").query(&mut con).unwrap();
    let used = info
        .lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or(0);
    println!(
        "cluster    10,000 idle cron jobs on 3 runners: runners {} MiB resident; Redis used_memory {:.1} MiB (all the benches' keys)",
        rss.iter().map(|r| format!("{:.1}", *r as f64 / 1024.0)).collect::<Vec<_>>().join(" / "),
        used as f64 / 1024.0 / 1024.0
    );
    shared_queue(d, &url);
    let _ = server.kill();
    let _ = server.wait();
}

/// 200,000 messages through a durable queue into `each` workers (batch 1,000): one runner with its local store,
/// against one and three runners sharing the queue through Redis (time until every message is in the workers'
/// output; a shared queue never closes, so its runners are stopped after).
fn shared_queue(d: &Path, url: &str) {
    const N: usize = 200_000;
    // The producer fires once for the cluster (an `at`, claimed); times are counted from that instant.
    let text = |name: &str, at: &str| {
        format!(
            "name: {name}\nchannels: {{ q: {{ durable: true, capacity: 20000 }} }}\njobs:\n  produce:\n    run: seq 1 {N}\n    stdout: q\n    trigger: {{ at: \"{at}\" }}\n  work:\n    run: cat >> out-$RUNNER.txt\n    trigger: {{ each: q, batch: 1000 }}\n    max_instances: 2\n"
        )
    };
    let soon = || {
        let lead = Duration::from_millis(1500);
        let at = chrono::Utc::now() + chrono::Duration::from_std(lead).unwrap();
        (at.to_rfc3339(), Instant::now() + lead)
    };
    let lines = |dir: &Path| -> usize {
        std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with("out-"))
            .map(|e| std::fs::read(e.path()).map_or(0, |b| memchr::memchr_iter(b'\n', &b).count()))
            .sum()
    };
    for round in 0..2 {
        let dir = d.join(format!("sq-local-{round}"));
        std::fs::create_dir_all(&dir).unwrap();
        let (at, start) = soon();
        let f = write(&dir, "q.yaml", &text(&format!("sqlocal{round}"), &at));
        let status = Command::new(flowrun())
            .arg(&f)
            .arg("--state")
            .arg(dir.join("s"))
            .args(["--progress", "never"])
            .env("RUNNER", "one")
            .stderr(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success());
        let local = start.elapsed();
        assert_eq!(lines(&dir), N);
        for runners in [1usize, 3] {
            let dir = d.join(format!("sq-{runners}-{round}"));
            std::fs::create_dir_all(&dir).unwrap();
            let (at, start) = soon();
            let f = write(&dir, "q.yaml", &text(&format!("sq{runners}x{round}"), &at));
            let mut children: Vec<std::process::Child> = (0..runners)
                .map(|i| {
                    Command::new(flowrun())
                        .arg(&f)
                        .arg("--state")
                        .arg(dir.join(format!("s{i}")))
                        .args([
                            "--store",
                            url,
                            "--runner-id",
                            &format!("r{i}"),
                            "--progress",
                            "never",
                        ])
                        .env("RUNNER", format!("r{i}"))
                        .stderr(Stdio::null())
                        .spawn()
                        .unwrap()
                })
                .collect();
            while lines(&dir) < N {
                std::thread::sleep(Duration::from_millis(20));
            }
            let shared = start.elapsed();
            for c in &mut children {
                // SAFETY: a signal to our own child.
                unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
                c.wait().unwrap();
            }
            println!(
                "cluster    {N} messages through a durable queue into `each` workers: local store {:.2}s; shared through Redis, {runners} runner(s) {:.2}s ({:.2}x)",
                local.as_secs_f64(),
                shared.as_secs_f64(),
                shared.as_secs_f64() / local.as_secs_f64()
            );
        }
    }
}

/// Run `n` runners of `file` on the store for `secs` seconds: the lateness of every run (ms, sorted), how many
/// runs, and each runner's resident memory (KiB) just before its end.
fn run_cluster(
    d: &Path,
    file: &Path,
    url: &str,
    n: usize,
    secs: u64,
) -> (Vec<f64>, usize, Vec<u64>) {
    let stem = file.file_stem().unwrap().to_string_lossy().into_owned();
    let children: Vec<std::process::Child> = (0..n)
        .map(|i| {
            Command::new(flowrun())
                .arg(file)
                .args([
                    "--log-format",
                    "json",
                    "--progress",
                    "never",
                    "--for",
                    &format!("{secs}s"),
                ])
                .arg("--state")
                .arg(d.join(format!("cluster-{stem}-{i}")))
                .args(["--store", url, "--runner-id", &format!("{stem}-{i}")])
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let pids: Vec<u32> = children.iter().map(|c| c.id()).collect();
    // Each runner's memory a little before its end.
    let sampler = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(secs.saturating_sub(1).max(1)));
        pids.iter().map(|p| rss_and_cpu(*p).0).collect::<Vec<u64>>()
    });
    let readers: Vec<_> = children
        .into_iter()
        .map(|mut child| {
            std::thread::spawn(move || {
                let mut late = Vec::new();
                for line in BufReader::new(child.stderr.take().unwrap()).lines() {
                    let line = line.unwrap();
                    if line.starts_with(r#"{"event":"run.start""#) {
                        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
                        late.push(v["lateness_us"].as_f64().unwrap_or(0.0) / 1000.0);
                    }
                }
                child.wait().unwrap();
                late
            })
        })
        .collect();
    let mut late: Vec<f64> = readers
        .into_iter()
        .flat_map(|r| r.join().unwrap())
        .collect();
    late.sort_by(f64::total_cmp);
    let runs = late.len();
    (late, runs, sampler.join().unwrap())
}
