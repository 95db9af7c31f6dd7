//! The shipped dashboard and alerts against a real Prometheus (Debian's `prometheus`
//! package, installed by scripts/deps.sh) scraping a running imgedge after real traffic:
//! hits, misses, rejections, origin errors, a rate limit, a purge, usage flushed to the
//! spool and delivered to PostgreSQL. `promtool` checks the rule files; Prometheus loads
//! and evaluates them; then every PromQL expression of the rules and of the Grafana
//! dashboard (panels and template variables) is evaluated through the HTTP API, and so is
//! every series selector inside them, so a renamed metric leaves no panel silently empty.
//! Every metric the server exports must be on the dashboard (or in a rule) and in the
//! README's metrics table.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::{
    free_port, images_dir, sign, HttpOrigin, Imgedge, S3Server, KEY, S3_ACCESS_KEY, S3_SECRET_KEY, SALT,
};
use crate::pg::Pg;

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn rule_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(repo("deploy/prometheus"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yml"))
        .collect();
    files.sort();
    files
}

/// `name` on `PATH`.
fn which(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?).map(|d| d.join(name)).find(|p| p.is_file())
}

/// A child process killed on drop.
struct Reaper(Child);

impl Drop for Reaper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One expression to evaluate, and where it comes from.
#[derive(Debug)]
struct Expr {
    origin: String,
    promql: String,
    /// Alerts are conditions: healthy, they return nothing; their selectors must still.
    must_return_data: bool,
}

/// Every expression of the rule files.
fn rule_exprs() -> (Vec<Expr>, usize) {
    let mut out = Vec::new();
    let mut rules = 0;
    for file in rule_files() {
        let doc: serde_yaml::Value = serde_yaml::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
        for group in doc["groups"].as_sequence().unwrap() {
            for rule in group["rules"].as_sequence().unwrap() {
                rules += 1;
                let expr = rule["expr"].as_str().unwrap().to_owned();
                let (origin, must) = match (rule["record"].as_str(), rule["alert"].as_str()) {
                    (Some(r), _) => (format!("record {r}"), true),
                    (_, Some(a)) => {
                        for key in ["summary", "description"] {
                            assert!(rule["annotations"][key].as_str().is_some(), "alert {a} has no {key}");
                        }
                        let severity = rule["labels"]["severity"].as_str();
                        assert!(
                            matches!(severity, Some("critical" | "warning" | "info")),
                            "alert {a}: severity {severity:?}"
                        );
                        (format!("alert {a}"), false)
                    }
                    _ => panic!("rule without record or alert in {}", file.display()),
                };
                out.push(Expr { origin, promql: expr, must_return_data: must });
            }
        }
    }
    (out, rules)
}

/// Every target expression of the dashboard's panels and every template variable query
/// (`label_values(selector, label)` becomes `count by (label) (selector)`), with Grafana's
/// variables replaced by what a user would have selected.
fn dashboard_exprs(dash: &Value) -> Vec<Expr> {
    let mut out = Vec::new();
    let mut ids = BTreeSet::new();
    let mut panels: Vec<&Value> = dash["panels"].as_array().unwrap().iter().collect();
    while let Some(p) = panels.pop() {
        let title = p["title"].as_str().unwrap();
        assert!(ids.insert(p["id"].as_u64().unwrap()), "panel id of {title:?} is not unique");
        let g = &p["gridPos"];
        assert!(g["x"].as_u64().unwrap() + g["w"].as_u64().unwrap() <= 24, "{title:?} is wider than the grid");
        if let Some(inner) = p["panels"].as_array() {
            panels.extend(inner);
        }
        if p["type"] == "row" {
            continue;
        }
        assert_eq!(p["datasource"]["uid"], "${datasource}", "{title:?} uses the datasource variable");
        assert!(p["description"].as_str().is_some_and(|d| !d.is_empty()), "{title:?} says what it shows");
        let targets = p["targets"].as_array().unwrap_or_else(|| panic!("{title:?} has no targets"));
        assert!(!targets.is_empty(), "{title:?} has no targets");
        for t in targets {
            let expr = t["expr"].as_str().unwrap();
            out.push(Expr {
                origin: format!("panel {title:?} {}", t["refId"]),
                promql: grafana_vars(expr),
                must_return_data: true,
            });
        }
    }
    for v in dash["templating"]["list"].as_array().unwrap() {
        let Some(q) = v["query"]["query"].as_str() else { continue };
        let inner = q.strip_prefix("label_values(").and_then(|r| r.strip_suffix(')')).unwrap();
        let (selector, label) = inner.rsplit_once(',').unwrap();
        out.push(Expr {
            origin: format!("variable {}", v["name"]),
            promql: grafana_vars(&format!("count by ({}) ({selector})", label.trim())),
            must_return_data: true,
        });
    }
    out
}

