//! The daemon's own telemetry: `PutTelemetryRecords` (`POST /TelemetryRecords`), as the AWS daemon
//! sends it, so dashboards fed by X-Ray's daemon telemetry keep working.
//!
//! Every interval (60 s), once the first datagram has arrived, one record of what happened during
//! the interval is made from [`Stats`] (the single owner of every counter): segments received,
//! sent (unprocessed ones excluded), spilled over, rejected, and failed calls to X-Ray by class.
//! Up to [`MAX_RECORDS`] unsent records are kept (the oldest is dropped first); they go out
//! [`RECORDS_PER_CALL`] per call, oldest first, and stay queued when a call fails. At shutdown a
//! final record is made and sent. With the local sink, records are logged at debug instead.
//!
//! Failed telemetry calls are not counted in `BackendConnectionErrors`: those count segment
//! uploads only, so they add up with the segments that were delayed or lost.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};

use crate::aws::imds::{self, ImdsClient};
use crate::config::Settings;
use crate::stats::{BackendError, Snapshot, Stats};
use crate::xray::client::XrayClient;
pub use crate::xray::telemetry_records::{Identity, Record, encode};

/// Unsent records kept; older ones are dropped first.
pub const MAX_RECORDS: usize = 30;
/// Records sent in one call.
pub const RECORDS_PER_CALL: usize = 10;

/// A record is made from two snapshots of the counters (its wire format is X-Ray's, in
/// [`crate::xray::telemetry_records`]).
impl Record {
    /// The record of what the counters did between two snapshots.
    pub fn between(earlier: &Snapshot, later: &Snapshot, at: SystemTime) -> Record {
        let d = later.since(earlier);
        Record {
            timestamp_ms: at
                .duration_since(UNIX_EPOCH)
                .map_or(0, |t| t.as_millis() as u64),
            received: d.received,
            sent: d.sent,
            spillover: d.spillover,
            rejected: d.rejected_total(),
            backend_errors: BackendError::ALL.map(|b| d.backend_errors(b)),
        }
    }
}

/// Unsent records, oldest first, at most [`MAX_RECORDS`].
#[derive(Debug, Default)]
pub struct Buffer {
    records: VecDeque<Record>,
    /// Records dropped because the buffer was full, since start.
    pub dropped: u64,
}

impl Buffer {
    /// Adds a record, dropping the oldest when full.
    pub fn push(&mut self, r: Record) {
        if self.records.len() >= MAX_RECORDS {
            self.records.pop_front();
            self.dropped += 1;
        }
        self.records.push_back(r);
    }

    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Sends everything, [`RECORDS_PER_CALL`] per call, oldest first. Stops at the first failure;
    /// what was not sent stays queued. Returns the number sent, or the error with that number.
    pub fn send_all(
        &mut self,
        mut send: impl FnMut(&[Record]) -> Result<(), String>,
    ) -> Result<usize, (usize, String)> {
        let mut sent = 0;
        while !self.records.is_empty() {
            let n = self.records.len().min(RECORDS_PER_CALL);
            let chunk: Vec<Record> = self.records.iter().take(n).copied().collect();
            send(&chunk).map_err(|e| (sent, e))?;
            self.records.drain(..n);
            sent += n;
        }
        Ok(sent)
    }
}

/// Where telemetry goes.
pub trait Transport: Send + Sync {
    /// One `PutTelemetryRecords` call with this body; `Err` describes the failure.
    fn put_telemetry_records(&self, body: &[u8]) -> Result<(), String>;
}

impl Transport for XrayClient {
    fn put_telemetry_records(&self, body: &[u8]) -> Result<(), String> {
        XrayClient::put_telemetry_records(self, body)
    }
}

/// Where the instance id and hostname come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdentitySource {
    /// `AWS_INSTANCE_ID` / `AWS_HOSTNAME` (missing ones stay empty).
    Environment,
    /// The environment, then EC2 instance metadata for what is missing (not in local mode).
    EnvironmentThenImds,
}

/// Makes records and sends (or logs) them.
pub struct Reporter {
    stats: Arc<Stats>,
    last: Snapshot,
    buffer: Buffer,
    identity: Identity,
    identity_source: Option<IdentitySource>,
    env: Vec<(String, String)>,
    /// `None`: log records at debug (local sink).
    transport: Option<Arc<dyn Transport>>,
}

