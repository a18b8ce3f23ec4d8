//! The Lease hand-over on shutdown, through kube's own client and `LeaderElector`, against
//! a stand-in for the API server's one Lease object (no API server is installable here):
//! it keeps the object in memory and applies the API server's rules for it: POST creates
//! (409 if it exists), GET reads (404 if absent), PUT replaces only with the
//! resourceVersion it holds (409 otherwise) and gives a new one.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use http::{Method, Request, Response, StatusCode};
use k8s_openapi::api::coordination::v1::Lease;
use kube::{client::Body, Api, Client};
use oxsdn_kube::lease::{LeaderElector, LeaseTimings, LEASE_NAME};

#[derive(Default)]
struct LeaseEndpoint {
    lease: Option<Lease>,
    version: u64,
}

impl LeaseEndpoint {
    fn answer(&mut self, method: &Method, body: &[u8]) -> (StatusCode, Vec<u8>) {
        let conflict = || (StatusCode::CONFLICT, status(409, "Conflict"));
        match (method, &self.lease) {
            (&Method::GET, None) => (StatusCode::NOT_FOUND, status(404, "NotFound")),
            (&Method::GET, Some(lease)) => (StatusCode::OK, serde_json::to_vec(lease).unwrap()),
            (&Method::POST, Some(_)) => conflict(),
            (&Method::PUT, None) => (StatusCode::NOT_FOUND, status(404, "NotFound")),
            (&Method::POST | &Method::PUT, current) => {
                let mut lease: Lease = serde_json::from_slice(body).unwrap();
                let held = current.as_ref().and_then(|l| l.metadata.resource_version.clone());
                if method == Method::PUT && lease.metadata.resource_version != held {
                    return conflict();
                }
                self.version += 1;
                lease.metadata.resource_version = Some(self.version.to_string());
                self.lease = Some(lease.clone());
                (StatusCode::OK, serde_json::to_vec(&lease).unwrap())
            }
            _ => (StatusCode::METHOD_NOT_ALLOWED, status(405, "MethodNotAllowed")),
        }
    }
}

fn status(code: u16, reason: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": reason, "code": code, "message": reason
    }))
    .unwrap()
}

/// A client of kube whose requests the stand-in answers.
fn client(endpoint: Arc<Mutex<LeaseEndpoint>>) -> Client {
    let service = tower::service_fn(move |request: Request<Body>| {
        let endpoint = endpoint.clone();
        async move {
            let path = request.uri().path().to_owned();
            let method = request.method().clone();
            let body = request.into_body().collect_bytes().await?;
            let lease_path = format!("/apis/coordination.k8s.io/v1/namespaces/oxsdn/leases/{LEASE_NAME}");
            let (code, body) =
                match path == lease_path || path == "/apis/coordination.k8s.io/v1/namespaces/oxsdn/leases" {
                    true => endpoint.lock().unwrap().answer(&method, &body),
                    false => (StatusCode::NOT_FOUND, status(404, "NotFound")),
                };
            Ok::<_, kube::Error>(Response::builder().status(code).body(Body::from(body)).unwrap())
        }
    });
    Client::new(service, "oxsdn")
}

const TIMINGS: LeaseTimings = LeaseTimings {
    duration: Duration::from_secs(15),
    renew_deadline: Duration::from_secs(10),
    retry: Duration::from_millis(100),
};

fn holder(endpoint: &Mutex<LeaseEndpoint>) -> Option<String> {
    endpoint.lock().unwrap().lease.as_ref()?.spec.as_ref()?.holder_identity.clone()
}

#[tokio::test]
async fn a_replica_stopping_releases_the_lease_and_the_standby_takes_it_at_once() {
    let endpoint = Arc::new(Mutex::new(LeaseEndpoint::default()));
    let api = || Api::<Lease>::namespaced(client(endpoint.clone()), "oxsdn");
    let mut a = LeaderElector::new(api(), LEASE_NAME, "oxsdn-kube-a", TIMINGS);
    a.acquire().await;
    assert_eq!(holder(&endpoint).as_deref(), Some("oxsdn-kube-a"));

    let mut b = LeaderElector::new(api(), LEASE_NAME, "oxsdn-kube-b", TIMINGS);
    let standby = tokio::spawn(async move {
        b.acquire().await;
        b
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!standby.is_finished(), "the standby waits while a holds the Lease");

    a.release().await.unwrap();
    // Taken at the standby's next tries, far sooner than the 15 s of a's hold.
    let mut b = tokio::time::timeout(Duration::from_secs(3), standby).await.expect("taken at once").unwrap();
    assert_eq!(holder(&endpoint).as_deref(), Some("oxsdn-kube-b"));
    let spec = endpoint.lock().unwrap().lease.clone().unwrap().spec.unwrap();
    assert_eq!(spec.lease_transitions, Some(1));
    assert_eq!(spec.lease_duration_seconds, Some(15));

    // A replica that no longer holds it releases nothing.
    a.release().await.unwrap();
    assert_eq!(holder(&endpoint).as_deref(), Some("oxsdn-kube-b"));
    b.release().await.unwrap();
    assert_eq!(holder(&endpoint).as_deref(), Some(""));
}
