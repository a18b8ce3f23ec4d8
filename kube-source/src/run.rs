//! The product's plumbing: ten kube-runtime watchers (which relist after `410 Gone`,
//! resume after disconnects and back off while the API server is away) feed one
//! `Translator` on a thread of its own, since the store's operations block.

use std::{sync::mpsc, time::Duration};

use futures::{stream::select_all, Stream, StreamExt};
use k8s_openapi::api::{
    core::v1::{Namespace, Node, Pod, Service},
    discovery::v1::EndpointSlice,
    networking::v1::NetworkPolicy,
};
use kube::{
    api::{DeleteParams, Patch, PatchParams, PostParams},
    runtime::{watcher, WatchStreamExt},
    Api, Client, Resource,
};
use serde::de::DeserializeOwned;
use tracing::{info, warn};

use crate::{
    openshift::{
        ApiWrite, ClusterNetwork, EgressNetworkPolicy, HostSubnet, HostSubnetWrite, NetNamespace, NetNamespaceWrite,
        CHANGE_NETWORK_ANNOTATION,
    },
    translate::{Change, Translator},
};

/// How often writes that failed on the store are tried again.
pub const RETRY_PERIOD: Duration = Duration::from_secs(5);

fn watch<K>(client: &Client, to_change: fn(watcher::Event<K>) -> Change) -> impl Stream<Item = Change> + Send
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug + Send + 'static,
{
    watcher(Api::<K>::all(client.clone()), watcher::Config::default()).default_backoff().filter_map(
        move |event| async move {
            match event {
                Ok(event) => Some(to_change(event)),
                Err(e) => {
                    // The watcher retries by itself (with backoff); the store keeps its state.
                    warn!("watch failed: {e}");
                    None
                }
            }
        },
    )
}

fn resource<K: Resource<DynamicType = ()>>() -> (String, String) {
    (K::group(&()).into_owned(), K::plural(&()).into_owned())
}

/// The verbs `ApiWriter::write` uses on each resource it writes, besides list and watch.
pub const WRITE_VERBS: [(&str, &[&str]); 3] = [
    ("netnamespaces", &["create", "delete", "patch"]),
    ("hostsubnets", &["create", "delete", "patch"]),
    ("clusternetworks", &["create"]),
];

/// The (API group, resource) of each kind `changes` watches: what oxsdn-kube's
/// ClusterRole must let it list and watch (and, those of `WRITE_VERBS`, write), and
/// nothing more.
pub fn watched() -> [(String, String); 10] {
    [
        resource::<NetNamespace>(),
        resource::<HostSubnet>(),
        resource::<ClusterNetwork>(),
        resource::<EgressNetworkPolicy>(),
        resource::<Namespace>(),
        resource::<Node>(),
        resource::<Service>(),
        resource::<EndpointSlice>(),
        resource::<Pod>(),
        resource::<NetworkPolicy>(),
    ]
}

/// Every change of the ten kinds the store follows, as one stream.
pub fn changes(client: &Client) -> impl Stream<Item = Change> + Send {
    select_all([
        watch::<NetNamespace>(client, Change::NetNamespace).boxed(),
        watch::<HostSubnet>(client, Change::HostSubnet).boxed(),
        watch::<ClusterNetwork>(client, Change::ClusterNetwork).boxed(),
        watch::<EgressNetworkPolicy>(client, Change::EgressNetworkPolicy).boxed(),
        watch::<Namespace>(client, Change::Namespace).boxed(),
        watch::<Node>(client, Change::Node).boxed(),
        watch::<Service>(client, Change::Service).boxed(),
        watch::<EndpointSlice>(client, Change::EndpointSlice).boxed(),
        watch::<Pod>(client, Change::Pod).boxed(),
        watch::<NetworkPolicy>(client, Change::NetworkPolicy).boxed(),
    ])
}

/// Makes the writes the translator asks for to OpenShift's objects.
pub struct ApiWriter {
    netnamespaces: Api<NetNamespace>,
    hostsubnets: Api<HostSubnet>,
    cluster_networks: Api<ClusterNetwork>,
    runtime: tokio::runtime::Handle,
}

