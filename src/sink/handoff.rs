//! The source's end of the channel to the sink thread: inputs are gathered into parcels, and a
//! parcel crosses to the sink thread at once.
//!
//! A channel send wakes the sink thread when it waits for input, and a wake-up (a futex call on
//! each side, a context switch) costs more than decoding, routing and producing a small record
//! together (bench/README.md, issue 21). So the source hands over what it gathered only when it
//! is about to wait itself (nothing more is ready to read), or when the parcel is full: under a
//! backlog the sink wakes once per [`PARCEL_INPUTS`] inputs, and when caught up a transaction's
//! inputs cross as soon as the source has read its commit, as before.
//!
//! Memory stays bounded by the channel's capacity, counted in inputs as before: the channel holds
//! `capacity / parcel size` parcels, and one parcel is gathered meanwhile.

use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;

use crate::sink::batch::SinkInput;

/// The most inputs a parcel holds: enough that a backlog's wake-ups cost nothing measurable,
/// small enough that the bound on memory stays what the channel capacity says.
pub const PARCEL_INPUTS: usize = 256;

/// Inputs handed to the sink thread together, in order.
pub type Parcel<C> = Vec<SinkInput<C>>;

/// Gathers the source's inputs and hands them to the sink thread in parcels.
#[derive(Debug)]
pub struct Handoff<C> {
    sender: mpsc::Sender<Parcel<C>>,
    gathered: Parcel<C>,
    /// Inputs after which the gathered parcel is full.
    parcel_inputs: usize,
}

/// The channel's two ends for `capacity` inputs: the hand-off, and the sink thread's receiver.
pub fn channel<C>(capacity: usize) -> (Handoff<C>, mpsc::Receiver<Parcel<C>>) {
    let parcel_inputs = PARCEL_INPUTS.clamp(1, capacity.max(1));
    let (sender, receiver) = mpsc::channel(capacity.div_ceil(parcel_inputs).max(1));
    let handoff = Handoff {
        sender,
        gathered: Vec::new(),
        parcel_inputs,
    };
    (handoff, receiver)
}

impl<C> Handoff<C> {
    /// Adds `input` to the parcel; `true` when the parcel is full and must be handed over before
    /// anything more is gathered.
    #[must_use]
    pub fn gather(&mut self, input: SinkInput<C>) -> bool {
        self.gathered.push(input);
        self.gathered.len() >= self.parcel_inputs
    }

    /// Whether inputs are gathered that the sink has not got yet.
    pub fn has_gathered(&self) -> bool {
        !self.gathered.is_empty()
    }

    /// Hands the gathered parcel over if the channel has room. `Full` gives the parcel back (the
    /// caller waits for room with [`Handoff::sender`] while doing what must not wait); `Closed`
    /// means the sink thread ended.
    pub fn try_hand_over(&mut self) -> Result<(), TrySendError<Parcel<C>>> {
        if self.gathered.is_empty() {
            return Ok(());
        }
        // The next parcel is sized like this one: a backlog's parcels are full, a caught-up
        // stream's hold a transaction or two, and allocating room for a full parcel each time
        // (tens of kilobytes) cost a one-row transaction more than its record.
        let room = self.gathered.len();
        let parcel = std::mem::replace(&mut self.gathered, Vec::with_capacity(room));
        self.sender.try_send(parcel)
    }

    /// Hands the gathered parcel over, waiting for room; `false` when the sink thread ended.
    pub async fn hand_over(&mut self) -> bool {
        match self.try_hand_over() {
            Ok(()) => true,
            Err(TrySendError::Closed(_)) => false,
            Err(TrySendError::Full(parcel)) => self.sender.send(parcel).await.is_ok(),
        }
    }

    /// Gathers `input` and hands the parcel over once it is full, waiting for room; `false` when
    /// the sink thread ended. For sources that may wait on the channel (poll mode, the backfill):
    /// they hand over the rest with [`Handoff::hand_over`] at their boundary.
    pub async fn send(&mut self, input: SinkInput<C>) -> bool {
        !self.gather(input) || self.hand_over().await
    }

    /// The channel, to wait for room while doing something else meanwhile.
    pub fn sender(&self) -> &mpsc::Sender<Parcel<C>> {
        &self.sender
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pg::Lsn;

    fn boundary(lsn: u64) -> SinkInput<Lsn> {
        SinkInput::Boundary(Lsn(lsn))
    }

    #[tokio::test]
    async fn parcels_keep_the_order_and_the_bound_in_inputs() {
        let (mut handoff, mut receiver) = channel::<Lsn>(4);
        assert_eq!(
            handoff.parcel_inputs, 4,
            "no parcel larger than the capacity"
        );
        assert_eq!(receiver.max_capacity(), 1);
        for lsn in 1..=3 {
            assert!(!handoff.gather(boundary(lsn)));
        }
        assert!(
            handoff.gather(boundary(4)),
            "the fourth input fills the parcel"
        );
        assert!(handoff.hand_over().await);
        assert!(!handoff.has_gathered());
        assert!(!handoff.gather(boundary(5)));
        match handoff.try_hand_over() {
            Err(TrySendError::Full(parcel)) => assert_eq!(parcel, [boundary(5)]),
            other => panic!("the channel holds one parcel: {other:?}"),
        }
        let parcel = receiver.recv().await.expect("a parcel");
        assert_eq!(parcel, (1..=4).map(boundary).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn a_parcel_of_the_default_size_and_a_closed_sink() {
        let (mut handoff, receiver) = channel::<Lsn>(4096);
        assert_eq!(handoff.parcel_inputs, PARCEL_INPUTS);
        assert_eq!(receiver.max_capacity(), 4096 / PARCEL_INPUTS);
        assert!(
            handoff.try_hand_over().is_ok(),
            "nothing gathered, nothing sent"
        );
        drop(receiver);
        assert!(handoff.send(boundary(1)).await, "gathering needs no sink");
        assert!(!handoff.hand_over().await, "the sink is gone");
    }
}
