//! The liveness of one gateway as a pure state machine: no clock, no I/O.
//! The caller ([`super::probe`]) feeds it the probes it sent
//! ([`Liveness::sent`]), one [`Liveness::tick`] per probe interval with the
//! newest reply the datapath recorded for that gateway, and what Kubernetes
//! says ([`Liveness::set_external_down`]); it answers with transitions.
//!
//! Contract:
//! - **States**: [`State::Unknown`] until the first judgement (treated as
//!   up: the caller writes nothing for it), then [`State::Up`] or
//!   [`State::Down`]. The state the dataplane should see
//!   ([`Liveness::state`]) is `Down` while Kubernetes says the gateway is not
//!   Ready, and otherwise the state from probes alone ([`Liveness::probed`]).
//! - **Judging a probe**: each tick judges the probe sent before it (the
//!   one outstanding): it was *answered* if the newest reply's sequence
//!   number is at or after the outstanding one in serial-number arithmetic
//!   (RFC 1982: `seq − outstanding` as a signed 32-bit value is ≥ 0), so
//!   sequence numbers may wrap; a reply to an older probe (a late one) is
//!   not an answer. A tick with no probe outstanding judges nothing.
//! - **Down** after exactly [`Config::down_after_misses`] consecutive
//!   unanswered probes (from `Up` or `Unknown`).
//! - **Up** from `Unknown` at the first answered probe; from `Down` only
//!   after [`Config::hold_down_ticks`] consecutive answered probes (the
//!   hold-down: one miss restarts it), so a flapping gateway stays down.
//! - **RTT**: a reply newer than the last one sampled is one RTT sample
//!   (late replies included: they say how late), each reply at most once.
//! - Sequence numbers passed to [`Liveness::sent`] must advance (serially)
//!   from one probe to the next; the newest `sent` before a tick is the one
//!   it judges.

use std::time::Duration;

/// How liveness is decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    /// Time between probes (one tick).
    pub interval: Duration,
    /// Consecutive unanswered probes that make a gateway down.
    pub down_after_misses: u32,
    /// How long a down gateway must answer every probe before it is up.
    pub hold_down: Duration,
}

impl Default for Config {
    /// 100 ms probes, down after 3 misses, up after 1 s of answers.
    fn default() -> Config {
        Config { interval: Duration::from_millis(100), down_after_misses: 3, hold_down: Duration::from_secs(1) }
    }
}

impl Config {
    /// The hold-down in ticks: `hold_down / interval` rounded up, at least 1.
    #[must_use]
    pub fn hold_down_ticks(&self) -> u32 {
        let interval = self.interval.as_nanos().max(1);
        u32::try_from(self.hold_down.as_nanos().div_ceil(interval)).unwrap_or(u32::MAX).max(1)
    }
}

/// A gateway's liveness.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum State {
    /// Not judged yet; treated as up.
    Unknown,
    /// In service.
    Up,
    /// Out of service: the classifier picks the next gateway.
    Down,
}

impl State {
    /// `unknown`, `up` or `down`.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            State::Unknown => "unknown",
            State::Up => "up",
            State::Down => "down",
        }
    }

    /// True for [`State::Down`] (the only state written to the dataplane).
    #[must_use]
    pub const fn is_down(self) -> bool {
        matches!(self, State::Down)
    }
}

/// The newest reply the datapath recorded for a gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reply {
    /// Its sequence number.
    pub seq: u32,
    /// Its round trip (`recv_ns − sent_ns`), if the clocks make sense.
    pub rtt: Option<Duration>,
}

/// A change of [`Liveness::state`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transition {
    /// Before.
    pub from: State,
    /// After.
    pub to: State,
}

/// What one [`Liveness::tick`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Step {
    /// Whether the outstanding probe was answered; `None` if there was none.
    pub answered: Option<bool>,
    /// A new RTT sample.
    pub rtt: Option<Duration>,
    /// The state change, if any.
    pub transition: Option<Transition>,
}

/// True if `seq` is `reference` or after it, in serial-number arithmetic.
#[must_use]
pub const fn at_or_after(seq: u32, reference: u32) -> bool {
    seq.wrapping_sub(reference) < 1 << 31
}

