//! A throwaway PostgreSQL cluster for the usage tests, from Debian's `postgresql` package
//! (scripts/deps.sh installs it): `initdb` into a temp dir, `pg_ctl start` on a free
//! loopback port with the socket in that dir, stopped on drop. PostgreSQL refuses to run
//! as root, so as root every command runs as the package's `postgres` user.

use std::path::PathBuf;
use std::process::Command;

use imgedge::usage::pg::PgSink;
use imgedge::usage::Totals;

use crate::harness::reserved_port;

pub struct Pg {
    dir: tempfile::TempDir,
    bin: PathBuf,
    run_as: Option<&'static str>,
    pub port: u16,
}

/// Newest `/usr/lib/postgresql/N/bin` holding the server, or `$IMGEDGE_PG_BINDIR`.
fn bindir() -> PathBuf {
    if let Some(d) = std::env::var_os("IMGEDGE_PG_BINDIR") {
        return d.into();
    }
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v: u32 = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("postgres").exists().then_some((v, bin))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, b)| b).unwrap_or_else(|| {
        panic!("PostgreSQL server not found in /usr/lib/postgresql/*/bin: run scripts/deps.sh (Debian's postgresql)")
    })
}

fn id(args: &[&str]) -> u32 {
    let out = Command::new("id").args(args).output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

fn run(mut c: Command, what: &str) {
    let out = c.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed: {}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Pg {
    /// A new cluster, started; database `postgres`, user `postgres`, trust auth.
    pub fn start() -> Pg {
        let dir = tempfile::tempdir().unwrap();
        let run_as = (id(&["-u"]) == 0).then_some("postgres");
        if let Some(user) = run_as {
            std::os::unix::fs::chown(dir.path(), Some(id(&["-u", user])), Some(id(&["-g", user]))).unwrap();
        }
        let pg = Pg { dir, bin: bindir(), run_as, port: reserved_port() };
        let mut c = pg.cmd("initdb");
        c.arg("-D").arg(pg.data()).args(["-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-sync"]);
        run(c, "initdb");
        pg.start_server();
        pg
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn cmd(&self, program: &str) -> Command {
        let mut c = match self.run_as {
            Some(user) => {
                let mut c = Command::new("runuser");
                c.args(["-u", user, "--"]).arg(self.bin.join(program));
                c
            }
            None => Command::new(self.bin.join(program)),
        };
        // the postgres user may not be able to enter the test's working directory
        c.current_dir(self.dir.path());
        c
    }

    /// Starts the server (again), waiting until it accepts connections (≤ 30 s).
    pub fn start_server(&self) {
        let opts = format!(
            // durability of the test cluster itself is not under test: skip its fsyncs
            "-p {} -h 127.0.0.1 -k {} -c fsync=off -c full_page_writes=off -c synchronous_commit=off",
            self.port,
            self.dir.path().display()
        );
        let mut c = self.cmd("pg_ctl");
        c.arg("-D").arg(self.data()).arg("-l").arg(self.dir.path().join("pg.log"));
        c.args(["-w", "-t", "30", "-o", &opts, "start"]);
        let out = c.output().unwrap_or_else(|e| panic!("pg_ctl start: {e}"));
        // the server's own log says why it did not start (a port taken, a full disk)
        assert!(out.status.success(), "pg_ctl start failed: {}\n{}", out.status, self.log());
    }

    /// Stops the server (fast shutdown: connections are cut), waiting ≤ 30 s.
    pub fn stop_server(&self) {
        let mut c = self.cmd("pg_ctl");
        c.arg("-D").arg(self.data()).args(["-m", "fast", "-w", "-t", "30", "stop"]);
        run(c, "pg_ctl stop");
    }

    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// The ledger's totals for a tenant, read as `imgedge usage` does.
    pub async fn totals(&self, tenant: &str) -> Vec<Totals> {
        let mut sink = PgSink::new(&self.url()).unwrap();
        sink.totals(Some(tenant), None).await.unwrap()
    }

    /// One integer from a query (counts in the ledger tables).
    pub async fn count(&self, sql: &str) -> i64 {
        let (client, conn) = tokio_postgres::connect(&self.url(), tokio_postgres::NoTls).await.unwrap();
        tokio::spawn(conn);
        client.query_one(sql, &[]).await.unwrap().get(0)
    }

    /// Runs statements (a schema as an older release created it).
    pub async fn execute(&self, sql: &str) {
        let (client, conn) = tokio_postgres::connect(&self.url(), tokio_postgres::NoTls).await.unwrap();
        tokio::spawn(conn);
        client.batch_execute(sql).await.unwrap();
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("pg.log")).unwrap_or_default()
    }
}

impl Drop for Pg {
    fn drop(&mut self) {
        let mut c = self.cmd("pg_ctl");
        c.arg("-D").arg(self.data()).args(["-m", "immediate", "-w", "-t", "10", "stop"]);
        let _ = c.output();
    }
}
