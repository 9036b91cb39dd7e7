//! What answered a client request: decided while it runs, from the events
//! the layers below report during it.
//!
//! The client-side layer opens a scope (a thread-local byte) around its
//! inner service's `call` and around each poll of the response future. An
//! event that [`Stats`](super::Stats) observes inside a scope marks the
//! request it belongs to: a cache hit, a coalesced follower, a call that
//! reached the upstream layer. Events outside any scope (a registry poll
//! loop's fetch, a cache's background refresh) mark nothing, so they are
//! never counted as client savings.
//!
//! Opening and closing a scope is two thread-local accesses; the event side
//! one more. The scope follows the request's task wherever the layers below
//! do their work for it inside `call` or `poll`, which is every layer of the
//! crate: work moved to another task (a stale-while-revalidate refresh) is
//! not the request's.

use std::cell::Cell;

/// Where a client request's answer came from.
///
/// When a request sees several, the later variant wins: a coalesced
/// follower served stale after its call failed was coalesced; a follower
/// whose response could not be shared, and which then made its own call,
/// reached the upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
pub(crate) enum Answer {
    /// Nothing saved it: it went down the stack, and got the upstream's
    /// answer or a local error (or was dropped before either).
    Forwarded = 1,
    /// The cache answered (fresh, or stale).
    Cache = 2,
    /// It joined a call in flight, or was answered from the reuse window.
    Coalesced = 3,
    /// Its own call reached the upstream layer.
    Upstream = 4,
    /// A shared poll loop's value answered it (set by the caller, never by
    /// an event).
    PollLoop = 5,
}

/// How many [`Answer::part`]s there are.
pub(crate) const PARTS: usize = 4;

impl Answer {
    /// Which counter of the saving the request goes to: 0 forwarded, 1 cache
    /// hits, 2 coalesced, 3 poll loop.
    #[inline]
    pub(crate) fn part(self) -> usize {
        match self {
            Answer::Forwarded | Answer::Upstream => 0,
            Answer::Cache => 1,
            Answer::Coalesced => 2,
            Answer::PollLoop => 3,
        }
    }

    fn from_u8(n: u8) -> Option<Answer> {
        Some(match n {
            1 => Answer::Forwarded,
            2 => Answer::Cache,
            3 => Answer::Coalesced,
            4 => Answer::Upstream,
            5 => Answer::PollLoop,
            _ => return None,
        })
    }
}

thread_local! {
    /// The answer of the client request running on this thread; 0 outside
    /// any.
    static CURRENT: Cell<u8> = const { Cell::new(0) };
}

/// The scope of one client request on this thread: restores the enclosing
/// one (usually none) when dropped, panics included.
pub(crate) struct Scope {
    outer: u8,
}

impl Scope {
    /// Opens the scope of a request whose answer is `answer` so far.
    #[inline]
    pub(crate) fn enter(answer: Answer) -> Scope {
        Scope {
            outer: CURRENT.replace(answer as u8),
        }
    }

    /// Closes the scope; returns the request's answer as the events inside
    /// left it.
    #[inline]
    pub(crate) fn exit(self) -> Answer {
        Answer::from_u8(CURRENT.get()).unwrap_or(Answer::Forwarded)
    }
}

impl Drop for Scope {
    #[inline]
    fn drop(&mut self) {
        CURRENT.set(self.outer);
    }
}

/// Marks the request running on this thread, if any, with `answer` (unless
/// it has a later one already).
#[inline]
pub(crate) fn mark(answer: Answer) {
    CURRENT.with(|current| {
        let now = current.get();
        if now != 0 && now < answer as u8 {
            current.set(answer as u8);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_outside_a_scope_change_nothing() {
        mark(Answer::Cache);
        let scope = Scope::enter(Answer::Forwarded);
        assert_eq!(scope.exit(), Answer::Forwarded);
    }

    #[test]
    fn the_latest_kind_of_answer_wins_and_an_earlier_one_does_not_undo_it() {
        let scope = Scope::enter(Answer::Forwarded);
        mark(Answer::Coalesced);
        mark(Answer::Cache);
        assert_eq!(scope.exit(), Answer::Coalesced);
        let scope = Scope::enter(Answer::Forwarded);
        mark(Answer::Cache);
        mark(Answer::Upstream);
        assert_eq!(scope.exit(), Answer::Upstream);
    }

    #[test]
    fn a_nested_scope_restores_the_enclosing_request_when_it_ends() {
        let outer = Scope::enter(Answer::Forwarded);
        mark(Answer::Cache);
        {
            let inner = Scope::enter(Answer::Forwarded);
            mark(Answer::Coalesced);
            assert_eq!(inner.exit(), Answer::Coalesced);
        }
        assert_eq!(outer.exit(), Answer::Cache);
        mark(Answer::Upstream);
        assert_eq!(CURRENT.get(), 0, "no scope left open");
    }

    #[test]
    fn a_panic_inside_a_scope_does_not_leave_it_open() {
        let caught = std::panic::catch_unwind(|| {
            let _scope = Scope::enter(Answer::Forwarded);
            panic!("inner call panicked");
        });
        assert!(caught.is_err());
        assert_eq!(CURRENT.get(), 0);
    }
}
