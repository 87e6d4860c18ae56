//! A real Prometheus server (Debian's `prometheus`, installed by `.ci/run`)
//! scrapes both services every second with deploy/monitoring's rules
//! loaded: its HTTP API shows both targets up, series of both services, the
//! rule groups, and alerts pending on the real series (the control-service's
//! fail2ban socket does not exist; the sample database is old).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    path::Path,
    process::{Child, Command, Stdio},
    time::Duration,
};

use bangui_e2e::{ControlService, GeoService, workspace_root};
use serde_json::Value;

/// The Prometheus server of one test, killed when dropped.
struct Prometheus {
    child: Child,
    addr: std::net::SocketAddr,
    _dir: tempfile::TempDir,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Prometheus {
    /// Starts `prometheus` scraping `geo` and `control` every second, with
    /// the rules file evaluated every second.
    fn start(geo: &GeoService, control: &ControlService) -> Self {
        let found = Command::new("prometheus").arg("--version").output();
        assert!(
            found.as_ref().is_ok_and(|o| o.status.success()),
            "the prometheus server is missing: run .ci/run (it installs Debian's `prometheus` package): {found:?}"
        );
        let dir = tempfile::tempdir().unwrap();
        let rules = workspace_root().join("deploy/monitoring/bangui-rules.yaml");
        let config = format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
             rule_files:\n  - {rules}\n\
             scrape_configs:\n\
             \x20 - job_name: geo-service\n    static_configs:\n      - targets: ['{geo}']\n\
             \x20 - job_name: control-service\n    static_configs:\n      - targets: ['{control}']\n",
            rules = rules.display(),
            geo = geo.metrics_addr,
            control = control.metrics_addr,
        );
        let config_path = dir.path().join("prometheus.yml");
        std::fs::write(&config_path, config).unwrap();
        // A free port: bound by the OS, released, handed to prometheus.
        let addr = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        let log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
            .arg(format!("--web.listen-address={addr}"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn prometheus");
        Self { child, addr, _dir: dir }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self._dir.path().join("prometheus.log")).unwrap_or_default()
    }

    /// `GET path` on the HTTP API: the JSON body, or None while the server
    /// does not answer yet. HTTP/1.0, so the body is never chunked.
    async fn get(&self, path: &str) -> Option<Value> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = tokio::net::TcpStream::connect(self.addr).await.ok()?;
        stream.write_all(format!("GET {path} HTTP/1.0\r\nHost: {}\r\n\r\n", self.addr).as_bytes()).await.ok()?;
        let mut response = String::new();
        stream.read_to_string(&mut response).await.ok()?;
        let (head, body) = response.split_once("\r\n\r\n")?;
        if !head.starts_with("HTTP/1.0 200") {
            return None;
        }
        let json: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{path}: {e}: {body}"));
        assert_eq!(json["status"], "success", "{path}: {json}");
        Some(json["data"].clone())
    }

    /// The instant vector of `query` (a metric name or a selector without
    /// characters that need escaping in a URL).
    async fn query(&self, query: &str) -> Vec<Value> {
        match self.get(&format!("/api/v1/query?query={query}")).await {
            Some(data) => data["result"].as_array().cloned().unwrap_or_default(),
            None => Vec::new(),
        }
    }

