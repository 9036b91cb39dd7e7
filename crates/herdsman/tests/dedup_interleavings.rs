//! Property tests: random interleavings of arrivals, polls, cancellations,
//! completions and panics, driven by hand on one thread.
//!
//! Every future is polled only when its waker fired (or when the test polls it
//! spuriously on purpose), so a lost wake-up shows up as a hang, not as a pass.

use std::{
    collections::HashMap,
    future::Future,
    pin::Pin,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    task::{Context, Poll, Wake, Waker},
};

use herdsman::{
    dedup::{DedupLayer, Panicked},
    error::{find, BoxError},
    key::Key,
};
use proptest::prelude::*;
use tower::{Layer, Service};

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum CallState {
    Running,
    Done,
    Panic,
}

#[derive(Default)]
struct Control {
    calls: Vec<(u8, CallState, Option<Waker>)>,
}

/// An upstream whose calls finish or panic when the test says so.
#[derive(Clone, Default)]
struct Controlled {
    control: Arc<Mutex<Control>>,
}

struct CallFut {
    id: usize,
    control: Arc<Mutex<Control>>,
}

impl Future for CallFut {
    type Output = Result<(u8, usize), std::convert::Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut control = self.control.lock().unwrap();
        let call = &mut control.calls[self.id];
        match call.1 {
            CallState::Running => {
                call.2 = Some(cx.waker().clone());
                Poll::Pending
            }
            CallState::Done => Poll::Ready(Ok((call.0, self.id))),
            CallState::Panic => {
                drop(control);
                panic!("upstream panicked");
            }
        }
    }
}

impl Service<u8> for Controlled {
    type Response = (u8, usize);
    type Error = std::convert::Infallible;
    type Future = CallFut;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, key: u8) -> CallFut {
        let mut control = self.control.lock().unwrap();
        control.calls.push((key, CallState::Running, None));
        CallFut {
            id: control.calls.len() - 1,
            control: self.control.clone(),
        }
    }
}

struct Flag(AtomicBool);

impl Wake for Flag {
    fn wake(self: Arc<Self>) {
        self.0.store(true, Ordering::SeqCst);
    }
}

type Fut = Pin<Box<dyn Future<Output = Result<(u8, usize), BoxError>> + Send>>;

struct Caller {
    key: u8,
    fut: Fut,
    woken: Arc<Flag>,
}

#[derive(Debug, Clone)]
enum Op {
    Arrive(u8),
    Poll(usize),
    Cancel(usize),
    Complete(usize),
    Panic(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0u8..3).prop_map(Op::Arrive),
        3 => any::<usize>().prop_map(Op::Poll),
        2 => any::<usize>().prop_map(Op::Cancel),
        3 => any::<usize>().prop_map(Op::Complete),
        1 => any::<usize>().prop_map(Op::Panic),
    ]
}

/// What a caller ended with.
fn check(caller_key: u8, result: Result<(u8, usize), BoxError>) -> Result<(), TestCaseError> {
    match result {
        Ok((key, _)) => prop_assert_eq!(key, caller_key, "a caller got another key's response"),
        Err(err) => prop_assert!(
            find::<Panicked>(&*err).is_some(),
            "unexpected error: {}",
            err
        ),
    }
    Ok(())
}

fn run(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let upstream = Controlled::default();
    let layer = DedupLayer::new(|k: &u8| Some(Key::from(u64::from(*k))));
    let mut svc = layer.layer(upstream.clone());
    let mut callers: HashMap<usize, Caller> = HashMap::new();
    let mut next_id = 0;
    let mut arrivals = 0;

    let poll = |caller: &mut Caller| -> Poll<Result<(u8, usize), BoxError>> {
        caller.woken.0.store(false, Ordering::SeqCst);
        let waker = Waker::from(caller.woken.clone());
        caller.fut.as_mut().poll(&mut Context::from_waker(&waker))
    };
    let wake_call = |control: &Arc<Mutex<Control>>, pick: usize, state: CallState| {
        let mut control = control.lock().unwrap();
        let running: Vec<usize> = (0..control.calls.len())
            .filter(|&i| control.calls[i].1 == CallState::Running)
            .collect();
        if running.is_empty() {
            return;
        }
        let call = &mut control.calls[running[pick % running.len()]];
        call.1 = state;
        if let Some(waker) = call.2.take() {
            drop(control);
            waker.wake();
        }
    };

    for op in ops {
        match op {
            Op::Arrive(key) => {
                arrivals += 1;
                let mut caller = Caller {
                    key,
                    fut: Box::pin(svc.call(key)),
                    woken: Arc::new(Flag(AtomicBool::new(false))),
                };
                match poll(&mut caller) {
                    Poll::Ready(result) => check(key, result)?,
                    Poll::Pending => {
                        callers.insert(next_id, caller);
                    }
                }
                next_id += 1;
            }
            Op::Poll(pick) | Op::Cancel(pick) if !callers.is_empty() => {
                let mut ids: Vec<usize> = callers.keys().copied().collect();
                ids.sort();
                let id = ids[pick % ids.len()];
                if matches!(op, Op::Cancel(_)) {
                    callers.remove(&id);
                } else if let Poll::Ready(result) = poll(callers.get_mut(&id).unwrap()) {
                    let caller = callers.remove(&id).unwrap();
                    check(caller.key, result)?;
                }
            }
            Op::Poll(_) | Op::Cancel(_) => {}
            Op::Complete(pick) => wake_call(&upstream.control, pick, CallState::Done),
            Op::Panic(pick) => wake_call(&upstream.control, pick, CallState::Panic),
        }
    }

    // Finish every call; then only woken callers are polled. A caller left
    // pending with nothing to wake it is a hang.
    for _ in 0..1000 {
        if callers.is_empty() {
            break;
        }
        while upstream
            .control
            .lock()
            .unwrap()
            .calls
            .iter()
            .any(|c| c.1 == CallState::Running)
        {
            wake_call(&upstream.control, 0, CallState::Done);
        }
        let woken: Vec<usize> = callers
            .iter()
            .filter(|(_, c)| c.woken.0.load(Ordering::SeqCst))
            .map(|(id, _)| *id)
            .collect();
        prop_assert!(
            !woken.is_empty(),
            "{} callers hang: nothing woke them",
            callers.len()
        );
        for id in woken {
            if let Poll::Ready(result) = poll(callers.get_mut(&id).unwrap()) {
                let caller = callers.remove(&id).unwrap();
                check(caller.key, result)?;
            }
        }
    }
    prop_assert!(callers.is_empty());

    let stats = layer.handle().stats();
    prop_assert_eq!(stats.entries, 0, "the in-flight map did not drain");
    let calls = upstream.control.lock().unwrap().calls.len() as u64;
    prop_assert!(calls <= arrivals);
    prop_assert_eq!(
        stats.leaders,
        calls,
        "every inner call has exactly one leader"
    );
    prop_assert_eq!(stats.leaders + stats.coalesced, arrivals);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2_000, ..ProptestConfig::default() })]

    #[test]
    fn every_caller_gets_its_own_keys_result_and_the_map_drains(ops in prop::collection::vec(op(), 1..60)) {
        // Panics in the upstream are expected here; keep the output readable.
        std::panic::set_hook(Box::new(|_| {}));
        run(ops)?;
    }
}
