//! Storage: one `sqlx::AnyPool` serving SQLite (default, a file in the data directory) and
//! PostgreSQL (by URL). The schema in `migrations/` is written once in the portable subset of
//! both dialects (TEXT and BIGINT columns, `$N` placeholders, `ON CONFLICT DO NOTHING`).

use anyhow::{Context, Result};
use sqlx::any::{AnyPoolOptions, install_default_drivers};
use sqlx::{AnyPool, Executor};
use std::path::Path;
use std::time::Duration;

/// Which database engine is behind the pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// The database handle shared by every request.
#[derive(Clone)]
pub struct Db {
    pub pool: AnyPool,
    pub backend: Backend,
}

impl Db {
    /// Connects to `url` (`postgres://...`) or, when `url` is `None`, to `kiln.db` in
    /// `data_dir`, then runs the migrations.
    pub async fn connect(url: Option<&str>, data_dir: &Path) -> Result<Db> {
        install_default_drivers();
        let (url, backend) = match url {
            Some(u) if u.starts_with("postgres://") || u.starts_with("postgresql://") => {
                (u.to_string(), Backend::Postgres)
            }
            Some(u) if u.starts_with("sqlite:") => (u.to_string(), Backend::Sqlite),
            Some(u) => anyhow::bail!(
                "database URL {u:?} is neither postgres://... nor sqlite:...; leave it unset for \
                 SQLite in the data directory"
            ),
            None => {
                let file = data_dir.join("kiln.db");
                (
                    format!("sqlite://{}?mode=rwc", file.display()),
                    Backend::Sqlite,
                )
            }
        };
        let redacted = redact_url(&url);
        let mut opts = AnyPoolOptions::new().acquire_timeout(Duration::from_secs(30));
        if backend == Backend::Sqlite {
            opts = opts.max_connections(8).after_connect(|conn, _| {
                Box::pin(async move {
                    conn.execute("PRAGMA journal_mode = WAL").await?;
                    conn.execute("PRAGMA busy_timeout = 10000").await?;
                    conn.execute("PRAGMA synchronous = NORMAL").await?;
                    conn.execute("PRAGMA foreign_keys = ON").await?;
                    Ok(())
                })
            });
        } else {
            opts = opts.max_connections(32);
        }
        let pool = opts
            .connect(&url)
            .await
            .with_context(|| format!("connecting to database {redacted}"))?;
        sqlx::migrate!("./migrations")
            .run(&pool)
            .await
            .with_context(|| format!("running migrations on {redacted}"))?;
        Ok(Db { pool, backend })
    }
}

/// The URL with any password replaced, for logs and errors.
pub fn redact_url(url: &str) -> String {
    if let Some((scheme, rest)) = url.split_once("://")
        && let Some((userinfo, host)) = rest.rsplit_once('@')
    {
        let user = userinfo.split(':').next().unwrap_or("");
        return format!("{scheme}://{user}:***@{host}");
    }
    url.to_string()
}

/// Milliseconds since the Unix epoch, the time format of every column.
pub fn now_ms() -> i64 {
    let now = time::OffsetDateTime::now_utc();
    (now.unix_timestamp_nanos() / 1_000_000) as i64
}

/// Converts a stored millisecond time to a timestamp.
pub fn ms_to_time(ms: i64) -> time::OffsetDateTime {
    time::OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_passwords() {
        let cases = [
            (
                "postgres://kiln:s3cret@db:5432/kiln",
                "postgres://kiln:***@db:5432/kiln",
            ),
            ("postgres://db/kiln", "postgres://db/kiln"),
            ("sqlite:///tmp/x.db", "sqlite:///tmp/x.db"),
        ];
        for (url, want) in cases {
            assert_eq!(redact_url(url), want);
        }
    }

    #[test]
    fn ms_round_trip() {
        let now = now_ms();
        assert_eq!(
            (ms_to_time(now).unix_timestamp_nanos() / 1_000_000) as i64,
            now
        );
    }
}