fn grafana_vars(expr: &str) -> String {
    expr.replace("$__rate_interval", "1m")
        .replace("$__interval", "15s")
        .replace("$job", "imgedge")
        .replace("$instance", ".*")
        .replace("$tenant", ".*")
}

/// Followed by a label list in parentheses, skipped with it.
const KEYWORDS: &[&str] = &["by", "without", "on", "ignoring", "group_left", "group_right"];
/// Neither selectors nor followed by a label list.
const OPERATORS: &[&str] = &[
    "bool",
    "and",
    "or",
    "unless",
    "offset",
    "sum",
    "avg",
    "min",
    "max",
    "count",
    "count_values",
    "group",
    "stddev",
    "stdvar",
    "topk",
    "bottomk",
    "quantile",
];

/// The series selectors of a PromQL expression (`name{matchers}` or `name`), found by a
/// scanner that skips strings, label lists (`by (…)`), ranges (`[5m]`), functions and
/// numbers. Enough for the expressions shipped here; PromQL itself is Prometheus's job.
fn selectors(expr: &str) -> Vec<String> {
    let b = expr.as_bytes();
    let ident = |c: u8| c.is_ascii_alphanumeric() || c == b'_' || c == b':';
    let skip_ws = |mut i: usize| {
        while i < b.len() && b[i].is_ascii_whitespace() {
            i += 1;
        }
        i
    };
    // the index after the bracket matching the one at `i`, strings respected
    let close = |mut i: usize, open: u8, shut: u8| {
        let mut depth = 0;
        while i < b.len() {
            match b[i] {
                b'"' => {
                    i += 1;
                    while i < b.len() && b[i] != b'"' {
                        i += if b[i] == b'\\' { 2 } else { 1 };
                    }
                }
                c if c == open => depth += 1,
                c if c == shut => {
                    depth -= 1;
                    if depth == 0 {
                        return i + 1;
                    }
                }
                _ => {}
            }
            i += 1;
        }
        b.len()
    };
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c == b'"' {
            i = close(i, 0, b'"');
        } else if c == b'[' {
            i = close(i, b'[', b']');
        } else if c.is_ascii_digit() || c == b'.' {
            while i < b.len() && (ident(b[i]) || b[i] == b'.') {
                i += 1;
            }
        } else if ident(c) {
            let start = i;
            while i < b.len() && ident(b[i]) {
                i += 1;
            }
            let name = &expr[start..i];
            let next = skip_ws(i);
            if KEYWORDS.contains(&name) {
                if next < b.len() && b[next] == b'(' {
                    i = close(next, b'(', b')');
                }
            } else if OPERATORS.contains(&name) {
                // `sum by (…) (…)`, `x and y`: what follows is scanned next
            } else if next < b.len() && b[next] == b'(' {
                // a function call: its arguments are scanned next
            } else if next < b.len() && b[next] == b'{' {
                let end = close(next, b'{', b'}');
                out.push(format!("{name}{}", &expr[next..end]));
                i = end;
            } else {
                out.push(name.to_owned());
            }
        } else if c == b'{' {
            // a selector without a name ({__name__=...}): not used here
            i = close(i, b'{', b'}');
        } else {
            i += 1;
        }
    }
    out
}