/// One gateway's state machine; see the module doc.
#[derive(Debug, Clone)]
pub struct Liveness {
    down_after: u32,
    hold_ticks: u32,
    probed: State,
    external_down: bool,
    outstanding: Option<u32>,
    misses: u32,
    streak: u32,
    last_sampled: Option<u32>,
    last_rtt: Option<Duration>,
}

impl Liveness {
    /// A gateway not judged yet ([`State::Unknown`]).
    #[must_use]
    pub fn new(config: &Config) -> Liveness {
        Liveness {
            down_after: config.down_after_misses.max(1),
            hold_ticks: config.hold_down_ticks(),
            probed: State::Unknown,
            external_down: false,
            outstanding: None,
            misses: 0,
            streak: 0,
            last_sampled: None,
            last_rtt: None,
        }
    }

    /// A gateway already down (as the dataplane says after an agent
    /// restart): it comes up only after the hold-down, like any down one.
    #[must_use]
    pub fn down(config: &Config) -> Liveness {
        Liveness { probed: State::Down, ..Liveness::new(config) }
    }

    /// The state the dataplane should see.
    #[must_use]
    pub fn state(&self) -> State {
        if self.external_down { State::Down } else { self.probed }
    }

    /// The state from probes alone.
    #[must_use]
    pub fn probed(&self) -> State {
        self.probed
    }

    /// Whether Kubernetes says the gateway is not Ready.
    #[must_use]
    pub fn external_down(&self) -> bool {
        self.external_down
    }

    /// Consecutive unanswered probes.
    #[must_use]
    pub fn misses(&self) -> u32 {
        self.misses
    }

    /// Consecutive answered probes.
    #[must_use]
    pub fn streak(&self) -> u32 {
        self.streak
    }

    /// The last RTT sample.
    #[must_use]
    pub fn last_rtt(&self) -> Option<Duration> {
        self.last_rtt
    }

    /// A probe with sequence number `seq` went out (or was attempted: a probe
    /// that could not be sent is never answered); the next tick judges it.
    pub fn sent(&mut self, seq: u32) {
        self.outstanding = Some(seq);
    }

    /// Kubernetes says the gateway is (not) Ready; returns the change of
    /// [`Liveness::state`], if any.
    pub fn set_external_down(&mut self, down: bool) -> Option<Transition> {
        let from = self.state();
        self.external_down = down;
        Self::change(from, self.state())
    }

    /// One probe interval ended; `newest` is the newest reply recorded for
    /// the gateway, if any. Judges the outstanding probe (see the module doc).
    pub fn tick(&mut self, newest: Option<Reply>) -> Step {
        let from = self.state();
        let mut step = Step::default();
        if let Some(r) = newest
            && self.last_sampled.is_none_or(|s| at_or_after(r.seq, s) && r.seq != s)
        {
            self.last_sampled = Some(r.seq);
            if let Some(rtt) = r.rtt {
                self.last_rtt = Some(rtt);
                step.rtt = Some(rtt);
            }
        }
        let Some(want) = self.outstanding.take() else { return step };
        let answered = newest.is_some_and(|r| at_or_after(r.seq, want));
        step.answered = Some(answered);
        if answered {
            self.misses = 0;
            self.streak = self.streak.saturating_add(1);
        } else {
            self.streak = 0;
            self.misses = self.misses.saturating_add(1);
        }
        self.probed = match self.probed {
            State::Unknown | State::Up if self.misses >= self.down_after => State::Down,
            State::Unknown if answered => State::Up,
            State::Down if self.streak >= self.hold_ticks => State::Up,
            s => s,
        };
        step.transition = Self::change(from, self.state());
        step
    }