impl Reporter {
    /// A reporter starting from the current counters.
    pub fn new(
        stats: Arc<Stats>,
        transport: Option<Arc<dyn Transport>>,
        identity: Identity,
        identity_source: IdentitySource,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Reporter {
        let env = [
            imds::ENV_DISABLED,
            imds::ENV_ENDPOINT,
            imds::ENV_ENDPOINT_MODE,
        ]
        .iter()
        .filter_map(|k| env(k).map(|v| (k.to_string(), v)))
        .collect();
        Reporter {
            last: stats.snapshot(),
            stats,
            buffer: Buffer::default(),
            identity,
            identity_source: Some(identity_source),
            env,
            transport,
        }
    }

    /// Unsent records.
    pub fn pending(&self) -> usize {
        self.buffer.len()
    }

    /// Closes the interval ending `at`: makes its record (once the first datagram arrived) and
    /// sends what is queued.
    pub fn tick(&mut self, at: SystemTime) {
        let now = self.stats.snapshot();
        if now.received == 0 {
            self.last = now;
            return;
        }
        let record = Record::between(&self.last, &now, at);
        self.last = now;
        match self.transport.clone() {
            None => log_record(&record),
            Some(t) => {
                self.resolve_identity();
                let before = self.buffer.dropped;
                self.buffer.push(record);
                if self.buffer.dropped > before {
                    crate::debug!(
                        "Telemetry: dropped the oldest unsent record (at most {MAX_RECORDS} are kept)"
                    );
                }
                self.send(&*t);
            }
        }
    }

    fn send(&mut self, t: &dyn Transport) {
        let identity = &self.identity;
        match self
            .buffer
            .send_all(|chunk| t.put_telemetry_records(encode(identity, chunk).as_bytes()))
        {
            Ok(0) => {}
            Ok(n) => crate::debug!("Telemetry: sent {n} record(s)"),
            Err((n, e)) => crate::debug!(
                "Telemetry: sent {n} record(s), failed to send {} (kept for the next attempt): {e}",
                self.buffer.len()
            ),
        }
    }

    fn resolve_identity(&mut self) {
        if let Some(IdentitySource::EnvironmentThenImds) = self.identity_source.take()
            && (self.identity.ec2_instance_id.is_empty() || self.identity.hostname.is_empty())
        {
            let env = self.env.clone();
            let lookup = move |k: &str| {
                env.iter()
                    .find(|(name, _)| name == k)
                    .map(|(_, v)| v.clone())
            };
            let (instance_id, hostname) = instance_identity_from_imds(&lookup);
            if self.identity.ec2_instance_id.is_empty() {
                self.identity.ec2_instance_id = instance_id.unwrap_or_default();
            }
            if self.identity.hostname.is_empty() {
                self.identity.hostname = hostname.unwrap_or_default();
            }
        }
    }
}

fn log_record(r: &Record) {
    crate::debug!(
        fields: [
            ("SegmentsReceivedCount", r.received),
            ("SegmentsSentCount", r.sent),
            ("SegmentsSpilloverCount", r.spillover),
            ("SegmentsRejectedCount", r.rejected),
            ("TimeoutCount", r.errors(BackendError::Timeout)),
            ("ConnectionRefusedCount", r.errors(BackendError::ConnectionRefused)),
            ("HTTPCode4XXCount", r.errors(BackendError::Http4xx)),
            ("HTTPCode5XXCount", r.errors(BackendError::Http5xx)),
            ("UnknownHostCount", r.errors(BackendError::UnknownHost)),
            ("OtherCount", r.errors(BackendError::Other)),
        ],
        "Telemetry record (local sink: not sent)"
    );
}

/// The instance id and hostname from EC2 instance metadata (IMDSv2 through
/// [`ImdsClient`], 1 s timeouts, never through a proxy). Honours `AWS_EC2_METADATA_DISABLED` and
/// `AWS_EC2_METADATA_SERVICE_ENDPOINT(_MODE)`.
pub fn instance_identity_from_imds(
    env: &dyn Fn(&str) -> Option<String>,
) -> (Option<String>, Option<String>) {
    let client = match ImdsClient::from_env(env, imds::DEFAULT_TIMEOUT) {
        Ok(Some(c)) => c,
        Ok(None) => return (None, None),
        Err(e) => {
            crate::warn!("Telemetry: {e}; hostname and instance id stay empty");
            return (None, None);
        }
    };
    let get = |path: &str| {
        client
            .get(path)
            .map(|v| v.trim().to_string())
            .and_then(|v| {
                if v.is_empty() {
                    Err(format!("{path} is empty"))
                } else {
                    Ok(v)
                }
            })
    };
    let instance_id = get("/latest/meta-data/instance-id")
        .map_err(|e| {
            crate::warn!(
                "Telemetry: cannot read the instance id ({e}); set AWS_INSTANCE_ID, or use -o off EC2"
            )
        })
        .ok();
    let hostname = get("/latest/meta-data/hostname")
        .map_err(|e| crate::debug!("Telemetry: cannot read the hostname: {e}"))
        .ok();
    (instance_id, hostname)
}

/// The running telemetry thread.
pub struct Telemetry {
    stop: Sender<()>,
    done: Receiver<()>,
}

impl Telemetry {
    /// Starts the telemetry thread for these settings. `xray` is where records go; `None` (the
    /// local sink) logs them at debug.
    pub fn start(
        s: &Settings,
        env: &dyn Fn(&str) -> Option<String>,
        stats: Arc<Stats>,
        xray: Option<Arc<dyn Transport>>,
    ) -> Telemetry {
        let var = |k: &str| {
            env(k)
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
        };
        let identity = Identity {
            ec2_instance_id: var("AWS_INSTANCE_ID").unwrap_or_default(),
            hostname: var("AWS_HOSTNAME").unwrap_or_default(),
            resource_arn: s.resource_arn.clone().unwrap_or_default(),
        };
        let source = if s.local_mode || s.local_sink.is_some() {
            IdentitySource::Environment
        } else {
            IdentitySource::EnvironmentThenImds
        };
        let reporter = Reporter::new(stats, xray, identity, source, env);
        Self::spawn(reporter, s.telemetry_interval)
    }