#[test]
fn the_selector_scanner_finds_every_selector_and_nothing_else() {
    let e = r#"(sum by (job, instance) (rate(imgedge_x_total{a="5xx", b=~"a|b"}[5m])) or vector(0) * 0)
        / on (job) group_left histogram_quantile(0.99, sum by (le) (rate(y:z:rate5m[1m] offset 5m))) > 0.5 and up"#;
    assert_eq!(selectors(e), [r#"imgedge_x_total{a="5xx", b=~"a|b"}"#, "y:z:rate5m", "up"]);
}

struct Prom {
    _child: Reaper,
    base: String,
    client: reqwest::Client,
}

impl Prom {
    async fn query(&self, promql: &str) -> Result<Vec<Value>, String> {
        let q: String = url::form_urlencoded::byte_serialize(promql.as_bytes()).collect();
        let r =
            self.client.get(format!("{}/api/v1/query?query={q}", self.base)).send().await.map_err(|e| e.to_string())?;
        let body: Value =
            serde_json::from_slice(&r.bytes().await.map_err(|e| e.to_string())?).map_err(|e| e.to_string())?;
        if body["status"] != "success" {
            return Err(format!("{}: {}", body["errorType"], body["error"]));
        }
        Ok(body["data"]["result"].as_array().cloned().unwrap_or_default())
    }

    async fn api(&self, path: &str) -> Value {
        let r = self.client.get(format!("{}{path}", self.base)).send().await.unwrap();
        serde_json::from_slice(&r.bytes().await.unwrap()).unwrap()
    }
}

fn start_prometheus(prometheus: &Path, dir: &Path, ops: std::net::SocketAddr) -> Prom {
    let port = free_port();
    let rules: Vec<String> = rule_files().iter().map(|f| format!("  - {}\n", f.display())).collect();
    let conf = format!(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\nrule_files:\n{}\
         scrape_configs:\n  - job_name: imgedge\n    static_configs:\n      - targets: [\"{ops}\"]\n",
        rules.concat()
    );
    let file = dir.join("prometheus.yml");
    std::fs::write(&file, conf).unwrap();
    let log = std::fs::File::create(dir.join("prometheus.log")).unwrap();
    let child = Command::new(prometheus)
        .arg(format!("--config.file={}", file.display()))
        .arg(format!("--storage.tsdb.path={}", dir.join("data").display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .arg("--log.level=warn")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let client = reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(10)).build().unwrap();
    Prom { _child: Reaper(child), base: format!("http://127.0.0.1:{port}"), client }
}

impl Prom {
    /// Waits (≤ 30 s) until Prometheus answers `/-/ready`.
    async fn ready(&mut self, log: &Path) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(r) = self.client.get(format!("{}/-/ready", self.base)).send().await {
                if r.status() == 200 {
                    return;
                }
            }
            if let Ok(Some(status)) = self._child.0.try_wait() {
                panic!("prometheus exited with {status}:\n{}", std::fs::read_to_string(log).unwrap_or_default());
            }
            assert!(
                Instant::now() < deadline,
                "prometheus not ready in 30 s:\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Traffic of every kind the dashboard shows.
async fn traffic(s: &Imgedge, origin: &HttpOrigin, token: &str) {
    let img = sign("/w:70/plain/coffee_600x400.jpg");
    for _ in 0..5 {
        assert_eq!(s.get("img.test", &img).await.status(), 200);
    }
    assert_eq!(s.get("img.test", &sign("/w:70/plain/coffee_600x400.jpg@webp")).await.status(), 200);
    assert_eq!(s.get("img.test", &sign("/raw:1/plain/coffee_600x400.jpg")).await.status(), 200);
    assert_eq!(s.get("img.test", &sign("/w:70/plain/missing.jpg")).await.status(), 404);
    assert_eq!(s.get("img.test", "/bad/w:70/plain/coffee_600x400.jpg").await.status(), 403);
    assert_eq!(s.get("img.test", &sign("/zz:1/plain/coffee_600x400.jpg")).await.status(), 400);
    assert_eq!(s.get("nobody.test", &img).await.status(), 404);
    // identical concurrent misses: one renders, the others wait on the cache lock
    let same = sign("/w:71/plain/coffee_600x400.jpg");
    let waits: Vec<_> = (0..4).map(|_| s.get("img.test", &same)).collect();
    for r in futures::future::join_all(waits).await {
        assert_eq!(r.status(), 200);
    }
    // an origin answering 500: 502
    assert_eq!(s.get("web.test", &sign("/w:70/plain/fail/coffee_600x400.jpg")).await.status(), 502);
    assert_eq!(s.get("web.test", &sign("/w:72/plain/coffee_600x400.jpg")).await.status(), 200);
    assert!(origin.hits("/fail/coffee_600x400.jpg") > 0);
    // over the tenant's rate
    let mut limited = 0;
    for _ in 0..5 {
        if s.get("slow.test", &img).await.status() == 429 {
            limited += 1;
        }
    }
    assert!(limited > 0, "slow.test allows 1 request per second");
    let purge = reqwest::Client::new()
        .post(format!("http://{}/purge?tenant=t1&all=1", s.ops))
        .header("authorization", format!("Bearer {token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(purge.status(), 200);
    assert_eq!(s.get("img.test", &img).await.headers()["x-cache"], "MISS", "purged");
}

/// Metric families the server exports (`# TYPE` lines).
fn exported(metrics_text: &str) -> BTreeSet<String> {
    metrics_text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

/// Metric names in the README's metrics table (rows starting with a metric name).
fn readme_metrics() -> BTreeSet<String> {
    let readme = std::fs::read_to_string(repo("README.md")).unwrap();
    let mut out = BTreeSet::new();
    for line in readme.lines().filter(|l| l.starts_with("| `imgedge_")) {
        let first = line.split('|').nth(1).unwrap();
        for name in first.split('`').filter(|s| s.starts_with("imgedge_")) {
            out.insert(name.to_owned());
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_and_rules_evaluate_to_data_in_a_real_prometheus() {
    let (Some(prometheus), Some(promtool)) = (which("prometheus"), which("promtool")) else {
        let msg = "prometheus/promtool not on PATH: scripts/deps.sh installs Debian's `prometheus` package";
        if std::env::var_os("IMGEDGE_REQUIRE_PROMETHEUS").is_some() {
            panic!("{msg}");
        }
        eprintln!("\n*** SKIPPED prometheus::dashboard_and_rules_evaluate_to_data_in_a_real_prometheus: {msg} ***\n");
        return;
    };
    let out = Command::new(&promtool).args(["check", "rules"]).args(rule_files()).output().unwrap();
    assert!(
        out.status.success(),
        "promtool check rules:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let dash: Value =
        serde_json::from_str(&std::fs::read_to_string(repo("deploy/grafana/imgedge.json")).unwrap()).unwrap();
    assert!(dash["schemaVersion"].as_u64().unwrap() >= 38);
    let (mut exprs, rules) = rule_exprs();
    exprs.extend(dashboard_exprs(&dash));

    let pg = Pg::start();
    let origin = HttpOrigin::start(images_dir()).await;
    let token = "prometheus-test-admin-token";
    let tenants = format!(
        r#"  - id: t1
    hosts: [img.test]
    keys: [{{key: "{KEY}", salt: "{SALT}"}}]
    origins:
      local: {{type: local, root: "{images}"}}
    billing: {{per_tenant_metrics: true}}
  - id: web
    hosts: [web.test]
    keys: [{{key: "{KEY}", salt: "{SALT}"}}]
    origins:
      site: {{type: http, base_url: "http://{addr}/", allow_private: true}}
  - id: slow
    hosts: [slow.test]
    keys: [{{key: "{KEY}", salt: "{SALT}"}}]
    origins:
      local: {{type: local, root: "{images}"}}
    limits: {{rate_per_second: 1}}
"#,
        images = images_dir().display(),
        addr = origin.addr
    );
    let dir = tempfile::tempdir().unwrap();
    // a shared derivative store, so its series have data too
    let s3 = S3Server::start().await;
    let cache = format!(
        "  memory: 64MiB\n  max_object: 1MiB\n  disk: {{path: {}, size: 16MiB, block_size: 2MiB}}\n  \
         shared: {{type: s3, bucket: derived, endpoint: \"{}\", access_key_id: \"{S3_ACCESS_KEY}\", \
         secret_access_key: \"{S3_SECRET_KEY}\"}}\n",
        dir.path().join("cache").display(),
        s3.endpoint
    );
    // a fleet of one: its series exist (and its panels show zeros) without peers
    let fleet = format!(
        "fleet:\n  node: solo\n  secret: \"prometheus-test-fleet-secret-0123456789\"\n  peers: {{solo: \"127.0.0.1:{}\"}}\n",
        crate::harness::free_port()
    );
    let extra =
        format!("admin:\n  token: {token}\nusage:\n  flush_interval: 250ms\n  postgres: \"{}\"\n{fleet}", pg.url());
    let s = Imgedge::start_with(&tenants, &cache, &extra).await;
    let mut prom = start_prometheus(&prometheus, dir.path(), s.ops);
    traffic(&s, &origin, token).await;
    prom.ready(&dir.path().join("prometheus.log")).await;

    // every expression, every selector: retried until Prometheus has scraped and evaluated
    // enough (rates need two samples, recorded series one evaluation), at most 40 s
    let deadline = Instant::now() + Duration::from_secs(40);
    let mut rounds = 0;
    let problems = loop {
        rounds += 1;
        let mut problems = Vec::new();
        let up = prom.query(r#"count_over_time(up{job="imgedge"}[1m]) >= 3"#).await;
        if !up.as_ref().is_ok_and(|r| !r.is_empty()) {
            problems.push(format!("fewer than 3 scrapes yet: {up:?}"));
        }
        let loaded = prom.api("/api/v1/rules").await;
        let mut healthy = 0;
        for g in loaded["data"]["groups"].as_array().into_iter().flatten() {
            for r in g["rules"].as_array().into_iter().flatten() {
                if r["health"] == "ok" {
                    healthy += 1;
                } else {
                    problems.push(format!("rule {} is {}: {}", r["name"], r["health"], r["lastError"]));
                }
            }
        }
        if healthy != rules {
            problems.push(format!("{healthy} of {rules} rules loaded and evaluated"));
        }
        for e in &exprs {
            match prom.query(&e.promql).await {
                Err(err) => problems.push(format!("{}: {err}\n    {}", e.origin, e.promql)),
                Ok(r) if r.is_empty() && e.must_return_data => {
                    problems.push(format!("{}: no data\n    {}", e.origin, e.promql))
                }
                Ok(_) => {}
            }
            for sel in selectors(&e.promql) {
                if !prom.query(&sel).await.is_ok_and(|r| !r.is_empty()) {
                    problems.push(format!("{}: selector {sel} has no data", e.origin));
                }
            }
        }
        if problems.is_empty() || Instant::now() >= deadline {
            break problems;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    assert!(
        problems.is_empty(),
        "after {rounds} rounds, {} problems:\n  {}\nprometheus log:\n{}",
        problems.len(),
        problems.join("\n  "),
        std::fs::read_to_string(dir.path().join("prometheus.log")).unwrap_or_default()
    );
    assert!(exprs.len() > 60, "{} expressions checked", exprs.len());

    // nothing exported that operators cannot see or read about
    let text = s.ops_get("/metrics").await.text().await.unwrap();
    let shown = std::fs::read_to_string(repo("deploy/grafana/imgedge.json")).unwrap()
        + &rule_files().iter().map(|f| std::fs::read_to_string(f).unwrap()).collect::<String>();
    let documented = readme_metrics();
    let exported = exported(&text);
    for name in &exported {
        assert!(
            shown.contains(name.as_str()),
            "{name} is exported but no panel of deploy/grafana/imgedge.json (or rule) shows it: add one"
        );
        assert!(documented.contains(name), "{name} is exported but not in README.md's metrics table");
    }
    for name in &documented {
        assert!(exported.contains(name), "README.md's metrics table lists {name}, which the server does not export");
    }
}
