//! Every mutating operation has one shape: change the intended state and commit it to
//! the store, reach the fault point (tests kill the daemon there), do the kernel work,
//! and if that fails, undo the kernel work and put the previous state back. `transact`
//! is that shape, written once.
//!
//! Why commit first: a crash after the commit leaves a state that reconcile completes
//! (or cleans up) at the next start; a crash before it leaves nothing to repair.
//!
//! What is put back on failure is the state as last committed (`Store::savepoint`):
//! every change is committed, so that is the state before the operation, kept without
//! copying it.
use log::warn;

use crate::{
    error::{NetdError, Result},
    store::{Savepoint, State, Store},
};

/// The state and where it is committed.
pub trait Transactional {
    fn state_mut(&mut self) -> &mut State;
    fn commit(&mut self) -> anyhow::Result<()>;
    /// The state as last committed, to put back if the operation fails.
    fn savepoint(&mut self) -> Savepoint;
}

/// Test-only fault injection: with NETD_FAULT=<point> the daemon dies (like kill -9)
/// when it reaches that point, so tests can check what a restart makes of it.
pub fn fault(point: &str) {
    if std::env::var("NETD_FAULT").is_ok_and(|p| p == point) {
        warn!("NETD_FAULT={point}: aborting");
        std::process::abort();
    }
}

/// Runs one mutating operation (see the module doc). `change` edits the state and
/// returns what the kernel work needs; `work` does the kernel work; `undo` removes
/// whatever `work` may have made when it failed. The error names the operation.
pub async fn transact<X: Transactional, C, T>(
    ctx: &mut X,
    operation: &str,
    fault_point: &str,
    change: impl FnOnce(&mut State) -> Result<C>,
    work: impl AsyncFnOnce(&mut X, &C) -> anyhow::Result<T>,
    undo: impl AsyncFnOnce(&mut X, &C),
) -> Result<T> {
    let (before, planned) = commit_change(ctx, operation, fault_point, change)?;
    match work(ctx, &planned).await {
        Ok(t) => Ok(t),
        Err(e) => {
            undo(ctx, &planned).await;
            before.rollback(ctx.state_mut());
            ctx.commit()?;
            // A NetdError from the work keeps its kind (a bad command is the user's
            // fault, not the daemon's); anything else is internal.
            Err(NetdError::from(e.context(operation.to_string())))
        }
    }
}

/// Runs one removal: `change` takes the object out of the state, which is committed
/// first (past the fault point a crash leaves a store without it, and a start removes
/// what the kernel still has of it); then `work` removes the kernel's objects, best
/// effort, and nothing is undone: what it cannot remove now is a leftover that
/// reconcile removes at the next start, since the store no longer wants it.
pub async fn remove<X: Transactional, C, T>(
    ctx: &mut X,
    operation: &str,
    fault_point: &str,
    change: impl FnOnce(&mut State) -> Result<C>,
    work: impl AsyncFnOnce(&mut X, C) -> T,
) -> Result<T> {
    let (_, planned) = commit_change(ctx, operation, fault_point, change)?;
    Ok(work(ctx, planned).await)
}

/// The first half of every operation: `change` applied and committed (a refused change
/// or a failed commit puts the state back as it was), then the fault point. The
/// savepoint is what an undo goes back to.
fn commit_change<X: Transactional, C>(
    ctx: &mut X,
    operation: &str,
    fault_point: &str,
    change: impl FnOnce(&mut State) -> Result<C>,
) -> Result<(Savepoint, C)> {
    let before = ctx.savepoint();
    let planned = match change(ctx.state_mut()) {
        Ok(p) => p,
        Err(e) => {
            // A refused change may have edited the state half-way.
            before.rollback(ctx.state_mut());
            return Err(e);
        }
    };
    if let Err(e) = ctx.commit() {
        before.rollback(ctx.state_mut());
        return Err(NetdError::Internal(format!("{operation}: {e:#}")));
    }
    fault(fault_point);
    Ok((before, planned))
}

