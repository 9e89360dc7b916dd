//! The PutTelemetryRecords wire format: the request body for the daemon's telemetry records
//! (botocore's `xray` 2016-04-12 model, rest-json), with the service's limits applied.

use crate::json::json_string;
use crate::stats::BackendError;

/// Service limits on the identity fields (longer values would make every call fail).
const MAX_INSTANCE_ID: usize = 20;
const MAX_HOSTNAME: usize = 255;
const MAX_RESOURCE_ARN: usize = 500;

/// What happened during one interval.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Record {
    /// End of the interval, milliseconds since the Unix epoch.
    pub timestamp_ms: u64,
    pub received: u64,
    /// Accepted by X-Ray (unprocessed segments excluded).
    pub sent: u64,
    pub spillover: u64,
    pub rejected: u64,
    /// Failed calls to X-Ray, indexed like [`BackendError::ALL`].
    pub backend_errors: [u64; 6],
}

impl Record {
    /// Failed calls of one class.
    pub fn errors(&self, class: BackendError) -> u64 {
        self.backend_errors[class as usize]
    }
}

/// Who is reporting: sent with every call.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Identity {
    pub ec2_instance_id: String,
    pub hostname: String,
    pub resource_arn: String,
}

/// Cuts `s` to at most `max` bytes on a character boundary.
fn clip(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// The service's integers are 32-bit.
fn int(n: u64) -> u64 {
    n.min(i32::MAX as u64)
}

/// The `PutTelemetryRecords` request body (botocore's `xray` 2016-04-12 model, rest-json:
/// `Timestamp` is epoch seconds as a number).
pub fn encode(identity: &Identity, records: &[Record]) -> String {
    let mut s = String::from("{\"TelemetryRecords\":[");
    for (i, r) in records.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        s.push_str(&format!(
            "{{\"Timestamp\":{}.{:03},\"SegmentsReceivedCount\":{},\"SegmentsSentCount\":{},\
             \"SegmentsSpilloverCount\":{},\"SegmentsRejectedCount\":{},\"BackendConnectionErrors\":\
             {{\"TimeoutCount\":{},\"ConnectionRefusedCount\":{},\"HTTPCode4XXCount\":{},\
             \"HTTPCode5XXCount\":{},\"UnknownHostCount\":{},\"OtherCount\":{}}}}}",
            r.timestamp_ms / 1000,
            r.timestamp_ms % 1000,
            int(r.received),
            int(r.sent),
            int(r.spillover),
            int(r.rejected),
            int(r.errors(BackendError::Timeout)),
            int(r.errors(BackendError::ConnectionRefused)),
            int(r.errors(BackendError::Http4xx)),
            int(r.errors(BackendError::Http5xx)),
            int(r.errors(BackendError::UnknownHost)),
            int(r.errors(BackendError::Other)),
        ));
    }
    s.push_str(&format!(
        "],\"EC2InstanceId\":{},\"Hostname\":{},\"ResourceARN\":{}}}",
        json_string(clip(&identity.ec2_instance_id, MAX_INSTANCE_ID)),
        json_string(clip(&identity.hostname, MAX_HOSTNAME)),
        json_string(clip(&identity.resource_arn, MAX_RESOURCE_ARN)),
    ));
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_follows_the_botocore_model() {
        let mut r = Record {
            received: 5,
            ..Record::default()
        };
        r.timestamp_ms = 1_700_000_000_042;
        r.backend_errors = [1, 2, 3, 4, 5, 6];
        let body = encode(
            &Identity {
                ec2_instance_id: "i-0123456789abcdef0-too-long".into(),
                hostname: "host\"1".into(),
                resource_arn: "arn:aws:ecs:x".into(),
            },
            &[r],
        );
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        let rec = &v["TelemetryRecords"][0];
        assert_eq!(rec["Timestamp"].as_f64(), Some(1_700_000_000.042));
        assert_eq!(rec["SegmentsReceivedCount"], 5);
        let e = &rec["BackendConnectionErrors"];
        assert_eq!(
            [
                &e["TimeoutCount"],
                &e["ConnectionRefusedCount"],
                &e["HTTPCode4XXCount"],
                &e["HTTPCode5XXCount"],
                &e["UnknownHostCount"],
                &e["OtherCount"]
            ]
            .map(|x| x.as_u64().unwrap()),
            [1, 2, 3, 4, 5, 6]
        );
        assert_eq!(v["EC2InstanceId"], "i-0123456789abcdef0-");
        assert_eq!(v["Hostname"], "host\"1");
        assert_eq!(v["ResourceARN"], "arn:aws:ecs:x");
    }
}
