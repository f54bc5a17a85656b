//! The records last committed, table by table, and what a new state changes in them.
//! A commit compares each record with its committed copy (`PartialEq`) and writes only
//! those that differ, new ones included, and deletes those that went: its cost follows
//! the change, not the number of records on the host.
//!
//! Rows keep the state's order through `seq`, a number that only grows along the
//! state's list: a record keeps its row while its place in the list keeps the order
//! (appending, removing and editing, what the daemon does), and gets a new one after
//! the last when something was put before it.
//!
//! Committed records are shared (`Arc`), so that a savepoint of the committed state
//! (what a failed operation puts back) costs a pointer per record, not a copy. A state
//! that holds its records shared too (`Entry` for `Arc`) is compared by pointer first:
//! a record the operation did not touch is the committed one, and costs no comparison.
use std::{
    collections::{HashMap, VecDeque},
    sync::Arc,
};

use crate::model::{Container, Network};

/// A record of a table: what identifies it among its kind.
pub trait Record: Clone + PartialEq {
    fn id(&self) -> &str;
}

impl Record for Network {
    fn id(&self) -> &str {
        &self.id
    }
}

impl Record for Container {
    fn id(&self) -> &str {
        &self.id
    }
}

/// A record as the state holds it: itself (compared whole) or shared with the commit.
pub trait Entry<T> {
    fn get(&self) -> &T;
    /// The committed copy of it.
    fn share(&self) -> Arc<T>;
    /// It is `committed` itself, unchanged since.
    fn is(&self, committed: &Arc<T>) -> bool;
}

impl Entry<Network> for Network {
    fn get(&self) -> &Network {
        self
    }
    fn share(&self) -> Arc<Network> {
        Arc::new(self.clone())
    }
    fn is(&self, _: &Arc<Network>) -> bool {
        false
    }
}

impl<T> Entry<T> for Arc<T> {
    fn get(&self) -> &T {
        self
    }
    fn share(&self) -> Arc<T> {
        self.clone()
    }
    fn is(&self, committed: &Arc<T>) -> bool {
        Arc::ptr_eq(self, committed)
    }
}

/// One committed record and its row.
#[derive(Debug)]
pub struct Row<T> {
    pub seq: i64,
    pub rec: Arc<T>,
}

impl<T> Clone for Row<T> {
    fn clone(&self) -> Self {
        Row {
            seq: self.seq,
            rec: self.rec.clone(),
        }
    }
}

/// A table's committed rows, in the state's order (`seq` ascending).
#[derive(Clone, Debug)]
pub struct Rows<T> {
    rows: Vec<Row<T>>,
    next_seq: i64,
}

/// Where the record at one place of the new list comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Source {
    /// The committed row at this index, as it is.
    Same(usize),
    /// The committed row at this index, its record changed.
    Changed(usize),
    /// A new row with this seq (a new record, or one that moved before another).
    New(i64),
}

/// What a new list changes in a table: rows to write, rows to delete, and how to
/// bring the committed rows up to date once the change is committed.
#[derive(Debug)]
pub struct Diff {
    plan: Vec<Source>,
    /// Seqs of rows that go (records removed, and rows of records that moved).
    pub deletes: Vec<i64>,
    next_seq: i64,
}

impl Diff {
    /// (seq, index into the new list) of every row to write.
    pub fn writes(&self, rows: &Rows<impl Record>) -> Vec<(i64, usize)> {
        self.plan
            .iter()
            .enumerate()
            .filter_map(|(j, s)| match *s {
                Source::Same(_) => None,
                Source::Changed(i) => Some((rows.rows[i].seq, j)),
                Source::New(seq) => Some((seq, j)),
            })
            .collect()
    }

    pub fn is_empty(&self) -> bool {
        self.deletes.is_empty() && self.plan.iter().all(|s| matches!(s, Source::Same(_)))
    }
}

impl<T: Record> Rows<T> {
    /// Rows as read from the store, `seq` ascending.
    pub fn new(rows: Vec<Row<T>>) -> Rows<T> {
        let next_seq = rows.last().map_or(0, |r| r.seq + 1);
        Rows { rows, next_seq }
    }

    /// Rows for `records`, numbered from 0 (a table written whole).
    pub fn numbered(records: &[impl Entry<T>]) -> Rows<T> {
        Rows::new(
            records
                .iter()
                .enumerate()
                .map(|(i, rec)| Row {
                    seq: i as i64,
                    rec: rec.share(),
                })
                .collect(),
        )
    }

    pub fn records(&self) -> impl Iterator<Item = &T> {
        self.rows.iter().map(|r| &*r.rec)
    }

