//! Leases: which daemon reconciles which unit when several daemons share one PostgreSQL store.
//!
//! A lease is a row of the `leases` table (schema version 2): the unit, its holder (a daemon
//! id), a fencing generation that only grows, and an expiry kept by the database's clock
//! (`now()`), so daemons on machines with skewed clocks agree. The holder renews it every
//! ttl/3; another daemon takes it only once it has expired, bumping the generation. Before
//! every mutating step the holder checks, in the same database, that the row still names it
//! with its generation and that at least `margin` of it remains (`fenced`).
//!
//! This module is the storage side and the spreading rule; `fleet.rs` is the daemon's use of
//! it (see ARCHITECTURE.md, "Leases and fencing").

use postgres::Client;
use std::time::Duration;

/// A daemon's id in the lease table: host, pid and a random suffix (two daemons restarted
/// with the same pid on one host are still told apart).
pub fn daemon_id() -> String {
    format!("{}:{}:{:08x}", host_name(), std::process::id(), rand::random::<u32>())
}

/// This machine's name (`/etc/hostname`), else `localhost`.
pub fn host_name() -> String {
    let host = std::fs::read_to_string("/etc/hostname").map(|h| h.trim().to_string()).unwrap_or_default();
    if host.is_empty() { "localhost".to_string() } else { host }
}

/// The most units one daemon may hold so that units spread evenly across the live daemons:
/// ceil(units / live). A daemon always counts itself as live.
pub fn fair_share(units: usize, live: usize) -> usize {
    units.div_ceil(live.max(1))
}

/// A lease held: the unit, and the generation that fences every step sent under it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held {
    pub unit: String,
    pub generation: i64,
}

fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Takes the unit's lease for `holder` when it is free or expired (a new generation), or
/// renews it when `holder` has it already (same generation). `None` when another daemon
/// holds an unexpired lease. One statement: two daemons racing for an expired row cannot
/// both win (the row lock serialises them and the second sees the first's fresh expiry).
pub fn acquire(client: &mut Client, unit: &str, holder: &str, ttl: Duration) -> Result<Option<Held>, postgres::Error> {
    let row = client.query_opt(
        "INSERT INTO leases (unit, holder, generation, expires_at)
         VALUES ($1, $2, 1, now() + make_interval(secs => $3::float8 / 1000.0))
         ON CONFLICT (unit) DO UPDATE SET
             holder = EXCLUDED.holder,
             generation = CASE WHEN leases.holder = EXCLUDED.holder AND leases.expires_at > now()
                               THEN leases.generation ELSE leases.generation + 1 END,
             expires_at = EXCLUDED.expires_at
         WHERE leases.holder = EXCLUDED.holder OR leases.expires_at <= now()
         RETURNING generation",
        &[&unit, &holder, &millis(ttl)],
    )?;
    Ok(row.map(|r| Held { unit: unit.to_string(), generation: r.get(0) }))
}

