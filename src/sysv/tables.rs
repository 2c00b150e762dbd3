//! The kernel's own tables (`/proc/sysvipc`), read the way util-linux reads them.

use std::io;

use super::*;

/// One row of `/proc/sysvipc/{shm,sem,msg}`, by column name.
#[derive(Debug, Clone)]
pub(crate) struct TableRow {
    /// The table's column names, shared by its rows.
    names: std::sync::Arc<Vec<String>>,
    values: Vec<String>,
}

impl TableRow {
    /// A column's text.
    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        // Tables have a dozen or so columns: a scan of the shared names is as fast as a map.
        let i = self.names.iter().position(|n| n == name)?;
        self.values.get(i).map(String::as_str)
    }
    /// A column as a number (0 if it is missing or not one).
    pub(crate) fn num(&self, name: &str) -> i64 {
        self.get(name).and_then(|v| v.parse().ok()).unwrap_or(0)
    }
    /// The row's `key` column.
    pub(crate) fn key(&self) -> Key {
        Key::from_raw(self.num("key"))
    }
}

/// Parses a `/proc/sysvipc` table: a header line of column names, then one row per object.
pub(crate) fn parse_table(text: &str) -> Vec<TableRow> {
    let mut lines = text.lines();
    let Some(header) = lines.next() else {
        return Vec::new();
    };
    let names = std::sync::Arc::new(
        header
            .split_whitespace()
            .map(String::from)
            .collect::<Vec<_>>(),
    );
    lines
        .filter(|l| !l.trim().is_empty())
        .map(|l| TableRow {
            names: names.clone(),
            values: l.split_whitespace().map(String::from).collect(),
        })
        .collect()
}

/// Which kernel table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// Shared memory segments.
    Shm,
    /// Semaphore sets.
    Sem,
    /// Message queues.
    Msg,
}

impl Kind {
    /// The kernel's table for this kind.
    pub(crate) fn path(self) -> &'static str {
        match self {
            Kind::Shm => "/proc/sysvipc/shm",
            Kind::Sem => "/proc/sysvipc/sem",
            Kind::Msg => "/proc/sysvipc/msg",
        }
    }
}

/// Reads one of the kernel's tables.
///
/// # Errors
/// The file cannot be read (no /proc, or no SysV IPC in this kernel).
pub(crate) fn read_table(kind: Kind) -> io::Result<Vec<TableRow>> {
    Ok(parse_table(&std::fs::read_to_string(kind.path())?))
}

/// A kernel limit from `/proc/sys/kernel/NAME` (`shmmax`, `shmall`, `shmmni`, `sem`, …), as
/// written there (trimmed).
pub(crate) fn kernel_limit(name: &str) -> Option<String> {
    std::fs::read_to_string(format!("/proc/sys/kernel/{name}"))
        .ok()
        .map(|s| s.trim().to_string())
}