impl ApiWriter {
    /// Writes through `client` on `runtime` (the writes come from the translation thread).
    pub fn new(client: &Client, runtime: tokio::runtime::Handle) -> Self {
        ApiWriter {
            netnamespaces: Api::all(client.clone()),
            hostsubnets: Api::all(client.clone()),
            cluster_networks: Api::all(client.clone()),
            runtime,
        }
    }

    /// Makes one write. Conflicts and objects already gone or already there are left to
    /// the next change the watch delivers.
    pub fn write(&self, write: ApiWrite) {
        let result = self.runtime.block_on(self.send(&write));
        match result {
            Ok(()) => info!(?write, "written to the API"),
            Err(kube::Error::Api(status)) if [404, 409].contains(&status.code) => {}
            Err(e) => warn!(?write, "writing to the API failed: {e}"),
        }
    }

    async fn send(&self, write: &ApiWrite) -> kube::Result<()> {
        let create = PostParams::default();
        let merge = |patch: serde_json::Value| Patch::Merge(patch);
        match write {
            ApiWrite::NetNamespace(NetNamespaceWrite::Create { name, netid }) => {
                self.netnamespaces.create(&create, &NetNamespace::new(name, *netid)).await.map(drop)
            }
            ApiWrite::NetNamespace(NetNamespaceWrite::Update { name, netid, clear_change_network }) => {
                let mut patch = serde_json::json!({ "netid": netid });
                if *clear_change_network {
                    patch["metadata"] = serde_json::json!({ "annotations": { CHANGE_NETWORK_ANNOTATION: null } });
                }
                self.netnamespaces.patch(name, &PatchParams::default(), &merge(patch)).await.map(drop)
            }
            ApiWrite::NetNamespace(NetNamespaceWrite::Delete { name }) => {
                self.netnamespaces.delete(name, &DeleteParams::default()).await.map(drop)
            }
            ApiWrite::HostSubnet(HostSubnetWrite::Create { name, host_ip, subnet, node_uid }) => {
                let object = HostSubnet::new(name, *host_ip, *subnet, node_uid.as_deref());
                self.hostsubnets.create(&create, &object).await.map(drop)
            }
            ApiWrite::HostSubnet(HostSubnetWrite::UpdateHostIp { name, host_ip }) => {
                let patch = serde_json::json!({ "hostIP": host_ip.to_string() });
                self.hostsubnets.patch(name, &PatchParams::default(), &merge(patch)).await.map(drop)
            }
            ApiWrite::HostSubnet(HostSubnetWrite::Delete { name }) => {
                self.hostsubnets.delete(name, &DeleteParams::default()).await.map(drop)
            }
            ApiWrite::CreateClusterNetwork(object) => {
                self.cluster_networks.create(&create, object.as_ref()).await.map(drop)
            }
        }
    }
}

/// Feeds `changes` to `translator` until the stream ends (the API's never does; a test's
/// does), handing each write to the API it asks for to `write`, and gives the
/// translator back then.
pub async fn follow(
    translator: Translator,
    changes: impl Stream<Item = Change> + Send,
    write: impl FnMut(ApiWrite) + Send + 'static,
) -> anyhow::Result<Translator> {
    let (send, receive) = mpsc::channel::<Change>();
    let worker = std::thread::spawn(move || translate_loop(translator, receive, write));
    let mut changes = std::pin::pin!(changes);
    while let Some(change) = changes.next().await {
        if send.send(change).is_err() {
            break;
        }
    }
    drop(send);
    tokio::task::spawn_blocking(move || worker.join())
        .await?
        .map_err(|_| anyhow::anyhow!("the translation thread panicked"))
}

fn translate_loop(
    mut translator: Translator,
    changes: mpsc::Receiver<Change>,
    mut write: impl FnMut(ApiWrite),
) -> Translator {
    let mut was_synced = false;
    // Failed writes are retried every period, also while changes keep coming.
    let mut retried = std::time::Instant::now();
    loop {
        match changes.recv_timeout(RETRY_PERIOD) {
            Ok(change) => translator.handle(change),
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => return translator,
        }
        if retried.elapsed() >= RETRY_PERIOD {
            translator.retry_failed();
            retried = std::time::Instant::now();
        }
        translator.take_api_writes().into_iter().for_each(&mut write);
        if !was_synced && translator.synced() {
            was_synced = true;
            info!("every kind listed: the store follows the API");
        }
    }
}
