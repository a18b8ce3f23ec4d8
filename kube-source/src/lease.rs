//! Leader election on a coordination.k8s.io/v1 Lease, as client-go's leaderelection does,
//! so that of two replicas only one writes the store.
//!
//! The holder renews the Lease every `retry` period; another replica takes it over only
//! after it has seen the same record, unchanged, for `duration` by its own clock (no
//! comparison of two machines' clocks). Every write carries the resourceVersion it read,
//! so two replicas taking over at once cannot both succeed: the API server refuses the
//! second (409 Conflict). A holder that could not renew for `renew_deadline` (shorter
//! than `duration`) stops, before anyone else may take over. A holder that stops on
//! purpose (SIGTERM: a rollout, a drained node) releases the Lease, as client-go's
//! `ReleaseOnCancel` does, so that another replica takes over at its next try instead of
//! `duration` later.

use std::time::Duration;

use k8s_openapi::{
    api::coordination::v1::{Lease, LeaseSpec},
    apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta},
    jiff::Timestamp,
};
use kube::{api::PostParams, Api};
use tokio::time::Instant;
use tracing::{info, warn};

/// The Lease's name; deploy/20-rbac.yaml lets oxsdn-kube update this one only.
pub const LEASE_NAME: &str = "oxsdn-kube";

#[derive(Clone, Copy, Debug)]
pub struct LeaseTimings {
    /// How long a record must stay unchanged before another replica takes over.
    pub duration: Duration,
    /// How long the holder keeps writing without a successful renewal.
    pub renew_deadline: Duration,
    /// How often the holder renews and the others look.
    pub retry: Duration,
}

impl Default for LeaseTimings {
    /// client-go's defaults.
    fn default() -> Self {
        LeaseTimings {
            duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry: Duration::from_secs(2),
        }
    }
}

/// The part of a Lease that changes when its holder renews or another takes over.
#[derive(Clone, Debug, PartialEq)]
struct Record {
    holder: Option<String>,
    renew_time: Option<MicroTime>,
    transitions: Option<i32>,
}

impl Record {
    fn of(spec: &LeaseSpec) -> Self {
        Record {
            holder: spec.holder_identity.clone().filter(|h| !h.is_empty()),
            renew_time: spec.renew_time.clone(),
            transitions: spec.lease_transitions,
        }
    }
}

/// What a replica has seen of the Lease: the last record read and when it changed.
#[derive(Debug, Default)]
pub struct Observed {
    record: Option<(Record, Instant)>,
}

impl Observed {
    /// The spec to write to hold the lease given `current` (the Lease as read, `None` if
    /// it does not exist), or `None` while another replica's hold is still valid. `now` is
    /// this replica's monotonic clock, `wall` the time written into the Lease.
    pub fn next_spec(
        &mut self,
        current: Option<&LeaseSpec>,
        identity: &str,
        timings: &LeaseTimings,
        now: Instant,
        wall: Timestamp,
    ) -> Option<LeaseSpec> {
        let stamp = Some(MicroTime(wall));
        let duration_seconds = i32::try_from(timings.duration.as_secs()).ok();
        let Some(current) = current else {
            return Some(LeaseSpec {
                holder_identity: Some(identity.to_owned()),
                lease_duration_seconds: duration_seconds,
                acquire_time: stamp.clone(),
                renew_time: stamp,
                lease_transitions: Some(0),
                ..LeaseSpec::default()
            });
        };
        let record = Record::of(current);
        let seen_at = match &self.record {
            Some((seen, at)) if *seen == record => *at,
            _ => now,
        };
        self.record = Some((record.clone(), seen_at));
        let holder_timeout = current
            .lease_duration_seconds
            .and_then(|s| u64::try_from(s).ok())
            .map_or(timings.duration, Duration::from_secs);
        match record.holder.as_deref() {
            Some(holder) if holder == identity => Some(LeaseSpec { renew_time: stamp, ..current.clone() }),
            Some(_) if now < seen_at + holder_timeout => None,
            _ => Some(LeaseSpec {
                holder_identity: Some(identity.to_owned()),
                lease_duration_seconds: duration_seconds,
                acquire_time: stamp.clone(),
                renew_time: stamp,
                lease_transitions: Some(record.transitions.unwrap_or(0) + 1),
                ..current.clone()
            }),
        }
    }
}