/// Renews every lease of `held` in one statement; answers the units renewed (a unit missing
/// was lost: expired and taken, or another generation). A keeper holding a hundred units
/// makes one round trip, not a hundred.
pub fn renew_all(
    client: &mut Client,
    held: &[Held],
    holder: &str,
    ttl: Duration,
) -> Result<Vec<String>, postgres::Error> {
    if held.is_empty() {
        return Ok(Vec::new());
    }
    let units: Vec<&str> = held.iter().map(|h| h.unit.as_str()).collect();
    let generations: Vec<i64> = held.iter().map(|h| h.generation).collect();
    let rows = client.query(
        "UPDATE leases SET expires_at = now() + make_interval(secs => $4::float8 / 1000.0)
         WHERE holder = $1 AND expires_at > now()
           AND (unit, generation) IN (SELECT * FROM unnest($2::text[], $3::int8[]))
         RETURNING unit",
        &[&holder, &units, &generations, &millis(ttl)],
    )?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// The fence: `true` only while `holder` still holds the lease with its generation and at
/// least `margin` of it remains. Consulted before every mutating step; `false` stops the run.
pub fn fenced(client: &mut Client, held: &Held, holder: &str, margin: Duration) -> Result<bool, postgres::Error> {
    let row = client.query_opt(
        "SELECT 1 FROM leases WHERE unit = $1 AND holder = $2 AND generation = $3
           AND expires_at > now() + make_interval(secs => $4::float8 / 1000.0)",
        &[&held.unit, &holder, &held.generation, &millis(margin)],
    )?;
    Ok(row.is_some())
}

/// Gives a lease up at once (a clean shutdown), so another daemon need not wait for expiry.
pub fn release(client: &mut Client, held: &Held, holder: &str) -> Result<(), postgres::Error> {
    client.execute(
        "UPDATE leases SET expires_at = now() WHERE unit = $1 AND holder = $2 AND generation = $3",
        &[&held.unit, &holder, &held.generation],
    )?;
    Ok(())
}

/// The heartbeat: marks `id` live for `ttl` (with the URL of its API, when it has one to
/// give) and answers how many daemons are live now (itself included), for `fair_share`.
pub fn heartbeat(
    client: &mut Client,
    id: &str,
    ttl: Duration,
    address: Option<&str>,
) -> Result<usize, postgres::Error> {
    client.execute(
        "INSERT INTO daemons (id, seen_until, address) VALUES ($1, now() + make_interval(secs => $2::float8 / 1000.0), $3)
         ON CONFLICT (id) DO UPDATE SET seen_until = EXCLUDED.seen_until, address = EXCLUDED.address",
        &[&id, &millis(ttl), &address],
    )?;
    let live: i64 = client.query_one("SELECT count(*) FROM daemons WHERE seen_until > now()", &[])?.get(0);
    Ok(live.max(1) as usize)
}

/// The URL of the API of the live daemon `id`, if it gave one.
pub fn address(client: &mut Client, id: &str) -> Result<Option<String>, postgres::Error> {
    let row = client.query_opt("SELECT address FROM daemons WHERE id = $1 AND seen_until > now()", &[&id])?;
    Ok(row.and_then(|r| r.get::<_, Option<String>>(0)))
}

/// How many unexpired leases `holder` has, to compare with its `fair_share` (the keeper
/// counts the leases it renewed instead; kept for diagnostics and tests).
#[allow(dead_code)]
pub fn held_by(client: &mut Client, holder: &str) -> Result<usize, postgres::Error> {
    let n: i64 =
        client.query_one("SELECT count(*) FROM leases WHERE holder = $1 AND expires_at > now()", &[&holder])?.get(0);
    Ok(n as usize)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[test]
    fn units_spread_as_ceil_of_units_over_live_daemons() {
        assert_eq!(fair_share(1, 3), 1, "one unit: exactly one daemon may hold it");
        assert_eq!(fair_share(30, 3), 10);
        assert_eq!(fair_share(31, 3), 11);
        assert_eq!(fair_share(100, 3), 34);
        assert_eq!(fair_share(5, 0), 5, "a daemon counts itself live");
        assert_eq!(fair_share(0, 3), 0);
    }

    #[test]
    fn two_daemon_ids_in_one_process_differ() {
        let (a, b) = (daemon_id(), daemon_id());
        assert_ne!(a, b);
        assert!(a.contains(&format!(":{}:", std::process::id())), "{a}");
    }

    /// The server CI started (CAPSTAN_TEST_POSTGRES_URL), else one `.ci/postgres` starts for this
    /// test binary (stopped once it has ended): this test never skips.
    pub(crate) fn server_url() -> String {
        static URL: std::sync::OnceLock<String> = std::sync::OnceLock::new();
        URL.get_or_init(start_server).clone()
    }

    fn start_server() -> String {
        if let Ok(url) = std::env::var("CAPSTAN_TEST_POSTGRES_URL") {
            return url;
        }
        let dir = std::env::temp_dir().join(format!("capstan-lease-pg-{}", std::process::id()));
        let out = std::process::Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.ci/postgres"))
            .arg("start")
            .arg(&dir)
            .arg(std::process::id().to_string())
            .stderr(std::process::Stdio::inherit())
            .output()
            .expect("run .ci/postgres");
        assert!(out.status.success(), ".ci/postgres could not start a server (see above)");
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    }

    /// Against a real PostgreSQL.
    #[test]
    fn a_lease_is_taken_over_only_after_expiry_with_a_new_generation() {
        let url = server_url();
        let dir = std::env::temp_dir();
        let _store = crate::daemon::store::Store::open_at(Some(&url), &dir).unwrap(); // migrates
        let mut c = postgres::Client::connect(&url, postgres::NoTls).unwrap();
        let unit = format!("lease-test-{}", daemon_id());
        let ttl = Duration::from_millis(600);
        let renew = |c: &mut Client, held: &Held, holder: &str, ttl| {
            renew_all(c, std::slice::from_ref(held), holder, ttl).map(|units| units == [held.unit.clone()])
        };
        let a = acquire(&mut c, &unit, "a", ttl).unwrap().expect("free: a takes it");
        assert!(acquire(&mut c, &unit, "b", ttl).unwrap().is_none(), "b cannot take an unexpired lease");
        assert!(fenced(&mut c, &a, "a", Duration::from_millis(100)).unwrap());
        assert!(renew(&mut c, &a, "a", ttl).unwrap());
        std::thread::sleep(Duration::from_millis(700));
        assert!(!fenced(&mut c, &a, "a", Duration::ZERO).unwrap(), "an expired lease fences");
        let b = acquire(&mut c, &unit, "b", ttl).unwrap().expect("expired: b takes it");
        assert_eq!(b.generation, a.generation + 1);
        assert!(!renew(&mut c, &a, "a", ttl).unwrap(), "a lost it");
        // Renewed together, in one statement: only the lease still held is.
        let kept = acquire(&mut c, &format!("{unit}-2"), "a", Duration::from_secs(60)).unwrap().expect("free");
        let renewed = renew_all(&mut c, &[a.clone(), kept.clone()], "a", ttl).unwrap();
        assert_eq!(renewed, std::slice::from_ref(&kept.unit), "the lost one is not renewed");
        assert!(renew_all(&mut c, &[], "a", ttl).unwrap().is_empty());
        assert!(!fenced(&mut c, &a, "a", Duration::ZERO).unwrap(), "a's old generation is fenced");
    }
}
