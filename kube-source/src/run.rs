//! The product's plumbing: seven kube-runtime watchers (which relist after `410 Gone`,
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
    runtime::{watcher, WatchStreamExt},
    Api, Client, Resource,
};
use serde::de::DeserializeOwned;
use tracing::{info, warn};

use crate::{
    openshift::{NetNamespace, NetNamespaceWrite, CHANGE_NETWORK_ANNOTATION},
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

/// The verbs `write_netnamespace` uses, besides list and watch.
pub const NETNAMESPACE_WRITE_VERBS: [&str; 3] = ["create", "delete", "patch"];

/// The (API group, resource) of each kind `changes` watches: what oxsdn-kube's
/// ClusterRole must let it list and watch (and, NetNamespaces, write), and nothing more.
pub fn watched() -> [(String, String); 7] {
    [
        resource::<NetNamespace>(),
        resource::<Namespace>(),
        resource::<Node>(),
        resource::<Service>(),
        resource::<EndpointSlice>(),
        resource::<Pod>(),
        resource::<NetworkPolicy>(),
    ]
}

/// Every change of the seven kinds the store follows, as one stream.
pub fn changes(client: &Client) -> impl Stream<Item = Change> + Send {
    select_all([
        watch::<NetNamespace>(client, Change::NetNamespace).boxed(),
        watch::<Namespace>(client, Change::Namespace).boxed(),
        watch::<Node>(client, Change::Node).boxed(),
        watch::<Service>(client, Change::Service).boxed(),
        watch::<EndpointSlice>(client, Change::EndpointSlice).boxed(),
        watch::<Pod>(client, Change::Pod).boxed(),
        watch::<NetworkPolicy>(client, Change::NetworkPolicy).boxed(),
    ])
}

/// Makes one write to the NetNamespace objects. Conflicts and objects already gone or
/// already there are left to the next change the watch delivers.
pub fn write_netnamespace(api: &Api<NetNamespace>, runtime: &tokio::runtime::Handle, write: NetNamespaceWrite) {
    let result = runtime.block_on(async {
        match &write {
            NetNamespaceWrite::Create { name, netid } => api
                .create(&kube::api::PostParams::default(), &NetNamespace::new(name, *netid))
                .await
                .map(drop)
                .map_err(anyhow::Error::from),
            NetNamespaceWrite::Update { name, netid, clear_change_network } => {
                let mut patch = serde_json::json!({ "netid": netid });
                if *clear_change_network {
                    patch["metadata"] = serde_json::json!({ "annotations": { CHANGE_NETWORK_ANNOTATION: null } });
                }
                api.patch(name, &kube::api::PatchParams::default(), &kube::api::Patch::Merge(&patch))
                    .await
                    .map(drop)
                    .map_err(anyhow::Error::from)
            }
            NetNamespaceWrite::Delete { name } => {
                api.delete(name, &kube::api::DeleteParams::default()).await.map(drop).map_err(anyhow::Error::from)
            }
        }
    });
    match result {
        Ok(()) => info!(?write, "NetNamespace written"),
        Err(e) => match e.downcast_ref::<kube::Error>() {
            Some(kube::Error::Api(status)) if [404, 409].contains(&status.code) => {}
            _ => warn!(?write, "writing the NetNamespace failed: {e:#}"),
        },
    }
}

/// Feeds `changes` to `translator` until the stream ends (the API's never does; a test's
/// does), handing each NetNamespace write it asks for to `write`, and gives the
/// translator back then.
pub async fn follow(
    translator: Translator,
    changes: impl Stream<Item = Change> + Send,
    write: impl FnMut(NetNamespaceWrite) + Send + 'static,
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
    mut write: impl FnMut(NetNamespaceWrite),
) -> Translator {
    let mut was_synced = false;
    loop {
        match changes.recv_timeout(RETRY_PERIOD) {
            Ok(change) => translator.handle(change),
            Err(mpsc::RecvTimeoutError::Timeout) => translator.retry_failed(),
            Err(mpsc::RecvTimeoutError::Disconnected) => return translator,
        }
        translator.take_api_writes().into_iter().for_each(&mut write);
        if !was_synced && translator.synced() {
            was_synced = true;
            info!("every kind listed: the store follows the API");
        }
    }
}