/// The spec that gives up the Lease `current` if `identity` holds it (`None` otherwise):
/// no holder, a duration of one second, as client-go writes it. A replica that reads it
/// takes it at once (`Observed::next_spec`: no holder, no wait).
pub fn released_spec(current: &LeaseSpec, identity: &str, wall: Timestamp) -> Option<LeaseSpec> {
    (current.holder_identity.as_deref() == Some(identity)).then(|| LeaseSpec {
        holder_identity: Some(String::new()),
        lease_duration_seconds: Some(1),
        acquire_time: Some(MicroTime(wall)),
        renew_time: Some(MicroTime(wall)),
        ..current.clone()
    })
}

/// One replica's side of the election on Lease `name`.
pub struct LeaderElector {
    api: Api<Lease>,
    name: String,
    identity: String,
    timings: LeaseTimings,
    observed: Observed,
}

impl LeaderElector {
    pub fn new(api: Api<Lease>, name: &str, identity: &str, timings: LeaseTimings) -> Self {
        LeaderElector {
            api,
            name: name.to_owned(),
            identity: identity.to_owned(),
            timings,
            observed: Observed::default(),
        }
    }

    /// One round: reads the Lease and writes it if this replica may hold it. `Ok(true)`:
    /// this replica holds it now.
    async fn try_acquire_or_renew(&mut self) -> kube::Result<bool> {
        let current = self.api.get_opt(&self.name).await?;
        let spec = self.observed.next_spec(
            current.as_ref().and_then(|l| l.spec.as_ref()),
            &self.identity,
            &self.timings,
            Instant::now(),
            Timestamp::now(),
        );
        let Some(spec) = spec else { return Ok(false) };
        let written = match current {
            None => {
                let lease = Lease {
                    metadata: ObjectMeta { name: Some(self.name.clone()), ..ObjectMeta::default() },
                    spec: Some(spec),
                };
                self.api.create(&PostParams::default(), &lease).await
            }
            // Carries the resourceVersion read: a concurrent write makes this one fail.
            Some(lease) => {
                self.api.replace(&self.name, &PostParams::default(), &Lease { spec: Some(spec), ..lease }).await
            }
        };
        match written {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Waits until this replica holds the Lease.
    pub async fn acquire(&mut self) {
        loop {
            match self.try_acquire_or_renew().await {
                Ok(true) => {
                    info!(lease = self.name, identity = self.identity, "became the leader");
                    return;
                }
                Ok(false) => {}
                Err(e) => warn!(lease = self.name, "reading or writing the lease failed: {e}"),
            }
            tokio::time::sleep(self.timings.retry).await;
        }
    }

    /// Renews the Lease until a renewal has failed for `renew_deadline`; returns then, and
    /// the caller must stop writing. A renewal that hangs (a silent connection) is given
    /// up at the deadline too, as client-go's is: the standby takes the Lease only after
    /// its duration, which is longer.
    pub async fn hold(&mut self) -> anyhow::Error {
        let mut renewed = Instant::now();
        loop {
            tokio::time::sleep(self.timings.retry).await;
            let left = self.timings.renew_deadline.saturating_sub(renewed.elapsed());
            match tokio::time::timeout(left, self.try_acquire_or_renew()).await {
                Ok(Ok(true)) => renewed = Instant::now(),
                Ok(Ok(false)) => return anyhow::anyhow!("lease {} was taken over by another replica", self.name),
                Ok(Err(e)) => warn!(lease = self.name, "renewing the lease failed: {e}"),
                Err(_) => warn!(lease = self.name, "renewing the lease took until the renew deadline"),
            }
            if renewed.elapsed() >= self.timings.renew_deadline {
                return anyhow::anyhow!("lease {} not renewed for {:?}", self.name, self.timings.renew_deadline);
            }
        }
    }

    /// Gives the Lease up if this replica holds it (after its last write), so that another
    /// takes over at once. The write carries the resourceVersion read: if another replica
    /// took the Lease meanwhile, it is left to it.
    pub async fn release(&mut self) -> kube::Result<()> {
        let Some(lease) = self.api.get_opt(&self.name).await? else { return Ok(()) };
        let Some(spec) = lease.spec.as_ref().and_then(|s| released_spec(s, &self.identity, Timestamp::now())) else {
            return Ok(());
        };
        self.api.replace(&self.name, &PostParams::default(), &Lease { spec: Some(spec), ..lease }).await?;
        info!(lease = self.name, identity = self.identity, "lease released");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: LeaseTimings = LeaseTimings {
        duration: Duration::from_secs(15),
        renew_deadline: Duration::from_secs(10),
        retry: Duration::from_secs(2),
    };

    fn wall(seconds: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + seconds).unwrap()
    }

    #[test]
    fn a_missing_lease_is_created_for_this_replica() {
        let spec = Observed::default().next_spec(None, "a", &T, Instant::now(), wall(0)).unwrap();
        assert_eq!(spec.holder_identity.as_deref(), Some("a"));
        assert_eq!(spec.lease_duration_seconds, Some(15));
        assert_eq!(spec.lease_transitions, Some(0));
        assert_eq!(spec.renew_time, Some(MicroTime(wall(0))));
    }

    #[test]
    fn the_holder_renews_keeping_its_acquire_time() {
        let held = Observed::default().next_spec(None, "a", &T, Instant::now(), wall(0)).unwrap();
        let renewed = Observed::default().next_spec(Some(&held), "a", &T, Instant::now(), wall(2)).unwrap();
        assert_eq!(renewed.acquire_time, Some(MicroTime(wall(0))));
        assert_eq!(renewed.renew_time, Some(MicroTime(wall(2))));
        assert_eq!(renewed.lease_transitions, Some(0));
    }

    #[test]
    fn another_replica_waits_while_the_record_changes_and_takes_over_once_it_stays_still() {
        let start = Instant::now();
        let mut b = Observed::default();
        let mut held = Observed::default().next_spec(None, "a", &T, start, wall(0)).unwrap();
        // a renews every 2 s: b never takes over, however long it watches.
        for i in 1..20u64 {
            assert_eq!(b.next_spec(Some(&held), "b", &T, start + Duration::from_secs(i), wall(0)), None);
            held.renew_time = Some(MicroTime(wall(i as i64 * 2)));
        }
        // a stops; b saw the last record at 20 s and takes over 15 s later, not before,
        // whatever the renew time written by a's clock says.
        let last_seen = start + Duration::from_secs(20);
        assert_eq!(b.next_spec(Some(&held), "b", &T, last_seen, wall(-1000)), None);
        assert_eq!(b.next_spec(Some(&held), "b", &T, last_seen + Duration::from_secs(14), wall(-1000)), None);
        let taken = b.next_spec(Some(&held), "b", &T, last_seen + Duration::from_secs(15), wall(100)).unwrap();
        assert_eq!(taken.holder_identity.as_deref(), Some("b"));
        assert_eq!(taken.acquire_time, Some(MicroTime(wall(100))));
        assert_eq!(taken.lease_transitions, Some(1));
    }

    #[test]
    fn a_released_lease_is_taken_at_once() {
        let released =
            LeaseSpec { holder_identity: Some(String::new()), lease_transitions: Some(3), ..LeaseSpec::default() };
        let taken = Observed::default().next_spec(Some(&released), "b", &T, Instant::now(), wall(0)).unwrap();
        assert_eq!(taken.holder_identity.as_deref(), Some("b"));
        assert_eq!(taken.lease_transitions, Some(4));
    }

    #[test]
    fn a_lease_released_on_shutdown_is_taken_at_the_next_try_not_after_its_duration() {
        let start = Instant::now();
        let held = Observed::default().next_spec(None, "a", &T, start, wall(0)).unwrap();
        let mut b = Observed::default();
        assert_eq!(b.next_spec(Some(&held), "b", &T, start, wall(0)), None);
        // Only the holder releases it.
        assert_eq!(released_spec(&held, "b", wall(1)), None);
        let released = released_spec(&held, "a", wall(1)).unwrap();
        assert_eq!(released.holder_identity.as_deref(), Some(""));
        assert_eq!(released.lease_duration_seconds, Some(1));
        // b's next try, one retry period later: taken, 13 s before a's hold would expire.
        let taken = b.next_spec(Some(&released), "b", &T, start + T.retry, wall(2)).unwrap();
        assert_eq!(taken.holder_identity.as_deref(), Some("b"));
        assert_eq!(taken.lease_transitions, Some(1));
        assert_eq!(taken.lease_duration_seconds, Some(15));
    }

    #[test]
    fn the_holders_own_duration_counts() {
        let start = Instant::now();
        let held = LeaseSpec {
            holder_identity: Some("a".into()),
            lease_duration_seconds: Some(60),
            renew_time: Some(MicroTime(wall(0))),
            ..LeaseSpec::default()
        };
        let mut b = Observed::default();
        assert_eq!(b.next_spec(Some(&held), "b", &T, start, wall(0)), None);
        assert_eq!(b.next_spec(Some(&held), "b", &T, start + Duration::from_secs(59), wall(0)), None);
        assert!(b.next_spec(Some(&held), "b", &T, start + Duration::from_secs(60), wall(0)).is_some());
    }
}