    /// The committed records, shared.
    pub fn shared(&self) -> Vec<Arc<T>> {
        self.rows.iter().map(|r| r.rec.clone()).collect()
    }

    pub fn seqs(&self) -> impl Iterator<Item = i64> + '_ {
        self.rows.iter().map(|r| r.seq)
    }

    /// What `new` changes. Walks both lists together, so the usual change (one record
    /// added at the end, edited or removed) costs one comparison per record and no
    /// lookup; only records out of the committed order are looked up by id.
    pub fn diff(&self, new: &[impl Entry<T>]) -> Diff {
        let old = &self.rows;
        let mut next = 0;
        let mut passed: HashMap<&str, VecDeque<usize>> = HashMap::new();
        let mut plan = Vec::with_capacity(new.len());
        let mut deletes = Vec::new();
        let mut next_seq = self.next_seq;
        let mut last_seq = i64::MIN;
        for entry in new {
            // The usual case at a host's scale: the committed record itself, at the next
            // place (a pointer compare, no look at the record).
            if let Some(r) = old
                .get(next)
                .filter(|r| r.seq > last_seq && entry.is(&r.rec))
            {
                last_seq = r.seq;
                next += 1;
                plan.push(Source::Same(next - 1));
                continue;
            }
            let rec = entry.get();
            let id = rec.id();
            let found = if old.get(next).is_some_and(|r| r.rec.id() == id) {
                next += 1;
                Some(next - 1)
            } else if let Some(i) = passed.get_mut(id).and_then(VecDeque::pop_front) {
                Some(i)
            } else {
                let mut hit = None;
                while let Some(r) = old.get(next) {
                    next += 1;
                    if r.rec.id() == id {
                        hit = Some(next - 1);
                        break;
                    }
                    passed.entry(r.rec.id()).or_default().push_back(next - 1);
                }
                hit
            };
            let source = match found {
                Some(i) if old[i].seq > last_seq => {
                    last_seq = old[i].seq;
                    if entry.is(&old[i].rec) || *old[i].rec == *rec {
                        Source::Same(i)
                    } else {
                        Source::Changed(i)
                    }
                }
                moved => {
                    if let Some(i) = moved {
                        deletes.push(old[i].seq);
                    }
                    last_seq = next_seq;
                    next_seq += 1;
                    Source::New(last_seq)
                }
            };
            plan.push(source);
        }
        deletes.extend(passed.values().flatten().map(|&i| old[i].seq));
        deletes.extend(old[next..].iter().map(|r| r.seq));
        Diff {
            plan,
            deletes,
            next_seq,
        }
    }

    /// The rows once `diff` (made from `new`) is committed: kept rows are moved, not
    /// copied; changed and new records are copied from `new`.
    pub fn apply(&mut self, diff: Diff, new: &[impl Entry<T>]) {
        self.next_seq = diff.next_seq;
        // The daemon's usual change: records edited in place, others added at the end.
        let in_place = diff.deletes.is_empty()
            && diff.plan.iter().enumerate().all(|(j, s)| match *s {
                Source::Same(i) | Source::Changed(i) => i == j,
                Source::New(_) => j >= self.rows.len(),
            });
        if in_place {
            for (j, source) in diff.plan.into_iter().enumerate() {
                match source {
                    Source::Same(_) => {}
                    Source::Changed(i) => self.rows[i].rec = new[j].share(),
                    Source::New(seq) => self.rows.push(Row {
                        seq,
                        rec: new[j].share(),
                    }),
                }
            }
            return;
        }
        let mut old = std::mem::take(&mut self.rows).into_iter().enumerate();
        let mut rows = Vec::with_capacity(new.len());
        for (source, rec) in diff.plan.into_iter().zip(new) {
            let row = match source {
                // Kept rows come in index order (their seqs grow along the list).
                Source::Same(i) | Source::Changed(i) => {
                    let Some((_, mut row)) = old.find(|(k, _)| *k == i) else {
                        continue;
                    };
                    if matches!(source, Source::Changed(_)) {
                        row.rec = rec.share();
                    }
                    row
                }
                Source::New(seq) => Row {
                    seq,
                    rec: rec.share(),
                },
            };
            rows.push(row);
        }
        self.rows = rows;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, Debug, PartialEq)]
    struct R(&'static str, u32);

    impl Record for R {
        fn id(&self) -> &str {
            self.0
        }
    }

    impl Entry<R> for R {
        fn get(&self) -> &R {
            self
        }
        fn share(&self) -> Arc<R> {
            Arc::new(self.clone())
        }
        fn is(&self, _: &Arc<R>) -> bool {
            false
        }
    }

    fn committed(recs: &[R]) -> Rows<R> {
        Rows::numbered(recs)
    }

    /// Applies `new` to `rows`; returns (written ids, deleted seqs).
    fn change(rows: &mut Rows<R>, new: &[R]) -> (Vec<&'static str>, Vec<i64>) {
        let d = rows.diff(new);
        let written = d.writes(rows).iter().map(|&(_, j)| new[j].0).collect();
        let mut deleted = d.deletes.clone();
        deleted.sort();
        rows.apply(d, new);
        assert_eq!(rows.records().cloned().collect::<Vec<_>>(), new);
        let seqs: Vec<i64> = rows.rows.iter().map(|r| r.seq).collect();
        assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
        (written, deleted)
    }

    #[test]
    fn nothing_changed_writes_nothing() {
        let recs = [R("a", 1), R("b", 2)];
        let rows = committed(&recs);
        assert!(rows.diff(&recs).is_empty());
    }

    #[test]
    fn the_daemons_changes_write_one_row_each() {
        let mut rows = committed(&[R("a", 1), R("b", 2), R("c", 3)]);
        // Appended.
        let (w, d) = change(&mut rows, &[R("a", 1), R("b", 2), R("c", 3), R("d", 4)]);
        assert_eq!((w, d), (vec!["d"], vec![]));
        // Edited in place.
        let (w, d) = change(&mut rows, &[R("a", 1), R("b", 9), R("c", 3), R("d", 4)]);
        assert_eq!((w, d), (vec!["b"], vec![]));
        // Removed from the middle: its row (seq 1) goes, the others stay.
        let (w, d) = change(&mut rows, &[R("a", 1), R("c", 3), R("d", 4)]);
        assert_eq!((w, d), (vec![], vec![1]));
        // Everything removed.
        let (w, d) = change(&mut rows, &[]);
        assert_eq!((w, d), (vec![], vec![0, 2, 3]));
    }

    #[test]
    fn a_record_put_before_others_renumbers_what_follows_it() {
        let mut rows = committed(&[R("a", 1), R("b", 2)]);
        let (w, d) = change(&mut rows, &[R("x", 0), R("a", 1), R("b", 2)]);
        assert_eq!((w, d), (vec!["x", "a", "b"], vec![0, 1]));
        // Swapped: the one that moved behind gets a new row.
        let (w, _) = change(&mut rows, &[R("x", 0), R("b", 2), R("a", 1)]);
        assert_eq!(w, vec!["a"]);
    }

    #[test]
    fn duplicate_ids_each_keep_a_row() {
        let mut rows = committed(&[R("a", 1), R("a", 2)]);
        let (w, d) = change(&mut rows, &[R("a", 1), R("a", 2), R("a", 3)]);
        assert_eq!((w, d), (vec!["a"], vec![]));
        let (w, d) = change(&mut rows, &[R("a", 2), R("a", 3)]);
        // Matched in order: the first row takes the first record.
        assert_eq!(w.len() + d.len(), 3, "{w:?} {d:?}");
    }

    /// A record that counts how often it is compared.
    #[derive(Clone, Debug)]
    struct Counted(&'static str, u32);

    static COMPARED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

    impl PartialEq for Counted {
        fn eq(&self, other: &Self) -> bool {
            COMPARED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            (self.0, self.1) == (other.0, other.1)
        }
    }

    impl Record for Counted {
        fn id(&self) -> &str {
            self.0
        }
    }

    #[test]
    fn shared_records_the_change_did_not_touch_are_not_compared() {
        let ids: Vec<&'static str> = (0..1000)
            .map(|i| &*Box::leak(format!("c{i}").into_boxed_str()))
            .collect();
        let mut state: Vec<Arc<Counted>> = ids.iter().map(|id| Arc::new(Counted(id, 0))).collect();
        let mut rows = Rows::numbered(&state);
        // One changed through a copy of its own, one added.
        Arc::make_mut(&mut state[500]).1 = 7;
        state.push(Arc::new(Counted("new", 0)));
        COMPARED.store(0, std::sync::atomic::Ordering::Relaxed);
        let d = rows.diff(&state);
        assert_eq!(
            COMPARED.load(std::sync::atomic::Ordering::Relaxed),
            1,
            "only the copy"
        );
        let written: Vec<usize> = d.writes(&rows).iter().map(|&(_, j)| j).collect();
        assert_eq!(written, [500, 1000]);
        rows.apply(d, &state);
        // After the commit the state's records are the committed ones again.
        COMPARED.store(0, std::sync::atomic::Ordering::Relaxed);
        assert!(rows.diff(&state).is_empty());
        assert_eq!(COMPARED.load(std::sync::atomic::Ordering::Relaxed), 0);
    }
}