/// A store and its state: the plain `Transactional`.
pub struct Committed<'a> {
    pub state: &'a mut State,
    pub store: &'a Store,
}

impl Transactional for Committed<'_> {
    fn state_mut(&mut self) -> &mut State {
        self.state
    }
    fn commit(&mut self) -> anyhow::Result<()> {
        self.store.commit(self.state)
    }
    fn savepoint(&mut self) -> Savepoint {
        self.store.savepoint(self.state)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Ctx {
        state: State,
        store: Store,
        kernel: Vec<String>,
        undone: bool,
    }

    impl Transactional for Ctx {
        fn state_mut(&mut self) -> &mut State {
            &mut self.state
        }
        fn commit(&mut self) -> anyhow::Result<()> {
            self.store.commit(&self.state)
        }
        fn savepoint(&mut self) -> Savepoint {
            self.store.savepoint(&self.state)
        }
    }

    fn ctx(tag: &str) -> (Ctx, std::path::PathBuf) {
        let dir = std::env::temp_dir().join(format!("netd-txn-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let (store, state) = Store::open(&dir).unwrap();
        (
            Ctx {
                state,
                store,
                kernel: Vec::new(),
                undone: false,
            },
            dir,
        )
    }

    fn run<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(f)
    }

    #[test]
    fn success_keeps_the_committed_change_and_the_kernel_work() {
        let (mut c, dir) = ctx("ok");
        let r = run(transact(
            &mut c,
            "creating thing",
            "never",
            |s| {
                s.next_net_id = 5;
                Ok(5u32)
            },
            async |c: &mut Ctx, n: &u32| {
                c.kernel.push(format!("made {n}"));
                Ok("done")
            },
            async |c: &mut Ctx, _| c.undone = true,
        ));
        assert_eq!(r.unwrap(), "done");
        assert_eq!(c.kernel, ["made 5"]);
        assert!(!c.undone);
        let (_, on_disk) = Store::open(&dir).unwrap();
        assert_eq!(on_disk.next_net_id, 5, "committed before the kernel work");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn failed_kernel_work_is_undone_and_the_state_restored_on_disk() {
        let (mut c, dir) = ctx("fail");
        c.state.next_net_id = 1;
        c.store.commit(&c.state).unwrap();
        let r = run(transact(
            &mut c,
            "creating thing",
            "never",
            |s| {
                s.next_net_id = 9;
                Ok(())
            },
            async |c: &mut Ctx, _: &()| -> anyhow::Result<()> {
                // The work saw the committed change.
                assert_eq!(c.state.next_net_id, 9);
                c.kernel.push("half".into());
                Err(anyhow::anyhow!("netlink said no"))
            },
            async |c: &mut Ctx, _| {
                c.kernel.clear();
                c.undone = true;
            },
        ));
        let e = r.unwrap_err().to_string();
        assert!(
            e.contains("creating thing") && e.contains("netlink said no"),
            "{e}"
        );
        assert!(c.undone && c.kernel.is_empty());
        assert_eq!(c.state.next_net_id, 1);
        let (_, on_disk) = Store::open(&dir).unwrap();
        assert_eq!(on_disk.next_net_id, 1, "the old state is committed again");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_refused_change_touches_nothing() {
        let (mut c, dir) = ctx("refused");
        let r = run(transact(
            &mut c,
            "creating thing",
            "never",
            |_| Err::<(), _>(NetdError::Conflict("name in use".into())),
            async |c: &mut Ctx, _: &()| {
                c.kernel.push("must not run".into());
                Ok(())
            },
            async |_: &mut Ctx, _| {},
        ));
        assert!(matches!(r, Err(NetdError::Conflict(_))));
        assert!(c.kernel.is_empty());
        std::fs::remove_dir_all(dir).unwrap();
    }
}
