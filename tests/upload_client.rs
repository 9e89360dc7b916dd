//! The signed X-Ray client against the fake X-Ray: host lookups are cached across requests (one
//! lookup for many uploads over a named endpoint), and every request still arrives signed.

use xrayd_kit as support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::time::Duration;

use support::{FakeXray, SigCheck, TEST_ACCESS_KEY, TEST_REGION, TEST_SECRET_KEY};
use ureq::config::Config;
use ureq::http::Uri;
use ureq::unversioned::resolver::{ResolvedSocketAddrs, Resolver};
use ureq::unversioned::transport::NextTimeout;
use xrayd::aws::credentials::{Credentials, ProvideCredentials, StaticProvider};
use xrayd::xray::client::{ClientConfig, XrayClient};

/// Sends every name to one loopback address and counts the lookups.
#[derive(Debug)]
struct Loopback {
    to: SocketAddr,
    lookups: Arc<AtomicUsize>,
}

impl Resolver for Loopback {
    fn resolve(
        &self,
        _uri: &Uri,
        _config: &Config,
        _timeout: NextTimeout,
    ) -> Result<ResolvedSocketAddrs, ureq::Error> {
        self.lookups.fetch_add(1, Relaxed);
        let mut addrs = self.empty();
        addrs.push(self.to);
        Ok(addrs)
    }
}

#[test]
fn a_named_endpoint_is_looked_up_once_for_many_uploads() {
    let fake = FakeXray::start();
    let lookups = Arc::new(AtomicUsize::new(0));
    let creds: Arc<dyn ProvideCredentials> = Arc::new(StaticProvider::new(
        Credentials::new(TEST_ACCESS_KEY, TEST_SECRET_KEY, None, None, "test"),
        "test",
    ));
    let cfg = ClientConfig {
        endpoint: format!("http://xray.{TEST_REGION}.example:{}", fake.addr().port()),
        region: TEST_REGION.to_string(),
        user_agent: "xrayd-test".into(),
        timeout: Duration::from_secs(5),
        proxy: None,
        max_idle: 2,
        no_verify_ssl: false,
    };
    let resolver = Loopback {
        to: fake.addr(),
        lookups: lookups.clone(),
    };
    let client = XrayClient::with_resolver(&cfg, creds, resolver).expect("client");
    for i in 0..20 {
        let body = format!(r#"{{"TraceSegmentDocuments":["{{\"id\":\"{i:016x}\"}}"]}}"#);
        let answer = client
            .post("/TraceSegments", body.as_bytes())
            .expect("answer");
        assert_eq!(answer.status, 200, "request {i}");
    }
    let requests = fake.requests();
    assert_eq!(requests.len(), 20);
    for r in &requests {
        assert_eq!(r.signature, SigCheck::Ok);
        assert_eq!(
            r.header("host"),
            Some(format!("xray.{TEST_REGION}.example:{}", fake.addr().port()).as_str())
        );
    }
    assert_eq!(lookups.load(Relaxed), 1, "one lookup for twenty requests");
}
