//! A circuit breaker: after consecutive failures calls are refused at once for a cool-down,
//! then one trial call decides whether the service is back.
//!
//! [`Breaker`] is the pure state machine: every method takes the current [`Instant`], so its
//! behaviour is a table of (state, event, time) → state, tested without sleeping.
//! [`SharedBreaker`] wraps it in a mutex for the OSRM client.
//!
//! - **Closed**: calls go through; [`FAILURES_TO_OPEN`] failures in a row open it.
//! - **Open**: calls are refused at once for [`COOL_DOWN_MS`].
//! - **Half-open** (the cool-down is over): one trial call goes through; the others are refused
//!   until it reports. Its success closes the breaker, its failure re-opens it for another
//!   cool-down. A trial that never reports (its caller gave up) frees the slot after a cool-down.
//!
//! Any success — a call admitted before the breaker opened, or a probe, which is never refused —
//! closes it.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Consecutive failures that open the breaker.
pub const FAILURES_TO_OPEN: u32 = 5;
/// How long an open breaker refuses every call before it lets a trial through.
pub const COOL_DOWN_MS: u64 = 2_000;

/// Where the breaker stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Closed,
    /// Refusing calls until the cool-down ends.
    Open,
    /// The cool-down is over: one trial call may go (or is on its way).
    HalfOpen,
}

/// The circuit breaker's state machine. Not thread-safe: see [`SharedBreaker`].
#[derive(Debug, Clone)]
pub struct Breaker {
    failures_to_open: u32,
    cool_down: Duration,
    consecutive_failures: u32,
    /// When it last opened (or re-opened); `None` while closed.
    opened_at: Option<Instant>,
    /// When the half-open trial call was let through, while it has not reported.
    trial_since: Option<Instant>,
}

impl Default for Breaker {
    fn default() -> Breaker {
        Breaker::new(FAILURES_TO_OPEN, Duration::from_millis(COOL_DOWN_MS))
    }
}

impl Breaker {
    /// A closed breaker that opens after `failures_to_open` failures in a row (at least 1) and
    /// stays open for `cool_down`.
    pub fn new(failures_to_open: u32, cool_down: Duration) -> Breaker {
        Breaker {
            failures_to_open: failures_to_open.max(1),
            cool_down,
            consecutive_failures: 0,
            opened_at: None,
            trial_since: None,
        }
    }

    /// The state at `now`.
    pub fn state(&self, now: Instant) -> State {
        match self.opened_at {
            None => State::Closed,
            Some(opened) if now.saturating_duration_since(opened) < self.cool_down => State::Open,
            Some(_) => State::HalfOpen,
        }
    }

    /// Failures since the last success.
    pub fn consecutive_failures(&self) -> u32 {
        self.consecutive_failures
    }

    /// May a call start at `now`? Closed: yes. Open: no. Half-open: yes for one trial call
    /// (which must report with [`Breaker::record`]), no for the others while it is out — unless
    /// it has been out for a whole cool-down, when it is presumed lost and another may go.
    pub fn admit(&mut self, now: Instant) -> bool {
        match self.state(now) {
            State::Closed => true,
            State::Open => false,
            State::HalfOpen => match self.trial_since {
                Some(since) if now.saturating_duration_since(since) < self.cool_down => false,
                _ => {
                    self.trial_since = Some(now);
                    true
                }
            },
        }
    }

    /// A call (or probe) finished at `now`: `ok` when the service answered.
    pub fn record(&mut self, ok: bool, now: Instant) {
        if ok {
            self.consecutive_failures = 0;
            self.opened_at = None;
            self.trial_since = None;
            return;
        }
        self.consecutive_failures = self.consecutive_failures.saturating_add(1);
        match self.state(now) {
            State::Closed => {
                if self.consecutive_failures >= self.failures_to_open {
                    self.opened_at = Some(now);
                }
            }
            // The trial (or a probe) failed: another cool-down.
            State::HalfOpen => {
                self.opened_at = Some(now);
                self.trial_since = None;
            }
            // A call admitted before it opened failed late: it is open already.
            State::Open => {}
        }
    }
}

/// A [`Breaker`] behind a mutex, held only for the few instructions of each transition.
#[derive(Debug, Default)]
pub struct SharedBreaker {
    inner: Mutex<Breaker>,
}

