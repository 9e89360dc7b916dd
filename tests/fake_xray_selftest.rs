//! Tests of the test support itself (no daemon needed): the hand-written
//! SHA-256/HMAC against FIPS 180 and RFC 4231 vectors, the SigV4 verifier against
//! the AWS SigV4 test suite, and the FakeXray against requests signed by the
//! `aws-sigv4` crate and sent over a plain TcpStream.

use xrayd_kit as support;

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_sigv4::sign::v4;
use aws_smithy_runtime_api::client::identity::Identity;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use support::crypto::{hmac_sha256, sha256_hex, unhex};
use support::http::Client;
use support::sigv4::{self, SigCheck, Verifier, WireRequest};
use support::{
    Behaviour, FakeConfig, FakeXray, RandomFaults, TEST_ACCESS_KEY, TEST_REGION, TEST_SECRET_KEY,
    make_segment, segment_index,
};

// ---------------------------------------------------------------- SHA-256 / HMAC

#[test]
fn sha256_fips_vectors() {
    assert_eq!(
        sha256_hex(b""),
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    );
    assert_eq!(
        sha256_hex(b"abc"),
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
    // 448-bit message: the padding spills into a second block.
    assert_eq!(
        sha256_hex(b"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"),
        "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"
    );
    // 896-bit message.
    assert_eq!(
        sha256_hex(
            b"abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmnhijklmnoijklmnopjklmnopqklmnopqrlmnopqrsmnopqrstnopqrstu"
        ),
        "cf5b16a778af8380036ce59e7b0492370b249b11e8f07a51afac45037afee9d1"
    );
    // One million 'a'.
    assert_eq!(
        sha256_hex(&vec![b'a'; 1_000_000]),
        "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0"
    );
}

#[test]
fn hmac_sha256_rfc4231_vectors() {
    let cases: [(Vec<u8>, Vec<u8>, &str); 6] = [
        (
            vec![0x0b; 20],
            b"Hi There".to_vec(),
            "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7",
        ),
        (
            b"Jefe".to_vec(),
            b"what do ya want for nothing?".to_vec(),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843",
        ),
        (
            vec![0xaa; 20],
            vec![0xdd; 50],
            "773ea91e36800e46854db8ebd09181a72959098b3ef8c122d9635514ced565fe",
        ),
        (
            (1..=25).collect(),
            vec![0xcd; 50],
            "82558a389a443c0ea4cc819899f2083a85f0faa3e578f8077a2e3ff46729665b",
        ),
        (
            vec![0xaa; 131],
            b"Test Using Larger Than Block-Size Key - Hash Key First".to_vec(),
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54",
        ),
        (
            vec![0xaa; 131],
            b"This is a test using a larger than block-size key and a larger than block-size data. The key needs to be hashed before being used by the HMAC algorithm.".to_vec(),
            "9b09ffa71b942fcb27635fbcd5b0e944bfdc63644f0713938a7f51535c3a35e2",
        ),
    ];
    for (i, (key, data, want)) in cases.iter().enumerate() {
        assert_eq!(
            support::hex(&hmac_sha256(key, data)),
            *want,
            "RFC 4231 case {}",
            i + 1
        );
    }
    // Test case 5: output truncated to 128 bits.
    let t = hmac_sha256(&[0x0c; 20], b"Test With Truncation");
    assert_eq!(support::hex(&t[..16]), "a3b6167473100ee06e0c796c2955552b");
}

/// Cross-check against the product's dependency (RustCrypto sha2/hmac inside
/// aws-sigv4) over every length around the block boundaries.
#[test]
fn hmac_and_signing_key_agree_with_aws_sigv4_for_many_lengths() {
    let t = UNIX_EPOCH + Duration::from_secs(1_440_938_160); // 2015-08-30T12:36:00Z
    let theirs = v4::generate_signing_key(TEST_SECRET_KEY, t, "eu-west-3", "xray");
    let ours = sigv4::signing_key(TEST_SECRET_KEY, "20150830", "eu-west-3", "xray");
    assert_eq!(theirs.as_ref(), &ours[..]);
    for len in 0..300usize {
        let data: Vec<u8> = (0..len).map(|i| (i * 7 + len) as u8).collect();
        assert_eq!(
            support::hex(&hmac_sha256(&ours, &data)),
            v4::calculate_signature(ours, &data),
            "length {len}"
        );
    }
}

#[test]
fn hex_round_trip() {
    assert_eq!(unhex("00ff10Ab"), Some(vec![0, 255, 16, 0xab]));
    assert_eq!(unhex("abc"), None);
    assert_eq!(unhex("zz"), None);
}

// ---------------------------------------------------------------- SigV4 verifier

const SUITE_KEY: &str = "AKIDEXAMPLE";
const SUITE_SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
const SUITE_DATE: &str = "20150830T123600Z";

fn suite_verifier() -> Verifier {
    Verifier::new("us-east-1", "service").with_key(SUITE_KEY, SUITE_SECRET)
}

fn hdrs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn suite_auth(signed: &str, sig: &str) -> String {
    format!(
        "AWS4-HMAC-SHA256 Credential={SUITE_KEY}/20150830/us-east-1/service/aws4_request, SignedHeaders={signed}, Signature={sig}"
    )
}

/// One vector of the AWS SigV4 test suite (header-signed form), as shipped in
/// aws-sigv4's `aws-signing-test-suite/v4/<name>`.
struct SuiteCase {
    name: &'static str,
    method: &'static str,
    path: &'static str,
    query: &'static str,
    extra_headers: &'static [(&'static str, &'static str)],
    body: &'static [u8],
    signed: &'static str,
    signature: &'static str,
}

const SUITE: &[SuiteCase] = &[
    SuiteCase {
        name: "get-vanilla",
        method: "GET",
        path: "/",
        query: "",
        extra_headers: &[],
        body: b"",
        signed: "host;x-amz-date",
        signature: "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31",
    },
    SuiteCase {
        name: "get-vanilla-query-order-key-case",
        method: "GET",
        path: "/",
        query: "Param2=value2&Param1=value1",
        extra_headers: &[],
        body: b"",
        signed: "host;x-amz-date",
        signature: "b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500",
    },
    SuiteCase {
        name: "get-vanilla-empty-query-key",
        method: "GET",
        path: "/",
        query: "Param1=value1",
        extra_headers: &[],
        body: b"",
        signed: "host;x-amz-date",
        signature: "a67d582fa61cc504c4bae71f336f98b97f1ea3c7a6bfe1b6e45aec72011b9aeb",
    },
    SuiteCase {
        name: "get-header-value-trim",
        method: "GET",
        path: "/",
        query: "",
        extra_headers: &[("My-Header1", " value1"), ("My-Header2", " \"a   b   c\"")],
        body: b"",
        signed: "host;my-header1;my-header2;x-amz-date",
        signature: "acc3ed3afb60bb290fc8d2dd0098b9911fcaa05412b367055dee359757a9c736",
    },
    SuiteCase {
        name: "get-unreserved",
        method: "GET",
        path: "/-._~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz",
        query: "",
        extra_headers: &[],
        body: b"",
        signed: "host;x-amz-date",
        signature: "07ef7494c76fa4850883e2b006601f940f8a34d404d0cfa977f52a65bbf5f24f",
    },
    SuiteCase {
        name: "get-space-normalized",
        method: "GET",
        path: "/example space/",
        query: "",
        extra_headers: &[],
        body: b"",
        signed: "host;x-amz-date",
        signature: "652487583200325589f1fba4c7e578f72c47cb61beeca81406b39ddec1366741",
    },
    SuiteCase {
        name: "get-vanilla-with-session-token",
        method: "GET",
        path: "/",
        query: "",
        extra_headers: &[(
            "X-Amz-Security-Token",
            "6e86291e8372ff2a2260956d9b8aae1d763fbf315fa00fa31553b73ebf194267",
        )],
        body: b"",
        signed: "host;x-amz-date;x-amz-security-token",
        signature: "07ec1639c89043aa0e3e2de82b96708f198cceab042d4a97044c66dd9f74e7f8",
    },
    SuiteCase {
        name: "post-vanilla-query",
        method: "POST",
        path: "/",
        query: "Param1=value1",
        extra_headers: &[],
        body: b"",
        signed: "host;x-amz-date",
        signature: "28038455d6de14eafc1f9222cf5aa6f1a96197d7deb8263271d420d138af7f11",
    },
    SuiteCase {
        name: "post-header-key-sort",
        method: "POST",
        path: "/",
        query: "",
        extra_headers: &[("My-Header1", "value1")],
        body: b"",
        signed: "host;my-header1;x-amz-date",
        signature: "c5410059b04c1ee005303aed430f6e6645f61f4dc9e1461ec8f8916fdf18852c",
    },
    SuiteCase {
        name: "post-x-www-form-urlencoded",
        method: "POST",
        path: "/",
        query: "",
        extra_headers: &[
            ("Content-Type", "application/x-www-form-urlencoded"),
            ("Content-Length", "13"),
            (
                "x-amz-content-sha256",
                "9095672bbd1f56dfc5b65f3e153adc8731a4a654192329106275f4c7b24d0b6e",
            ),
        ],
        body: b"Param1=value1",
        signed: "content-length;content-type;host;x-amz-content-sha256;x-amz-date",
        signature: "d3875051da38690788ef43de4db0d8f280229d82040bfac253562e56c3f20e0b",
    },
];

fn suite_headers(case: &SuiteCase, signature: &str) -> Vec<(String, String)> {
    let mut h = hdrs(&[
        ("Host", "example.amazonaws.com"),
        ("X-Amz-Date", SUITE_DATE),
    ]);
    h.extend(hdrs(case.extra_headers));
    h.push(("Authorization".into(), suite_auth(case.signed, signature)));
    h
}

#[test]
fn sigv4_test_suite_vectors_verify() {
    let v = suite_verifier();
    for case in SUITE {
        let headers = suite_headers(case, case.signature);
        let req = WireRequest {
            method: case.method,
            path: case.path,
            query: case.query,
            headers: &headers,
            body: case.body,
        };
        assert_eq!(v.verify(&req), SigCheck::Ok, "vector {}", case.name);

        // A wrong signature is reported with the right expected value.
        let wrong = "0".repeat(64);
        let headers = suite_headers(case, &wrong);
        let req = WireRequest {
            headers: &headers,
            ..req
        };
        assert_eq!(
            v.verify(&req),
            SigCheck::Mismatch {
                expected: case.signature.to_string(),
                got: wrong.clone()
            },
            "vector {}",
            case.name
        );
    }
}

#[test]
fn sigv4_get_vanilla_intermediate_strings() {
    let headers = suite_headers(&SUITE[0], SUITE[0].signature);
    let req = WireRequest {
        method: "GET",
        path: "/",
        query: "",
        headers: &headers,
        body: b"",
    };
    let creq = sigv4::canonical_request(&req, &["host", "x-amz-date"], &sha256_hex(b""));
    assert_eq!(
        creq,
        "GET\n/\n\nhost:example.amazonaws.com\nx-amz-date:20150830T123600Z\n\nhost;x-amz-date\ne3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    );
    let sts = sigv4::string_to_sign(SUITE_DATE, "20150830/us-east-1/service/aws4_request", &creq);
    assert_eq!(
        sts,
        "AWS4-HMAC-SHA256\n20150830T123600Z\n20150830/us-east-1/service/aws4_request\nbb579772317eb040ac9ed261061d46c1f17a8133879d6129b6e1c25292927e63"
    );
    let key = sigv4::signing_key(SUITE_SECRET, "20150830", "us-east-1", "service");
    assert_eq!(
        support::hex(&hmac_sha256(&key, sts.as_bytes())),
        "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"
    );
}

#[test]
fn sigv4_post_form_canonical_request_and_body_checks() {
    let case = &SUITE[SUITE.len() - 1];
    let headers = suite_headers(case, case.signature);
    let req = WireRequest {
        method: "POST",
        path: "/",
        query: "",
        headers: &headers,
        body: case.body,
    };
    let signed: Vec<&str> = case.signed.split(';').collect();
    assert_eq!(
        sigv4::canonical_request(&req, &signed, &sha256_hex(case.body)),
        "POST\n/\n\ncontent-length:13\ncontent-type:application/x-www-form-urlencoded\nhost:example.amazonaws.com\nx-amz-content-sha256:9095672bbd1f56dfc5b65f3e153adc8731a4a654192329106275f4c7b24d0b6e\nx-amz-date:20150830T123600Z\n\ncontent-length;content-type;host;x-amz-content-sha256;x-amz-date\n9095672bbd1f56dfc5b65f3e153adc8731a4a654192329106275f4c7b24d0b6e"
    );
    // One byte of the body changed: caught by the x-amz-content-sha256 check.
    let req2 = WireRequest {
        body: b"Param1=value2",
        ..req
    };
    assert!(matches!(
        suite_verifier().verify(&req2),
        SigCheck::PayloadHashMismatch { .. }
    ));
}

#[test]
fn sigv4_one_byte_body_change_without_content_sha_header_is_a_mismatch() {
    // post-vanilla-query signs the empty body's hash; any body breaks it.
    let case = &SUITE[7];
    assert_eq!(case.name, "post-vanilla-query");
    let headers = suite_headers(case, case.signature);
    let req = WireRequest {
        method: "POST",
        path: "/",
        query: case.query,
        headers: &headers,
        body: b"x",
    };
    assert!(matches!(
        suite_verifier().verify(&req),
        SigCheck::Mismatch { .. }
    ));
    // And a signed body of ours: sign, then flip one byte.
    let body = br#"{"TraceSegmentDocuments":["{\"id\":\"0000000000000001\"}"]}"#.to_vec();
    let t = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let headers = aws_sign(
        "http://127.0.0.1:2000/TraceSegments",
        &[("host", "127.0.0.1:2000")],
        &body,
        t,
        TEST_REGION,
        None,
    );
    let v = Verifier::new(TEST_REGION, "xray").with_key(TEST_ACCESS_KEY, TEST_SECRET_KEY);
    let ok = WireRequest {
        method: "POST",
        path: "/TraceSegments",
        query: "",
        headers: &headers,
        body: &body,
    };
    assert_eq!(v.verify(&ok), SigCheck::Ok);
    for pos in [0, body.len() / 2, body.len() - 1] {
        let mut tampered = body.clone();
        tampered[pos] ^= 0x01;
        let bad = WireRequest {
            body: &tampered,
            ..ok
        };
        assert!(
            matches!(v.verify(&bad), SigCheck::Mismatch { .. }),
            "flipping byte {pos} went unnoticed"
        );
    }
}

#[test]
fn sigv4_structured_failures() {
    let case = &SUITE[0];
    let good = suite_headers(case, case.signature);
    fn with_header(h: &[(String, String)], name: &str, value: &str) -> Vec<(String, String)> {
        h.iter()
            .map(|(k, v)| {
                if k == name {
                    (k.clone(), value.to_string())
                } else {
                    (k.clone(), v.clone())
                }
            })
            .collect()
    }
    fn req(h: &[(String, String)]) -> WireRequest<'_> {
        WireRequest {
            method: "GET",
            path: "/",
            query: "",
            headers: h,
            body: b"",
        }
    }

    // Missing Authorization / x-amz-date.
    let h: &[_] = &good
        .iter()
        .filter(|(k, _)| k != "Authorization")
        .cloned()
        .collect::<Vec<_>>();
    assert_eq!(
        suite_verifier().verify(&req(h)),
        SigCheck::MissingHeader("authorization".into())
    );
    let h: &[_] = &good
        .iter()
        .filter(|(k, _)| k != "X-Amz-Date")
        .cloned()
        .collect::<Vec<_>>();
    assert_eq!(
        suite_verifier().verify(&req(h)),
        SigCheck::MissingHeader("x-amz-date".into())
    );
    // A signed header absent.
    let h: &[_] = &good
        .iter()
        .filter(|(k, _)| k != "Host")
        .cloned()
        .collect::<Vec<_>>();
    assert_eq!(
        suite_verifier().verify(&req(h)),
        SigCheck::MissingHeader("host".into())
    );
    // Unknown key, wrong service, wrong region.
    let h = &good[..];
    assert_eq!(
        Verifier::new("us-east-1", "service")
            .with_key("OTHER", "x")
            .verify(&req(h)),
        SigCheck::UnknownKey(SUITE_KEY.into())
    );
    assert_eq!(
        Verifier::new("us-east-1", "xray")
            .with_key(SUITE_KEY, SUITE_SECRET)
            .verify(&req(h)),
        SigCheck::WrongService {
            expected: "xray".into(),
            got: "service".into()
        }
    );
    assert_eq!(
        Verifier::new("eu-west-1", "service")
            .with_key(SUITE_KEY, SUITE_SECRET)
            .verify(&req(h)),
        SigCheck::WrongRegion {
            expected: "eu-west-1".into(),
            got: "us-east-1".into()
        }
    );
    // Wrong secret: a plain mismatch.
    assert!(matches!(
        Verifier::new("us-east-1", "service")
            .with_key(SUITE_KEY, "not-the-secret")
            .verify(&req(h)),
        SigCheck::Mismatch { .. }
    ));
    // Stale (2015 is far from now).
    assert!(matches!(
        suite_verifier()
            .with_max_skew(Duration::from_secs(900))
            .verify(&req(h)),
        SigCheck::Stale { .. }
    ));
    // Scope date differing from x-amz-date.
    let replaced = with_header(&good, "X-Amz-Date", "20150831T123600Z");
    let h = &replaced[..];
    assert!(matches!(
        suite_verifier().verify(&req(h)),
        SigCheck::DateMismatch { .. }
    ));
    // Signed header value changed: mismatch; unsigned header added: still fine.
    let replaced = with_header(&good, "Host", "example.amazonaws.com:8080");
    let h = &replaced[..];
    assert!(matches!(
        suite_verifier().verify(&req(h)),
        SigCheck::Mismatch { .. }
    ));
    let mut extra = good.clone();
    extra.push(("User-Agent".into(), "whatever/1.0".into()));
    assert_eq!(suite_verifier().verify(&req(&extra)), SigCheck::Ok);
    // Garbage Authorization.
    let replaced = with_header(&good, "Authorization", "Bearer abc");
    let h = &replaced[..];
    assert!(matches!(
        suite_verifier().verify(&req(h)),
        SigCheck::Malformed(_)
    ));
}

#[test]
fn amz_dates_round_trip() {
    assert_eq!(sigv4::amz_date_to_unix(SUITE_DATE), Some(1_440_938_160));
    assert_eq!(sigv4::unix_to_amz_date(1_440_938_160), SUITE_DATE);
    assert_eq!(sigv4::unix_to_amz_date(0), "19700101T000000Z");
    assert_eq!(sigv4::unix_to_amz_date(951_782_400), "20000229T000000Z");
    for t in (0..4_000_000_000i64).step_by(86_399 * 37) {
        assert_eq!(
            sigv4::amz_date_to_unix(&sigv4::unix_to_amz_date(t)),
            Some(t)
        );
    }
    assert_eq!(sigv4::amz_date_to_unix("2015-08-30T12:36:00Z"), None);
}

#[test]
fn authorization_header_parsing() {
    let a = sigv4::parse_authorization(&suite_auth("host;x-amz-date", &"a".repeat(64))).unwrap();
    assert_eq!(a.access_key_id, SUITE_KEY);
    assert_eq!(a.date, "20150830");
    assert_eq!(a.region, "us-east-1");
    assert_eq!(a.service, "service");
    assert_eq!(a.signed_headers, vec!["host", "x-amz-date"]);
    // No spaces after commas is accepted too.
    let compact = format!(
        "AWS4-HMAC-SHA256 Credential=K/20150830/us-east-1/xray/aws4_request,SignedHeaders=host,Signature={}",
        "b".repeat(64)
    );
    assert!(sigv4::parse_authorization(&compact).is_ok());
    assert!(sigv4::parse_authorization("AWS4-HMAC-SHA256 Credential=K/x").is_err());
}

// ---------------------------------------------------------------- signing with aws-sigv4

/// Sign with the aws-sigv4 crate the way the product does (toolchain.md) and
/// return every header to send: `headers` plus x-amz-date, authorization and
/// x-amz-security-token.
fn aws_sign(
    url: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    time: SystemTime,
    region: &str,
    token: Option<&str>,
) -> Vec<(String, String)> {
    aws_sign_with(
        url,
        headers,
        body,
        time,
        region,
        TEST_ACCESS_KEY,
        TEST_SECRET_KEY,
        token,
    )
}

#[allow(clippy::too_many_arguments)]
fn aws_sign_with(
    url: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    time: SystemTime,
    region: &str,
    key: &str,
    secret: &str,
    token: Option<&str>,
) -> Vec<(String, String)> {
    let identity: Identity =
        Credentials::new(key, secret, token.map(str::to_string), None, "selftest").into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name("xray")
        .time(time)
        .settings(SigningSettings::default())
        .build()
        .expect("signing params")
        .into();
    let req = SignableRequest::new(
        "POST",
        url,
        headers.iter().map(|(k, v)| (*k, *v)),
        SignableBody::Bytes(body),
    )
    .expect("signable request");
    let (instructions, _signature) = sign(req, &params).expect("sign").into_parts();
    let (signed, _params) = instructions.into_parts();
    let mut out = hdrs(headers);
    for h in signed {
        out.push((h.name().to_string(), h.value().to_string()));
    }
    out
}

fn segments_body(docs: &[String]) -> Vec<u8> {
    serde_json::json!({ "TraceSegmentDocuments": docs })
        .to_string()
        .into_bytes()
}

/// Build, sign (now) and send a PutTraceSegments request; returns the response.
fn put_segments(
    client: &mut Client,
    fake: &FakeXray,
    docs: &[String],
    token: Option<&str>,
) -> std::io::Result<support::http::Response> {
    let body = segments_body(docs);
    let headers = signed_put_headers(fake, &body, token);
    client.request("POST", "/TraceSegments", &headers, &body)
}

fn signed_put_headers(fake: &FakeXray, body: &[u8], token: Option<&str>) -> Vec<(String, String)> {
    let host = fake.addr().to_string();
    let ts = format!(
        "{:.9}",
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs_f64()
    );
    aws_sign(
        &format!("{}/TraceSegments", fake.endpoint()),
        &[
            ("host", host.as_str()),
            ("content-type", "application/json"),
            ("x-amzn-xray-timestamp", ts.as_str()),
            ("user-agent", "selftest/1.0"),
        ],
        body,
        SystemTime::now(),
        TEST_REGION,
        token,
    )
}

fn docs(range: std::ops::Range<u64>) -> Vec<String> {
    range.map(|i| make_segment(i, 300)).collect()
}

const T: Duration = Duration::from_secs(10);

#[test]
fn fake_records_a_validly_signed_request() {
    let fake = FakeXray::start();
    let mut c = Client::connect(fake.addr()).unwrap();
    let d = docs(0..3);
    let resp = put_segments(&mut c, &fake, &d, Some("session-token-123")).unwrap();
    assert_eq!(resp.status, 200, "{}", resp.text());
    let v: serde_json::Value = serde_json::from_slice(&resp.body).unwrap();
    assert_eq!(v["UnprocessedTraceSegments"], serde_json::json!([]));

    let reqs = fake.requests();
    assert_eq!(reqs.len(), 1);
    let r = &reqs[0];
    assert_eq!(r.signature, SigCheck::Ok);
    assert_eq!(r.documents, d, "documents are the exact strings sent");
    assert_eq!(r.security_token.as_deref(), Some("session-token-123"));
    assert_eq!(r.user_agent.as_deref(), Some("selftest/1.0"));
    let ts = r.xray_timestamp.as_deref().expect("timestamp header");
    assert_eq!(ts.split('.').nth(1).map(str::len), Some(9), "{ts}");
    assert_eq!(r.status, Some(200));
    assert_eq!(fake.delivered_documents(), d);
    assert_eq!(fake.bad_signatures(), 0);

    // Keep-alive: a second request on the same connection.
    let d2 = docs(3..5);
    let resp = put_segments(&mut c, &fake, &d2, None).unwrap();
    assert_eq!(resp.status, 200);
    assert_eq!(fake.connections(), 1);
    assert_eq!(fake.requests()[1].security_token, None);
    assert!(fake.wait_for_documents(5, T));
}

#[test]
fn fake_rejects_tampered_and_foreign_signatures() {
    let fake = FakeXray::start();
    let mut c = Client::connect(fake.addr()).unwrap();
    let d = docs(0..2);
    let body = segments_body(&d);
    let headers = signed_put_headers(&fake, &body, None);
    let mut tampered = body.clone();
    let pos = tampered.len() - 5;
    tampered[pos] = if tampered[pos] == b'a' { b'b' } else { b'a' };
    let resp = c
        .request("POST", "/TraceSegments", &headers, &tampered)
        .unwrap();
    assert_eq!(resp.status, 403);
    assert_eq!(
        resp.header("x-amzn-ErrorType"),
        Some("InvalidSignatureException")
    );
    let r = &fake.requests()[0];
    assert!(matches!(r.signature, SigCheck::Mismatch { .. }), "{r:?}");
    assert_eq!(fake.bad_signatures(), 1);
    assert_eq!(fake.delivered_count(), 0);

    // Signed for another region / with an unknown key.
    let host = fake.addr().to_string();
    let url = format!("{}/TraceSegments", fake.endpoint());
    let h = aws_sign(
        &url,
        &[("host", &host)],
        &body,
        SystemTime::now(),
        "eu-west-1",
        None,
    );
    let resp = c.request("POST", "/TraceSegments", &h, &body).unwrap();
    assert_eq!(resp.status, 403);
    let h = aws_sign_with(
        &url,
        &[("host", &host)],
        &body,
        SystemTime::now(),
        TEST_REGION,
        "AKIDOTHER",
        TEST_SECRET_KEY,
        None,
    );
    let resp = c.request("POST", "/TraceSegments", &h, &body).unwrap();
    assert_eq!(resp.status, 403);
    // Unsigned.
    let resp = c
        .request("POST", "/TraceSegments", &hdrs(&[("host", &host)]), &body)
        .unwrap();
    assert_eq!(resp.status, 403);
    let reqs = fake.requests();
    assert!(matches!(reqs[1].signature, SigCheck::WrongRegion { .. }));
    assert!(matches!(reqs[2].signature, SigCheck::UnknownKey(_)));
    assert_eq!(
        reqs[3].signature,
        SigCheck::MissingHeader("authorization".into())
    );
    assert_eq!(fake.bad_signatures(), 4);
    assert_eq!(fake.delivered_count(), 0);
    // Bad signatures do not consume the script.
    fake.set_script(vec![Behaviour::throttled()]);
    let resp = c
        .request("POST", "/TraceSegments", &headers, &tampered)
        .unwrap();
    assert_eq!(resp.status, 403);
    assert_eq!(fake.script_remaining(), 1);
}

#[test]
fn fake_follows_the_script_in_order_then_the_default() {
    let fake = FakeXray::start();
    fake.set_script(vec![
        Behaviour::throttled(),
        Behaviour::server_error(),
        Behaviour::Unprocessed(2),
        Behaviour::Garbage,
        Behaviour::CloseConnection,
        Behaviour::delay(Duration::from_millis(50), Behaviour::Ok),
        Behaviour::bad_request(),
        Behaviour::Status(503, r#"{"message":"slow down"}"#.into()),
    ]);
    let mut c = Client::connect(fake.addr()).unwrap();
    let batch = |k: u64| docs(k * 10..k * 10 + 3);

    let r = put_segments(&mut c, &fake, &batch(0), None).unwrap();
    assert_eq!(r.status, 429);
    assert_eq!(r.header("x-amzn-ErrorType"), Some("ThrottledException"));
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(v["__type"], "ThrottledException");
    assert_eq!(v["message"], "Rate exceeded");

    let r = put_segments(&mut c, &fake, &batch(1), None).unwrap();
    assert_eq!(r.status, 500);

    let b2 = batch(2);
    let r = put_segments(&mut c, &fake, &b2, None).unwrap();
    assert_eq!(r.status, 200);
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    let un = v["UnprocessedTraceSegments"].as_array().unwrap();
    assert_eq!(un.len(), 2);
    assert_eq!(un[0]["Id"], support::segment_id(20));
    assert_eq!(un[1]["Id"], support::segment_id(21));
    assert_eq!(un[0]["ErrorCode"], "InvalidSegment");

    let b3 = batch(3);
    let r = put_segments(&mut c, &fake, &b3, None).unwrap();
    assert_eq!(r.status, 200);
    assert!(serde_json::from_slice::<serde_json::Value>(&r.body).is_err());

    // CloseConnection: no answer at all.
    let err = put_segments(&mut c, &fake, &batch(4), None);
    assert!(err.is_err(), "{err:?}");

    let mut c = Client::connect(fake.addr()).unwrap();
    let b5 = batch(5);
    let r = put_segments(&mut c, &fake, &b5, None).unwrap();
    assert_eq!(r.status, 200);
    let r = put_segments(&mut c, &fake, &batch(6), None).unwrap();
    assert_eq!(r.status, 400);
    assert_eq!(
        r.header("x-amzn-ErrorType"),
        Some("InvalidRequestException")
    );
    let r = put_segments(&mut c, &fake, &batch(7), None).unwrap();
    assert_eq!(r.status, 503);
    assert_eq!(r.header("x-amzn-ErrorType"), None);
    // Script exhausted: default Ok.
    let b8 = batch(8);
    let r = put_segments(&mut c, &fake, &b8, None).unwrap();
    assert_eq!(r.status, 200);

    let reqs = fake.requests();
    let statuses: Vec<Option<u16>> = reqs.iter().map(|r| r.status).collect();
    assert_eq!(
        statuses,
        vec![
            Some(429),
            Some(500),
            Some(200),
            Some(200),
            None,
            Some(200),
            Some(400),
            Some(503),
            Some(200)
        ]
    );
    assert!(reqs.iter().all(|r| r.signature.is_ok()));
    assert_eq!(
        reqs[2].unprocessed_ids,
        vec![support::segment_id(20), support::segment_id(21)]
    );
    assert!(reqs[5].answered_at.unwrap() - reqs[5].received_at >= Duration::from_millis(50));
    assert_eq!(reqs[4].behaviour, Some(Behaviour::CloseConnection));

    // Delivered: the unprocessed ones excluded, the garbage-answered one included.
    let mut want = vec![b2[2].clone()];
    want.extend(b3);
    want.extend(b5);
    want.extend(b8);
    assert_eq!(fake.delivered_documents(), want);
    assert_eq!(fake.script_remaining(), 0);
}

#[test]
fn fake_accepts_chunked_bodies() {
    let fake = FakeXray::start();
    let mut c = Client::connect(fake.addr()).unwrap();
    let d = docs(0..4);
    let body = segments_body(&d);
    let headers = signed_put_headers(&fake, &body, None);
    c.send_chunked("POST", "/TraceSegments", &headers, &body, 100)
        .unwrap();
    let r = c.read_response().unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let rec = &fake.requests()[0];
    assert!(rec.chunked);
    assert_eq!(rec.signature, SigCheck::Ok);
    assert_eq!(rec.documents, d);
    assert_eq!(fake.delivered_documents(), d);
}

#[test]
fn fake_telemetry_unknown_paths_and_limits() {
    let fake = FakeXray::start();
    let mut c = Client::connect(fake.addr()).unwrap();
    let host = fake.addr().to_string();
    let body = br#"{"TelemetryRecords":[{"SegmentsReceivedCount":1}],"Hostname":"h"}"#;
    let h = aws_sign(
        &format!("{}/TelemetryRecords", fake.endpoint()),
        &[("host", &host)],
        body,
        SystemTime::now(),
        TEST_REGION,
        None,
    );
    let r = c.request("POST", "/TelemetryRecords", &h, body).unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "{}");
    let t = fake.telemetry_requests();
    assert_eq!(t.len(), 1);
    assert_eq!(t[0].body, body.to_vec());
    assert_eq!(t[0].signature, SigCheck::Ok);

    let r = c
        .request("GET", "/Nope", &hdrs(&[("host", &host)]), b"")
        .unwrap();
    assert_eq!(r.status, 404);
    assert_eq!(fake.other_requests().len(), 1);

    // 51 documents: over X-Ray's limit, 400 and not delivered.
    let r = put_segments(&mut c, &fake, &docs(0..51), None).unwrap();
    assert_eq!(r.status, 400);
    assert_eq!(fake.max_documents_per_request(), 51);
    assert_eq!(fake.delivered_count(), 0);
    // 50 is fine.
    let r = put_segments(&mut c, &fake, &docs(0..50), None).unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(fake.delivered_count(), 50);

    // Not JSON: 400 SerializationException, recorded with json_error.
    let bad = b"{not json".to_vec();
    let h = signed_put_headers(&fake, &bad, None);
    let r = c.request("POST", "/TraceSegments", &h, &bad).unwrap();
    assert_eq!(r.status, 400);
    assert!(fake.requests().last().unwrap().json_error.is_some());
}

#[test]
fn fake_random_faults_are_reproducible() {
    let run = |seed: u64| -> Vec<Option<u16>> {
        let fake = FakeXray::start_with(FakeConfig::default());
        fake.set_random(Some(RandomFaults {
            p_500: 0.2,
            p_429: 0.2,
            p_unprocessed: 0.2,
            seed,
        }));
        let mut c = Client::connect(fake.addr()).unwrap();
        for k in 0..30 {
            put_segments(&mut c, &fake, &docs(k * 5..k * 5 + 5), None).unwrap();
        }
        let reqs = fake.requests();
        let delivered = fake.delivered_count();
        let expected: usize = reqs
            .iter()
            .filter(|r| r.succeeded())
            .map(|r| r.documents.len() - r.unprocessed_ids.len())
            .sum();
        assert_eq!(delivered, expected);
        reqs.iter()
            .map(|r| {
                if r.unprocessed_ids.is_empty() {
                    r.status
                } else {
                    Some(1000 + r.unprocessed_ids.len() as u16)
                }
            })
            .collect()
    };
    let a = run(42);
    assert_eq!(a, run(42));
    assert_ne!(a, run(43));
    assert!(a.contains(&Some(500)) && a.contains(&Some(429)) && a.contains(&Some(200)));
    assert!(a.iter().any(|s| s.unwrap() > 1000));
}

#[test]
fn fake_wait_times_out_and_drop_closes_connections() {
    let fake = FakeXray::start();
    fake.set_default(Behaviour::delay(Duration::from_secs(30), Behaviour::Ok));
    assert!(!fake.wait_for_documents(1, Duration::from_millis(50)));
    let mut c = Client::connect(fake.addr()).unwrap();
    let d = docs(0..1);
    let body = segments_body(&d);
    let h = signed_put_headers(&fake, &body, None);
    c.send("POST", "/TraceSegments", &h, &body).unwrap();
    assert!(fake.wait_for_requests(1, T));
    let started = std::time::Instant::now();
    drop(fake);
    // Drop did not wait for the 30 s delay, and the client sees the close.
    assert!(started.elapsed() < Duration::from_secs(20));
    assert!(c.read_response().is_err());
}

// ---------------------------------------------------------------- UDP and log helpers

#[test]
fn make_segment_is_valid_sized_and_indexed() {
    for (i, size) in [(0u64, 100usize), (1, 1000), (77, 4096), (123_456, 60_000)] {
        let d = make_segment(i, size);
        assert!(d.len() >= size.min(d.len()));
        if size >= 700 {
            assert_eq!(d.len(), size);
        }
        let v: serde_json::Value = serde_json::from_str(&d).expect("valid JSON");
        assert_eq!(v["id"].as_str().unwrap().len(), 16);
        assert_eq!(segment_index(&d), Some(i));
        let tid = v["trace_id"].as_str().unwrap();
        let parts: Vec<&str> = tid.split('-').collect();
        assert_eq!(parts.len(), 3, "{tid}");
        assert_eq!(parts[0], "1");
        assert_eq!(parts[1].len(), 8);
        assert_eq!(parts[2].len(), 24);
        assert!(
            parts[1..]
                .iter()
                .all(|p| p.bytes().all(|b| b.is_ascii_hexdigit()))
        );
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let epoch = u64::from_str_radix(parts[1], 16).unwrap();
        assert!(now.abs_diff(epoch) < 60);
        assert!(v["start_time"].as_f64().unwrap() < v["end_time"].as_f64().unwrap());
        assert!(v["start_time"].as_f64().unwrap() > 1.6e9);
        assert_eq!(v["name"], "xrayd-test-service");
        // Escapes survive as written (so re-encoding would be detected).
        assert!(d.contains(r"caf\u00e9"));
        assert!(d.contains(r"https:\/\/"));
    }
}

#[test]
fn log_line_parsers() {
    let line = "2025-11-26T10:00:00+00:00 [Info] Listening for segments on UDP 127.0.0.1:41234";
    assert_eq!(
        support::parse_listening_line(line),
        Some("127.0.0.1:41234".parse().unwrap())
    );
    assert_eq!(
        support::parse_listening_line(
            "x [Info] Listening for segments on UDP [::1]:2000 (8 MiB buffer)"
        ),
        Some("[::1]:2000".parse().unwrap())
    );
    let c = support::parse_final_counts(
        "2025-11-26T10:00:00Z [Info] Final counts: received=10 rejected=1 sent=9 spillover=0",
    )
    .unwrap();
    assert_eq!(c["received"], 10);
    assert_eq!(c["rejected"], 1);
    assert_eq!(c["sent"], 9);
    assert_eq!(c.len(), 4);
    assert!(support::parse_final_counts("Final counts: nonsense").is_none());
}

#[test]
fn udp_datagrams_carry_the_header_and_document() {
    let rx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    rx.set_read_timeout(Some(T)).unwrap();
    let addr = rx.local_addr().unwrap();
    let d = docs(0..3);
    support::send_segments(addr, &d);
    let mut buf = vec![0u8; 65536];
    for doc in &d {
        let n = rx.recv(&mut buf).unwrap();
        let text = std::str::from_utf8(&buf[..n]).unwrap();
        let (header, body) = text.split_once('\n').unwrap();
        assert_eq!(header, r#"{"format":"json","version":1}"#);
        assert_eq!(body, doc);
    }
}

/// A signed POST of `body` to `path` (JSON headers), on a fresh connection.
fn signed_post(fake: &FakeXray, path: &str, body: &[u8]) -> support::http::Response {
    let host = fake.addr().to_string();
    let h = aws_sign(
        &format!("{}{path}", fake.endpoint()),
        &[("host", &host), ("content-type", "application/json")],
        body,
        SystemTime::now(),
        TEST_REGION,
        None,
    );
    Client::connect(fake.addr())
        .unwrap()
        .request("POST", path, &h, body)
        .unwrap()
}

#[test]
fn fake_plays_the_sampling_apis_and_instance_metadata() {
    let fake = FakeXray::start();
    let r = signed_post(&fake, "/GetSamplingRules", b"{}");
    assert_eq!(
        (r.status, r.text()),
        (200, support::DEFAULT_RULES.to_string())
    );
    let stats = br#"{"SamplingStatisticsDocuments":[{"RuleName":"a"},{"RuleName":"b"}]}"#;
    let r = signed_post(&fake, "/SamplingTargets", stats);
    assert_eq!(r.status, 200, "{}", r.text());
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    let names: Vec<&str> = v["SamplingTargetDocuments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["RuleName"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["a", "b"], "one target per reported rule");
    // Unsigned: 403, like X-Ray.
    let r = support::one_shot(fake.addr(), "POST", "/GetSamplingRules", b"{}");
    assert_eq!(r.status, 403);
    assert_eq!(
        r.header("x-amzn-errortype"),
        Some("InvalidSignatureException")
    );
    // A per-path answer replaces the built-in one, with its own Content-Type.
    fake.answer_typed("/GetSamplingRules", 429, "application/x-amz-json-1.1", "{}");
    let r = signed_post(&fake, "/GetSamplingRules", b"{}");
    assert_eq!(r.status, 429);
    assert_eq!(r.header("content-type"), Some("application/x-amz-json-1.1"));

    // IMDSv2: a token, then the values set.
    fake.set_metadata("instance-id", "i-0selftest");
    let mut c = Client::connect(fake.addr()).unwrap();
    let r = c
        .request("PUT", "/latest/api/token", &hdrs(&[("host", "x")]), b"")
        .unwrap();
    assert_eq!((r.status, r.text()), (200, "fake-token".to_string()));
    let r = c
        .request("GET", "/latest/meta-data/instance-id", &[], b"")
        .unwrap();
    assert_eq!((r.status, r.text()), (200, "i-0selftest".to_string()));
    let r = c
        .request("GET", "/latest/meta-data/hostname", &[], b"")
        .unwrap();
    assert_eq!(r.status, 404);

    // Every request, in arrival order, with its answer.
    let seen = fake.seen();
    let paths: Vec<&str> = seen.iter().map(|r| r.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "/GetSamplingRules",
            "/SamplingTargets",
            "/GetSamplingRules",
            "/GetSamplingRules",
            "/latest/api/token",
            "/latest/meta-data/instance-id",
            "/latest/meta-data/hostname"
        ]
    );
    let statuses: Vec<Option<u16>> = seen.iter().map(|r| r.status).collect();
    assert_eq!(
        statuses,
        [200, 200, 403, 429, 200, 200, 404].map(Some).to_vec()
    );
    assert_eq!(fake.seen_on("/GetSamplingRules").len(), 3);
}

#[test]
fn fake_goes_down_and_comes_back_on_the_same_port() {
    let fake = FakeXray::start();
    let addr = fake.addr();
    assert_eq!(signed_post(&fake, "/GetSamplingRules", b"{}").status, 200);
    fake.down();
    let refused = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1));
    assert!(refused.is_err(), "connected while the fake is down");
    fake.up();
    assert_eq!(signed_post(&fake, "/GetSamplingRules", b"{}").status, 200);
    assert_eq!(fake.addr(), addr);
    assert_eq!(fake.seen().len(), 2, "nothing recorded while down");
    assert_eq!(fake.connections(), 2);
}