    /// Polls until `check` holds (up to 30 s); panics with the last answer
    /// and the server's log.
    async fn until<F, Fut>(&self, what: &str, mut check: F) -> Value
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = (bool, Value)>,
    {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let (ok, seen) = check().await;
            if ok {
                return seen;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "timed out waiting for {what}; last answer: {seen}\nprometheus log:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

fn value(sample: &Value) -> f64 {
    sample["value"][1].as_str().unwrap().parse().unwrap()
}

fn by_job<'a>(samples: &'a [Value], job: &str) -> Vec<&'a Value> {
    samples.iter().filter(|s| s["metric"]["job"] == job).collect()
}

#[tokio::test]
async fn a_real_prometheus_scrapes_both_services_and_loads_the_rules() {
    let geo = GeoService::start(&["--mmdb", "builtin:sample"]);
    let missing = tempfile::tempdir().unwrap();
    let socket = missing.path().join("fail2ban.sock");
    let control = ControlService::start(&[
        "--geo-endpoint",
        &geo.endpoint(),
        "--fail2ban-socket",
        socket.to_str().unwrap(),
        "--probe-interval",
        "1s",
    ]);
    let prometheus = Prometheus::start(&geo, &control);

    // Both targets up.
    let up = prometheus
        .until("both targets up", || async {
            let up = prometheus.query("up").await;
            let ok =
                ["geo-service", "control-service"].iter().all(|job| by_job(&up, job).iter().any(|s| value(s) == 1.0));
            (ok, Value::Array(up))
        })
        .await;
    let up = up.as_array().unwrap();
    assert_eq!(up.len(), 2, "{up:?}");
    for (job, addr) in [("geo-service", geo.metrics_addr), ("control-service", control.metrics_addr)] {
        assert_eq!(by_job(up, job)[0]["metric"]["instance"], addr.to_string().as_str(), "{up:?}");
    }

    // A geo series: the sample database set is loaded.
    let loaded = prometheus
        .until("geo_databases_loaded", || async {
            let v = prometheus.query("geo_databases_loaded").await;
            (v.iter().any(|s| value(s) >= 1.0), Value::Array(v))
        })
        .await;
    assert_eq!(loaded[0]["metric"]["job"], "geo-service", "{loaded}");

    // Control series: fail2ban is down (no socket), the geo-service and the
    // database are up, and the only replica (SQLite) leads.
    let deps = prometheus
        .until("control_dependency_up for fail2ban, geo and database", || async {
            let v = prometheus.query("control_dependency_up").await;
            let dep = |name: &str| v.iter().find(|s| s["metric"]["dependency"] == name).map(value);
            let ok = dep("fail2ban") == Some(0.0) && dep("geo") == Some(1.0) && dep("database") == Some(1.0);
            (ok, Value::Array(v))
        })
        .await;
    assert!(deps.as_array().unwrap().iter().all(|s| s["metric"]["job"] == "control-service"), "{deps}");
    prometheus
        .until("control_is_leader = 1", || async {
            let v = prometheus.query("control_is_leader").await;
            (v.len() == 1 && value(&v[0]) == 1.0, Value::Array(v))
        })
        .await;

    // Every group of the rules file is loaded, with every rule in it.
    let file: String = std::fs::read_to_string(workspace_root().join("deploy/monitoring/bangui-rules.yaml")).unwrap();
    let expected_groups: Vec<&str> = file.lines().filter_map(|l| l.trim().strip_prefix("- name: ")).collect();
    let expected_rules = file.lines().filter(|l| {
        let l = l.trim();
        l.starts_with("- alert: ") || l.starts_with("- record: ")
    });
    let expected_rules = expected_rules.count();
    assert_eq!(expected_groups, ["bangui-targets", "bangui-control", "bangui-geo"]);
    let rules = prometheus
        .until("/api/v1/rules", || async {
            let data = prometheus.get("/api/v1/rules").await.unwrap_or(Value::Null);
            let ok = data["groups"].as_array().is_some_and(|g| g.len() == expected_groups.len());
            (ok, data)
        })
        .await;
    let groups = rules["groups"].as_array().unwrap();
    // (The API lists groups by name.)
    let mut names: Vec<&str> = groups.iter().map(|g| g["name"].as_str().unwrap()).collect();
    let mut expected_sorted = expected_groups.clone();
    names.sort_unstable();
    expected_sorted.sort_unstable();
    assert_eq!(names, expected_sorted, "{rules}");
    let loaded_rules: usize = groups.iter().map(|g| g["rules"].as_array().unwrap().len()).sum();
    assert_eq!(loaded_rules, expected_rules, "{rules}");
    for group in groups {
        assert!(Path::new(group["file"].as_str().unwrap()).ends_with("deploy/monitoring/bangui-rules.yaml"), "{group}");
    }

    // The rules evaluate against the real series: fail2ban down goes
    // pending (it fires after 2 minutes); so does the stale-database alert
    // (the sample database is built at a fixed time in 2023); a leader is
    // there, so no BanguiNoLeader; the recording rule carries the term.
    // (A probe or the first scrapes may have been early: the others must
    // be quiet once the rules see the steady state.)
    const QUIET: [&str; 4] = ["BanguiNoLeader", "BanguiTargetDown", "BanguiDependencyDown", "BanguiSeveralLeaders"];
    let alerts = prometheus
        .until("BanguiFail2banUnavailable and BanguiGeoDatabaseStale pending, the others quiet", || async {
            let data = prometheus.get("/api/v1/alerts").await.unwrap_or(Value::Null);
            let ok = data["alerts"].as_array().is_some_and(|a| {
                let pending =
                    |name: &str| a.iter().any(|x| x["labels"]["alertname"] == name && x["state"] == "pending");
                pending("BanguiFail2banUnavailable")
                    && pending("BanguiGeoDatabaseStale")
                    && !a.iter().any(|x| QUIET.iter().any(|q| x["labels"]["alertname"] == *q))
            });
            (ok, data)
        })
        .await;
    let alerts = alerts["alerts"].as_array().unwrap();
    let fail2ban = alerts.iter().find(|a| a["labels"]["alertname"] == "BanguiFail2banUnavailable").unwrap();
    assert_eq!(fail2ban["labels"]["instance"], control.metrics_addr.to_string().as_str(), "{fail2ban}");
    assert_eq!(fail2ban["labels"]["severity"], "critical", "{fail2ban}");
    assert_eq!(fail2ban["labels"]["dependency"], "fail2ban", "{fail2ban}");
    let stale = alerts.iter().find(|a| a["labels"]["alertname"] == "BanguiGeoDatabaseStale").unwrap();
    assert_eq!(stale["labels"]["instance"], geo.metrics_addr.to_string().as_str(), "{stale}");
    assert_eq!(stale["labels"]["database"], "builtin:sample", "{stale}");
    prometheus
        .until("bangui:control_leader_term:max", || async {
            let v = prometheus.query("bangui:control_leader_term:max").await;
            (v.len() == 1 && value(&v[0]) >= 1.0, Value::Array(v))
        })
        .await;
}
