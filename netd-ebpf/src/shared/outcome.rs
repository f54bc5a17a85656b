//! A stage's result across a BPF subprogram call (the stages of both families' entry
//! points are subprograms, each with a stack frame of its own).
use netd_common::drop_reason::DropReason;

use crate::parse::Kind;

/// A stage's outcome in one register. An enum with a payload comes back from a BPF
/// subprogram through the stack, with the bytes its variant leaves undefined, and the
/// verifier refuses to let them be read: a single integer has none.
#[derive(Clone, Copy)]
pub struct Outcome(i64);

const OUTCOME_NONE: i64 = i64::MIN;
/// Drops are encoded below this, verdicts (TC_ACT_*, -1 and up) above.
const OUTCOME_DROP: i64 = -1_000;
/// The parser's "not translated, for this reason" (`Kind::Pass`), below this.
const OUTCOME_SKIP: i64 = -1_000_000;

impl Outcome {
    pub fn none() -> Outcome {
        Outcome(OUTCOME_NONE)
    }
    pub fn skip(reason: DropReason) -> Outcome {
        Outcome(OUTCOME_SKIP - reason.0 as i64)
    }
    pub fn of(r: Result<i32, DropReason>) -> Outcome {
        match r {
            Ok(v) => Outcome(v as i64),
            Err(reason) => Outcome(OUTCOME_DROP - reason.0 as i64),
        }
    }
    /// None: the stage did not apply.
    #[inline(always)]
    pub fn get(self) -> Option<Result<i32, DropReason>> {
        match self.0 {
            OUTCOME_NONE => None,
            v if v <= OUTCOME_DROP => Some(Err(DropReason((OUTCOME_DROP - v) as u32))),
            v => Some(Ok(v as i32)),
        }
    }
    /// The reason of `skip`, if this is one.
    #[inline(always)]
    pub fn skipped(self) -> Option<DropReason> {
        (self.0 != OUTCOME_NONE && self.0 <= OUTCOME_SKIP)
            .then(|| DropReason((OUTCOME_SKIP - self.0) as u32))
    }

    /// A parser's result: Flow is 0, an ICMP error its header's offset.
    #[inline(always)]
    pub fn of_kind(k: Kind) -> Outcome {
        match k {
            Kind::Flow => Outcome(0),
            Kind::IcmpError(off) => Outcome(off as i64),
            Kind::Pass(reason) => Outcome::skip(reason),
        }
    }
    /// The parser's result `of_kind` encoded, or the drop a parse stage decided (the
    /// uplink guard's).
    #[inline(always)]
    pub fn kind(self) -> Result<Kind, DropReason> {
        if let Some(reason) = self.skipped() {
            return Ok(Kind::Pass(reason));
        }
        match self.get() {
            Some(Ok(0)) => Ok(Kind::Flow),
            Some(Ok(off)) => Ok(Kind::IcmpError(off as usize)),
            Some(Err(e)) => Err(e),
            None => Ok(Kind::Pass(netd_common::drop_reason::UNTRANSLATABLE)),
        }
    }
}