#[test]
fn a_handler_answers_everything_and_signatures_are_verified_again() {
    let fake = FakeXray::serve(|r| {
        if r.path == "/creds" {
            support::Answer::json(200, &support::creds_json("ASIA1", "s", "t", 60))
        } else {
            support::sts_error(403, "AccessDenied", "no")
        }
    });
    let r = support::one_shot(fake.addr(), "GET", "/creds", b"");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("connection"), Some("close"));
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(v["AccessKeyId"], "ASIA1");
    let r = support::one_shot(fake.addr(), "POST", "/", b"Action=AssumeRole&RoleArn=a%3Ab");
    assert_eq!(r.status, 403);
    assert!(
        r.text().contains("<Code>AccessDenied</Code>"),
        "{}",
        r.text()
    );
    assert_eq!(fake.seen()[1].form()["RoleArn"], "a:b");
    assert_eq!(fake.count(|r| r.method == "GET"), 1);

    // The request's own signature, checked against what the caller expects.
    let body = br#"{"TraceSegmentDocuments":[]}"#;
    let host = fake.addr().to_string();
    let h = aws_sign_with(
        &format!("{}/TraceSegments", fake.endpoint()),
        &[("host", &host)],
        body,
        SystemTime::now(),
        "eu-west-1",
        "ASIAOTHER",
        "other-secret",
        Some("tok"),
    );
    Client::connect(fake.addr())
        .unwrap()
        .request("POST", "/TraceSegments", &h, body)
        .unwrap();
    let r = fake.seen().pop().unwrap();
    assert_eq!(
        r.signed_by("ASIAOTHER", "other-secret", Some("tok")),
        Ok(())
    );
    assert!(
        r.signed_by("ASIAOTHER", "wrong-secret", Some("tok"))
            .is_err()
    );
    assert!(r.signed_by("ASIAOTHER", "other-secret", None).is_err());
    assert!(
        r.signed_by("AKIDTEST", "other-secret", Some("tok"))
            .is_err()
    );
}
