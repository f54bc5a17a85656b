//! The database file: SQLite in WAL mode with `synchronous=FULL`, so a transaction is
//! whole or absent after a crash, and durable once its one fsync (of the WAL) returns.
//!
//! Layout (`STATE_VERSION` 3): `meta` (key -> value: `version`, `next_net_id`,
//! `instance_id`), and one table per kind of record, `networks` and `containers`, a row
//! per record: its `seq` (the state's order), its `id`, and the record as JSON (the
//! serde form the state file had, so records keep their defaults for fields added
//! later, and a migration step reads the same document whatever held it).
use std::path::{Path, PathBuf};

use rusqlite::{params, Connection, OpenFlags, OptionalExtension, Transaction};
use serde::Serialize;
use serde_json::{Map, Value};

use super::{
    records::{Entry, Record, Row, Rows},
    StoreError,
};

/// How long a write waits for a reader holding the file (`Store::check` of an agent
/// that is about to replace this one).
const BUSY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

const SCHEMA: &str = "
    CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value NOT NULL) WITHOUT ROWID;
    CREATE TABLE IF NOT EXISTS networks
        (seq INTEGER PRIMARY KEY, id TEXT NOT NULL, record TEXT NOT NULL);
    CREATE TABLE IF NOT EXISTS containers
        (seq INTEGER PRIMARY KEY, id TEXT NOT NULL, record TEXT NOT NULL);
";

/// The record tables, by kind.
pub const NETWORKS: &str = "networks";
pub const CONTAINERS: &str = "containers";

pub fn invalid(path: &Path, why: impl std::fmt::Display) -> StoreError {
    StoreError::Invalid {
        path: path.to_path_buf(),
        why: why.to_string(),
    }
}

/// The database at `path` opened for the daemon (created if absent).
pub fn open(path: &Path) -> Result<Connection, StoreError> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| invalid(path, e))?;
    conn.busy_timeout(BUSY_TIMEOUT)
        .map_err(|e| invalid(path, e))?;
    let mode: String = conn
        .query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))
        .map_err(|e| invalid(path, e))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(invalid(path, format!("journal mode {mode}, not WAL")));
    }
    conn.execute_batch("PRAGMA synchronous=FULL")
        .map_err(|e| invalid(path, e))?;
    Ok(conn)
}

/// The database's version, without changing anything in its directory.
pub fn peek_version(path: &Path) -> Result<Option<u32>, StoreError> {
    let conn = peek(path)?;
    version(&conn).map_err(|e| invalid(path, e))
}

/// A `meta` value of the database, without changing anything in its directory.
pub fn peek_meta(path: &Path, key: &str) -> Result<Option<String>, StoreError> {
    let conn = peek(path)?;
    if version(&conn).map_err(|e| invalid(path, e))?.is_none() {
        return Ok(None);
    }
    conn.query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
        .optional()
        .map_err(|e| invalid(path, e))
}

/// A read-only connection that changes nothing in the database's directory: a plain
/// read-only one would create the WAL and its index if they are not there (no agent
/// has the file open and none died with it), and then the main file is all there is to
/// read.
fn peek(path: &Path) -> Result<Connection, StoreError> {
    let wal = PathBuf::from(format!("{}-wal", path.display()));
    let uri = format!(
        "file:{}?{}",
        uri_path(path),
        if wal.exists() {
            "mode=ro"
        } else {
            "immutable=1"
        }
    );
    let conn = Connection::open_with_flags(
        uri,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_URI,
    )
    .map_err(|e| invalid(path, e))?;
    conn.busy_timeout(BUSY_TIMEOUT)
        .map_err(|e| invalid(path, e))?;
    Ok(conn)
}

/// `path` as the path of a `file:` URI (its `%`, `?` and `#` escaped).
fn uri_path(path: &Path) -> String {
    let mut s = String::new();
    for c in path.display().to_string().chars() {
        match c {
            '%' => s.push_str("%25"),
            '?' => s.push_str("%3f"),
            '#' => s.push_str("%23"),
            c => s.push(c),
        }
    }
    s
}