impl SharedBreaker {
    pub fn new(breaker: Breaker) -> SharedBreaker {
        SharedBreaker {
            inner: Mutex::new(breaker),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Breaker> {
        // The breaker's state is valid after any panic between its statements: keep using it.
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn admit(&self) -> bool {
        self.lock().admit(Instant::now())
    }

    pub fn record(&self, ok: bool) {
        self.lock().record(ok, Instant::now())
    }

    pub fn state(&self) -> State {
        self.lock().state(Instant::now())
    }

    pub fn consecutive_failures(&self) -> u32 {
        self.lock().consecutive_failures()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const COOL_DOWN: Duration = Duration::from_millis(COOL_DOWN_MS);

    fn ms(start: Instant, millis: u64) -> Instant {
        start + Duration::from_millis(millis)
    }

    /// One step of a scenario: at `at_ms`, do `event`, then expect `state` (and, for an
    /// admission, whether the call was let through).
    #[derive(Debug, Clone, Copy)]
    enum Event {
        Admit(bool),
        Success,
        Failure,
        Nothing,
    }

    fn run(steps: &[(u64, Event, State)]) {
        let start = Instant::now();
        let mut breaker = Breaker::default();
        for (number, &(at_ms, event, expected)) in steps.iter().enumerate() {
            let now = ms(start, at_ms);
            match event {
                Event::Admit(expected_admit) => assert_eq!(
                    breaker.admit(now),
                    expected_admit,
                    "step {number} ({at_ms} ms): admit"
                ),
                Event::Success => breaker.record(true, now),
                Event::Failure => breaker.record(false, now),
                Event::Nothing => {}
            }
            assert_eq!(
                breaker.state(now),
                expected,
                "step {number} ({at_ms} ms, {event:?})"
            );
        }
    }

    use Event::*;
    use State::*;

    #[test]
    fn it_opens_after_five_failures_in_a_row_and_refuses_at_once() {
        run(&[
            (0, Admit(true), Closed),
            (1, Failure, Closed),
            (2, Failure, Closed),
            (3, Failure, Closed),
            (4, Failure, Closed),
            (5, Failure, Open),
            (6, Admit(false), Open),
            (1_000, Admit(false), Open),
            (2_004, Admit(false), Open),
        ]);
    }

    #[test]
    fn a_success_between_failures_starts_the_count_again() {
        run(&[
            (0, Failure, Closed),
            (1, Failure, Closed),
            (2, Failure, Closed),
            (3, Failure, Closed),
            (4, Success, Closed),
            (5, Failure, Closed),
            (6, Failure, Closed),
            (7, Failure, Closed),
            (8, Failure, Closed),
            (9, Admit(true), Closed),
            (10, Failure, Open),
        ]);
    }

    #[test]
    fn after_the_cool_down_one_trial_goes_and_its_success_closes_it() {
        run(&[
            (0, Failure, Closed),
            (0, Failure, Closed),
            (0, Failure, Closed),
            (0, Failure, Closed),
            (0, Failure, Open),
            (1_999, Admit(false), Open),
            (2_000, Nothing, HalfOpen),
            (2_000, Admit(true), HalfOpen),
            // Others wait for the trial.
            (2_001, Admit(false), HalfOpen),
            (2_100, Admit(false), HalfOpen),
            (2_150, Success, Closed),
            (2_151, Admit(true), Closed),
            (2_152, Admit(true), Closed),
        ]);
    }

    #[test]
    fn a_failed_trial_opens_it_for_another_cool_down() {
        run(&[
            (0, Failure, Closed),
            (0, Failure, Closed),
            (0, Failure, Closed),
            (0, Failure, Closed),
            (0, Failure, Open),
            (2_500, Admit(true), HalfOpen),
            (2_700, Failure, Open),
            (2_701, Admit(false), Open),
            (4_699, Admit(false), Open),
            (4_700, Admit(true), HalfOpen),
            (4_800, Success, Closed),
        ]);
    }

    #[test]
    fn a_trial_that_never_reports_frees_the_slot_after_a_cool_down() {
        run(&[
            (0, Failure, Closed),
            (0, Failure, Closed),
            (0, Failure, Closed),
            (0, Failure, Closed),
            (0, Failure, Open),
            (2_000, Admit(true), HalfOpen),
            (3_999, Admit(false), HalfOpen),
            (4_000, Admit(true), HalfOpen),
            (4_001, Admit(false), HalfOpen),
        ]);
    }

    #[test]
    fn a_success_while_open_closes_it_as_a_probe_does() {
        run(&[
            (0, Failure, Closed),
            (0, Failure, Closed),
            (0, Failure, Closed),
            (0, Failure, Closed),
            (0, Failure, Open),
            (500, Success, Closed),
            (501, Admit(true), Closed),
        ]);
    }

    #[test]
    fn a_late_failure_while_open_does_not_extend_the_cool_down() {
        run(&[
            (0, Failure, Closed),
            (0, Failure, Closed),
            (0, Failure, Closed),
            (0, Failure, Closed),
            (0, Failure, Open),
            (1_500, Failure, Open),
            (2_000, Admit(true), HalfOpen),
        ]);
    }

    #[test]
    fn a_breaker_built_with_zero_failures_still_needs_one() {
        let start = Instant::now();
        let mut breaker = Breaker::new(0, COOL_DOWN);
        assert_eq!(breaker.state(start), Closed);
        assert!(breaker.admit(start));
        breaker.record(false, start);
        assert_eq!(breaker.state(start), Open);
        assert_eq!(breaker.consecutive_failures(), 1);
    }

    #[test]
    fn the_shared_breaker_counts_failures_from_several_threads() {
        let shared = std::sync::Arc::new(SharedBreaker::default());
        let threads: Vec<_> = (0..FAILURES_TO_OPEN)
            .map(|_| {
                let shared = shared.clone();
                std::thread::spawn(move || {
                    assert!(shared.admit());
                    shared.record(false);
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        assert_eq!(shared.state(), Open);
        assert!(!shared.admit());
        shared.record(true);
        assert_eq!(shared.state(), Closed);
    }
}