    /// Runs `reporter` every `interval` on its own thread.
    pub fn spawn(mut reporter: Reporter, interval: Duration) -> Telemetry {
        let (stop, stop_rx) = crossbeam_channel::bounded::<()>(1);
        let (done_tx, done) = crossbeam_channel::bounded::<()>(1);
        let run = move || {
            let mut next = Instant::now() + interval;
            while let Err(RecvTimeoutError::Timeout) = stop_rx.recv_deadline(next) {
                reporter.tick(SystemTime::now());
                // Keep the cadence; skip intervals missed while a call was slow.
                next += interval;
                let now = Instant::now();
                while next <= now {
                    next += interval;
                }
            }
            // The final record, covering everything up to the end of the drain.
            reporter.tick(SystemTime::now());
            if reporter.pending() > 0 {
                crate::debug!(
                    "Telemetry: {} record(s) could not be sent before exit",
                    reporter.pending()
                );
            }
            let _ = done_tx.send(());
        };
        if let Err(e) = std::thread::Builder::new()
            .name("xrayd-telemetry".into())
            .spawn(run)
        {
            crate::error!("Cannot start the telemetry thread: {e}; no telemetry will be sent");
        }
        Telemetry { stop, done }
    }

    /// Makes and sends the final record; waits for it at most `timeout`.
    pub fn finish(self, timeout: Duration) {
        let _ = self.stop.send(());
        if self.done.recv_timeout(timeout).is_err() {
            crate::warn!(
                "Telemetry: the final record was not sent within {:.1} seconds",
                timeout.as_secs_f64()
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingest::datagram::Rejection;
    use std::sync::atomic::Ordering::Relaxed;
    use std::sync::{Mutex, PoisonError};

    fn record(n: u64) -> Record {
        Record {
            timestamp_ms: 1_700_000_000_000 + n,
            received: n,
            ..Record::default()
        }
    }

    #[test]
    fn records_are_deltas_of_the_counters() {
        let stats = Stats::default();
        let a = stats.snapshot();
        stats.received.fetch_add(10, Relaxed);
        stats.sent.fetch_add(6, Relaxed);
        stats.unprocessed.fetch_add(1, Relaxed);
        stats.spillover.fetch_add(2, Relaxed);
        stats.add_rejected(Rejection::BadJson, 1);
        stats.add_rejected(Rejection::BadHeader, 2);
        stats.add_backend_error(BackendError::Http4xx);
        stats.add_backend_error(BackendError::Timeout);
        stats.add_backend_error(BackendError::Timeout);
        let b = stats.snapshot();
        let r = Record::between(
            &a,
            &b,
            UNIX_EPOCH + Duration::from_millis(1_700_000_000_250),
        );
        assert_eq!((r.received, r.sent, r.spillover, r.rejected), (10, 6, 2, 3));
        assert_eq!(r.errors(BackendError::Timeout), 2);
        assert_eq!(r.errors(BackendError::Http4xx), 1);
        assert_eq!(r.errors(BackendError::Http5xx), 0);
        stats.received.fetch_add(1, Relaxed);
        let r2 = Record::between(&b, &stats.snapshot(), UNIX_EPOCH);
        assert_eq!((r2.received, r2.sent, r2.rejected), (1, 0, 0));
        assert_eq!(r2.backend_errors, [0; 6]);
    }

    #[test]
    fn buffer_keeps_thirty_and_sends_ten_per_call_requeueing_on_failure() {
        let mut b = Buffer::default();
        for i in 0..35 {
            b.push(record(i));
        }
        assert_eq!((b.len(), b.dropped), (30, 5));
        let mut calls: Vec<Vec<u64>> = Vec::new();
        let res = b.send_all(|chunk| {
            if calls.len() == 2 {
                return Err("down".into());
            }
            calls.push(chunk.iter().map(|r| r.received).collect());
            Ok(())
        });
        assert_eq!(res, Err((20, "down".into())));
        assert_eq!(calls.len(), 2);
        assert_eq!(calls[0], (5..15).collect::<Vec<_>>(), "oldest first");
        assert_eq!(b.len(), 10, "the failed chunk stays queued");
        assert_eq!(
            b.send_all(|chunk| {
                calls.push(chunk.iter().map(|r| r.received).collect());
                Ok(())
            }),
            Ok(10)
        );
        assert_eq!(calls[2], (25..35).collect::<Vec<_>>());
        assert!(b.is_empty());
    }

    struct Fake {
        bodies: Mutex<Vec<String>>,
        fail: std::sync::atomic::AtomicBool,
    }

    impl Transport for Fake {
        fn put_telemetry_records(&self, body: &[u8]) -> Result<(), String> {
            if self.fail.load(Relaxed) {
                return Err("refused".into());
            }
            self.bodies
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(String::from_utf8(body.to_vec()).unwrap());
            Ok(())
        }
    }

    #[test]
    fn reporter_waits_for_the_first_datagram_and_survives_outages() {
        let stats = Arc::new(Stats::default());
        let fake = Arc::new(Fake {
            bodies: Mutex::new(Vec::new()),
            fail: false.into(),
        });
        let mut rep = Reporter::new(
            stats.clone(),
            Some(fake.clone()),
            Identity::default(),
            IdentitySource::Environment,
            &|_| None,
        );
        rep.tick(SystemTime::now());
        assert!(
            fake.bodies
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .is_empty(),
            "nothing before the first datagram"
        );
        stats.received.fetch_add(3, Relaxed);
        fake.fail.store(true, Relaxed);
        rep.tick(SystemTime::now());
        stats.received.fetch_add(4, Relaxed);
        rep.tick(SystemTime::now());
        rep.tick(SystemTime::now());
        assert_eq!(rep.pending(), 3);
        fake.fail.store(false, Relaxed);
        rep.tick(SystemTime::now());
        assert_eq!(rep.pending(), 0);
        let bodies = fake.bodies.lock().unwrap_or_else(PoisonError::into_inner);
        assert_eq!(bodies.len(), 1);
        let v: serde_json::Value = serde_json::from_str(&bodies[0]).unwrap();
        let counts: Vec<u64> = v["TelemetryRecords"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["SegmentsReceivedCount"].as_u64().unwrap())
            .collect();
        assert_eq!(counts, vec![3, 4, 0, 0]);
    }
}