/// The layout version recorded in `meta`, None before the database was first written
/// whole (a file made by an agent that died before its first transaction committed).
pub fn version(conn: &Connection) -> rusqlite::Result<Option<u32>> {
    let has_meta: bool = conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta')",
        [],
        |r| r.get(0),
    )?;
    if !has_meta {
        return Ok(None);
    }
    conn.query_row("SELECT value FROM meta WHERE key = 'version'", [], |r| {
        r.get(0)
    })
    .optional()
}

/// The database as a state document, and each table's seqs in the document's order.
pub struct Doc {
    /// `{"version", "networks": [..], "containers": [..], "next_net_id",
    /// "instance_id"}`, the records in their order.
    pub doc: Map<String, Value>,
    pub network_seqs: Vec<i64>,
    pub container_seqs: Vec<i64>,
}

pub fn read_doc(conn: &Connection) -> rusqlite::Result<Doc> {
    let mut doc = Map::new();
    let mut stmt = conn.prepare("SELECT key, value FROM meta")?;
    let meta = stmt.query_map([], |r| {
        let key: String = r.get(0)?;
        let value = match r.get_ref(1)? {
            rusqlite::types::ValueRef::Integer(i) => Value::from(i),
            v => Value::from(v.as_str()?.to_string()),
        };
        Ok((key, value))
    })?;
    for kv in meta {
        let (k, v) = kv?;
        doc.insert(k, v);
    }
    let mut seqs = Vec::new();
    for table in [NETWORKS, CONTAINERS] {
        let mut stmt = conn.prepare(&format!("SELECT seq, record FROM {table} ORDER BY seq"))?;
        let (mut recs, mut s) = (Vec::new(), Vec::new());
        let rows = stmt.query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?)))?;
        for row in rows {
            let (seq, text) = row?;
            let v: Value = serde_json::from_str(&text).map_err(|e| {
                rusqlite::Error::FromSqlConversionFailure(1, rusqlite::types::Type::Text, e.into())
            })?;
            recs.push(v);
            s.push(seq);
        }
        doc.insert(table.into(), Value::Array(recs));
        seqs.push(s);
    }
    let container_seqs = seqs.pop().unwrap_or_default();
    let network_seqs = seqs.pop().unwrap_or_default();
    Ok(Doc {
        doc,
        network_seqs,
        container_seqs,
    })
}

/// Rows for `records` (as the state holds them) at `seqs`, or numbered anew if a
/// migration changed how many there are.
pub fn rows<T: Record>(records: &[impl Entry<T>], seqs: &[i64]) -> Rows<T> {
    if records.len() != seqs.len() {
        return Rows::numbered(records);
    }
    Rows::new(
        records
            .iter()
            .zip(seqs)
            .map(|(rec, &seq)| Row {
                seq,
                rec: rec.share(),
            })
            .collect(),
    )
}

/// Creates the tables that are not there yet (in the caller's transaction).
pub fn create_schema(tx: &Transaction) -> rusqlite::Result<()> {
    tx.execute_batch(SCHEMA)
}

pub fn set_meta(tx: &Transaction, key: &str, value: impl rusqlite::ToSql) -> rusqlite::Result<()> {
    tx.prepare_cached("INSERT OR REPLACE INTO meta (key, value) VALUES (?1, ?2)")?
        .execute(params![key, value])?;
    Ok(())
}

/// Writes record `rec` as row `seq` of `table`.
pub fn put<T: Record + Serialize>(
    tx: &Transaction,
    table: &str,
    seq: i64,
    rec: &T,
) -> anyhow::Result<()> {
    let text = serde_json::to_string(rec)?;
    tx.prepare_cached(&format!(
        "INSERT OR REPLACE INTO {table} (seq, id, record) VALUES (?1, ?2, ?3)"
    ))?
    .execute(params![seq, rec.id(), text])?;
    Ok(())
}

pub fn delete(tx: &Transaction, table: &str, seq: i64) -> rusqlite::Result<()> {
    tx.prepare_cached(&format!("DELETE FROM {table} WHERE seq = ?1"))?
        .execute(params![seq])?;
    Ok(())
}

/// Empties `table` (a table written whole).
pub fn clear(tx: &Transaction, table: &str) -> rusqlite::Result<()> {
    tx.execute(&format!("DELETE FROM {table}"), [])?;
    Ok(())
}