    fn change(from: State, to: State) -> Option<Transition> {
        (from != to).then_some(Transition { from, to })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A gateway driven from sequence number `seq`: each [`Driver::tick`]
    /// judges the previous probe with `answer` and sends the next.
    struct Driver {
        m: Liveness,
        seq: u32,
        newest: Option<Reply>,
    }

    impl Driver {
        fn new(m: Liveness, seq: u32) -> Driver {
            let mut d = Driver { m, seq, newest: None };
            d.m.sent(seq);
            d
        }

        /// Ends the interval: the outstanding probe answered (its reply is
        /// now the newest) or not; sends the next probe.
        fn tick(&mut self, answer: bool) -> Step {
            if answer {
                self.newest = Some(Reply { seq: self.seq, rtt: Some(Duration::from_micros(200)) });
            }
            let step = self.m.tick(self.newest);
            self.seq = self.seq.wrapping_add(1);
            self.m.sent(self.seq);
            step
        }

        fn ticks(&mut self, answers: &[bool]) -> Vec<Transition> {
            answers.iter().filter_map(|a| self.tick(*a).transition).collect()
        }
    }

    fn up(seq: u32) -> Driver {
        let mut d = Driver::new(Liveness::new(&Config::default()), seq);
        assert_eq!(d.tick(true).transition, Some(Transition { from: State::Unknown, to: State::Up }));
        d
    }

    const DOWN: Transition = Transition { from: State::Up, to: State::Down };
    const UP: Transition = Transition { from: State::Down, to: State::Up };

    #[test]
    fn defaults_are_100ms_3_misses_and_a_1s_hold_down_of_10_ticks() {
        let c = Config::default();
        assert_eq!(
            (c.interval, c.down_after_misses, c.hold_down),
            (Duration::from_millis(100), 3, Duration::from_secs(1))
        );
        assert_eq!(c.hold_down_ticks(), 10);
        let odd = Config { interval: Duration::from_millis(300), ..c };
        assert_eq!(odd.hold_down_ticks(), 4, "rounded up");
        let zero = Config { hold_down: Duration::ZERO, ..c };
        assert_eq!(zero.hold_down_ticks(), 1, "at least one answered probe");
    }

    #[test]
    fn unknown_is_treated_as_up_and_nothing_is_judged_before_a_probe() {
        let mut m = Liveness::new(&Config::default());
        assert_eq!(m.state(), State::Unknown);
        assert!(!m.state().is_down());
        for _ in 0..10 {
            assert_eq!(m.tick(None), Step::default(), "no probe outstanding: nothing judged");
        }
        assert_eq!((m.state(), m.misses()), (State::Unknown, 0));
    }

    #[test]
    fn down_after_exactly_three_consecutive_misses_not_two() {
        let mut d = up(7);
        assert_eq!(d.ticks(&[false, false]), []);
        assert_eq!((d.m.state(), d.m.misses()), (State::Up, 2));
        // an answer resets the count
        assert_eq!(d.ticks(&[true, false, false]), []);
        assert_eq!(d.m.state(), State::Up);
        assert_eq!(d.tick(false).transition, Some(DOWN));
        assert_eq!((d.m.state(), d.m.misses()), (State::Down, 3));
        // a gateway dead from the start goes down the same way
        let mut dead = Driver::new(Liveness::new(&Config::default()), 0);
        assert_eq!(dead.ticks(&[false, false]), []);
        assert_eq!(dead.m.state(), State::Unknown);
        assert_eq!(dead.ticks(&[false]), [Transition { from: State::Unknown, to: State::Down }]);
    }

    #[test]
    fn up_only_after_the_hold_down_of_continuous_replies() {
        let mut d = up(100);
        assert_eq!(d.ticks(&[false; 3]), [DOWN]);
        assert_eq!(d.ticks(&[true; 9]), [], "nine answers are not the hold-down");
        assert_eq!(d.m.state(), State::Down);
        assert_eq!(d.tick(true).transition, Some(UP), "the tenth is");
        // a miss during the hold-down restarts it
        let mut d = up(0);
        d.ticks(&[false; 3]);
        assert_eq!(d.ticks(&[true, true, true, true, true, false]), []);
        assert_eq!(d.ticks(&[true; 9]), []);
        assert_eq!(d.ticks(&[true]), [UP]);
    }

    #[test]
    fn a_single_late_reply_does_not_resurrect() {
        let mut d = up(50);
        d.ticks(&[false; 3]);
        // the reply to a probe judged missed arrives after its tick: it is
        // the newest reply at the next tick, but older than the probe judged
        let late = d.seq.wrapping_sub(1);
        d.newest = Some(Reply { seq: late, rtt: Some(Duration::from_millis(150)) });
        let step = d.tick(false);
        assert_eq!(step.answered, Some(false));
        assert_eq!(step.rtt, Some(Duration::from_millis(150)), "still an RTT sample");
        assert_eq!((d.m.state(), d.m.streak()), (State::Down, 0));
        // judged again, the same reply is neither an answer nor a new sample
        let step = d.tick(false);
        assert_eq!((step.answered, step.rtt, d.m.state()), (Some(false), None, State::Down));
    }

    #[test]
    fn a_reply_for_an_old_seq_does_not_count_as_fresh() {
        let mut d = up(1000);
        // the map keeps the reply to seq 1000 for ever: never fresh again
        assert_eq!(d.ticks(&[false, false]), []);
        assert_eq!(d.newest.map(|r| r.seq), Some(1000));
        assert_eq!(d.ticks(&[false]), [DOWN]);
        // a reply to a probe from before the outstanding one
        let mut m = Liveness::new(&Config::default());
        m.sent(20);
        assert_eq!(m.tick(Some(Reply { seq: 19, rtt: None })).answered, Some(false));
        m.sent(21);
        assert_eq!(m.tick(Some(Reply { seq: 22, rtt: None })).answered, Some(true), "a newer one answers");
    }

    #[test]
    fn a_flapping_gateway_stays_down() {
        let mut d = up(3);
        d.ticks(&[false; 3]);
        let alternating: Vec<bool> = (0..100).map(|i| i % 2 == 0).collect();
        assert_eq!(d.ticks(&alternating), []);
        assert_eq!(d.m.state(), State::Down);
        // and one that answers 9 of 10
        let nine_of_ten: Vec<bool> = (0..100).map(|i| i % 10 != 9).collect();
        assert_eq!(d.ticks(&nine_of_ten), []);
        assert_eq!(d.m.state(), State::Down);
    }

    #[test]
    fn sequence_numbers_wrap() {
        assert!(at_or_after(0, u32::MAX) && at_or_after(5, u32::MAX - 5) && at_or_after(7, 7));
        assert!(!at_or_after(u32::MAX, 0) && !at_or_after(u32::MAX - 5, 5));
        // up, down and up again across the wrap
        let mut d = up(u32::MAX - 2);
        assert_eq!(d.ticks(&[true, true]), []);
        assert_eq!(d.seq, 0, "wrapped");
        assert_eq!(d.ticks(&[false, false, false]), [DOWN]);
        assert_eq!(d.ticks(&[true; 10]), [UP]);
        // after the wrap, the reply to u32::MAX is old
        let mut m = Liveness::new(&Config::default());
        m.sent(2);
        assert_eq!(m.tick(Some(Reply { seq: u32::MAX, rtt: None })).answered, Some(false));
        m.sent(u32::MAX);
        assert_eq!(m.tick(Some(Reply { seq: 1, rtt: None })).answered, Some(true), "1 follows u32::MAX");
    }

    #[test]
    fn kubernetes_not_ready_is_down_regardless_of_probes() {
        let mut d = up(0);
        assert_eq!(d.m.set_external_down(true), Some(DOWN));
        assert_eq!(d.m.set_external_down(true), None);
        assert_eq!(d.ticks(&[true; 20]), [], "answers do not bring it up");
        assert_eq!((d.m.state(), d.m.probed()), (State::Down, State::Up));
        // Ready again: the probes decide, and they have been answered
        assert_eq!(d.m.set_external_down(false), Some(UP));
        // Ready again while probes say down: still down until the hold-down
        d.m.set_external_down(true);
        d.ticks(&[false; 3]);
        assert_eq!(d.m.set_external_down(false), None);
        assert_eq!(d.ticks(&[true; 10]), [UP]);
    }

    #[test]
    fn an_adopted_down_gateway_needs_the_hold_down() {
        let mut d = Driver::new(Liveness::down(&Config::default()), 40);
        assert_eq!(d.m.state(), State::Down);
        assert_eq!(d.ticks(&[true; 9]), []);
        assert_eq!(d.ticks(&[true]), [UP]);
    }

    #[test]
    fn rtt_samples_come_once_per_reply() {
        let mut d = up(9);
        assert_eq!(d.m.last_rtt(), Some(Duration::from_micros(200)));
        let samples: Vec<_> = [true, false, true].iter().map(|a| d.tick(*a).rtt).collect();
        assert_eq!(samples, [Some(Duration::from_micros(200)), None, Some(Duration::from_micros(200))]);
        // a reply whose clocks make no sense gives no sample but still answers
        d.newest = Some(Reply { seq: d.seq, rtt: None });
        let step = d.m.tick(d.newest);
        assert_eq!((step.answered, step.rtt), (Some(true), None));
    }
}
