//! The demo path: `scripts/platform.sh demo` (what `make demo` runs) on free ports, its own
//! run directory and its own PostgreSQL schema, so it never touches a demo the user runs.
//! Within a bounded time every stage has processed records: data flows from the connector's
//! simulator (rows, and the bookings and in-app channels it publishes) through bronze,
//! silver and gold to the rule evaluator, whose alerts the notification sender delivers in
//! app, and the audit writer stores the stages' audit events. Then the demo and its platform
//! are stopped.

use std::{
    net::TcpListener,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use testkit::{counter_total, free_port, repo_root};

/// The demo's stages, in the order of their metrics ports (scripts/platform.sh).
const STAGES: [&str; 6] = testbed::STAGE_BINARIES;

/// A first port with the `n - 1` after it free too, below the kernel's ephemeral range: the
/// stages bind them one after the other over tens of seconds, and a port taken from the
/// ephemeral range meanwhile (any other test's `free_port`) must not be one of them.
fn free_run_of_ports(n: u16) -> u16 {
    let low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    let (from, to) = (10_000u16, low.saturating_sub(n).max(10_001));
    // Start somewhere different for each run, so two runs at once do not race for a base.
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let seed = std::process::id() ^ nanos;
    let span = u32::from(to - from);
    for attempt in 0..200u32 {
        let base = from + u16::try_from((seed.wrapping_add(attempt * 7919)) % span).unwrap_or(0);
        let held: Vec<_> = (base..base + n)
            .map_while(|p| TcpListener::bind(("127.0.0.1", p)).ok())
            .collect();
        if held.len() == usize::from(n) {
            return base;
        }
    }
    panic!("no run of {n} free ports below {low}");
}

/// The demo's platform settings, and `platform.sh down` with them when the test ends.
struct Demo {
    env: Vec<(&'static str, String)>,
    child: Option<Child>,
    run_dir: tempfile::TempDir,
}

impl Demo {
    fn script(&self, arg: &str) -> Command {
        let mut cmd = Command::new("bash");
        cmd.arg(repo_root().join("scripts/platform.sh"))
            .arg(arg)
            .current_dir(repo_root())
            .envs(self.env.iter().map(|(k, v)| (*k, v.as_str())));
        cmd
    }

    fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.run_dir.path().join(format!("{name}.log"))).unwrap_or_default()
    }

    fn logs(&self) -> String {
        let demo = self.log("demo-script");
        let stages: String = STAGES
            .iter()
            .chain(&["connector", "broker"])
            .map(|s| {
                let log = self.log(s);
                let tail: Vec<&str> = log.lines().rev().take(8).collect();
                format!(
                    "--- {s} ---\n{}\n",
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                )
            })
            .collect();
        format!("--- demo ---\n{demo}\n{stages}")
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = self
            .script("down")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = Command::new("psql")
            .arg("host=127.0.0.1 user=postgres dbname=postgres")
            .arg("-qc")
            .arg(format!(
                "DROP SCHEMA IF EXISTS \"{}\" CASCADE",
                self.env
                    .iter()
                    .find(|(k, _)| *k == "ADPIPE_DEMO_SCHEMA")
                    .map_or("", |(_, v)| v.as_str())
            ))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

#[test]
fn make_demo_moves_data_through_every_stage() {
    let run_dir = tempfile::tempdir().expect("run dir");
    let metrics = free_run_of_ports(STAGES.len() as u16);
    let env = vec![
        ("ADPIPE_BROKER_PORT", free_port().expect("port").to_string()),
        (
            "ADPIPE_REGISTRY_PORT",
            free_port().expect("port").to_string(),
        ),
        ("ADPIPE_DEMO_METRICS_PORT", metrics.to_string()),
        ("ADPIPE_RUN_DIR", run_dir.path().display().to_string()),
        (
            "ADPIPE_REGISTRY_DATA",
            run_dir.path().join("registry.json").display().to_string(),
        ),
        (
            "ADPIPE_DEMO_SCHEMA",
            format!("demo_test_{}", std::process::id()),
        ),
        ("ADPIPE_DEMO_RATE", "200".to_owned()),
        ("ADPIPE_DEMO_SECONDS", "600".to_owned()),
    ];
    let mut demo = Demo {
        env,
        child: None,
        run_dir,
    };
    let log = std::fs::File::create(demo.run_dir.path().join("demo-script.log")).expect("log");
    let started = Instant::now();
    demo.child = Some(
        demo.script("demo")
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .expect("the demo starts"),
    );

    // Every stage that consumes the simulator's traffic has processed records.
    let flowing = STAGES;
    let deadline = started + Duration::from_secs(300);
    let mut processed = vec![0.0; STAGES.len()];
    loop {
        for (i, p) in processed.iter_mut().enumerate() {
            *p = counter_total(metrics + i as u16, runtime::metrics::PROCESSED).unwrap_or(0.0);
        }
        let moving = STAGES
            .iter()
            .zip(&processed)
            .filter(|(s, n)| flowing.contains(s) && **n > 0.0)
            .count();
        let delivered = counter_total(metrics + 4, "adpipe_notifications_sent").unwrap_or(0.0);
        if moving == flowing.len() && delivered > 0.0 {
            break;
        }
        if let Some(status) = demo
            .child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
        {
            panic!(
                "the demo ended ({status}) before data flowed; logs:\n{}",
                demo.logs()
            );
        }
        assert!(
            Instant::now() < deadline,
            "not every stage processed records, or no notification was delivered, within 300 s: \
             {:?}; logs:\n{}",
            STAGES.iter().zip(&processed).collect::<Vec<_>>(),
            demo.logs()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    println!(
        "data through every stage and a first notification {:.0} s after `platform.sh demo` \
         started (build included): {:?}",
        started.elapsed().as_secs_f64(),
        STAGES.iter().zip(&processed).collect::<Vec<_>>()
    );
    // The simulator's bookings under- and over-pace: alerts were raised, and delivered in app.
    let delivered = counter_total(metrics + 4, "adpipe_notifications_sent").unwrap_or(0.0);
    let raised = counter_total(metrics + 3, "adpipe_alerts").unwrap_or(0.0);
    println!("{raised} alerts raised, {delivered} notifications delivered");
    assert!(
        raised > 0.0,
        "the rule evaluator raised alerts; logs:\n{}",
        demo.logs()
    );
}
