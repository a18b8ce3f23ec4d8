//! The product's plumbing: six kube-runtime watchers (which relist after `410 Gone`,
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

use crate::translate::{Change, Translator};

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

/// The (API group, resource) of each kind `changes` watches: what oxsdn-kube's
/// ClusterRole must let it list and watch, and nothing more.
pub fn watched() -> [(String, String); 6] {
    [
        resource::<Namespace>(),
        resource::<Node>(),
        resource::<Service>(),
        resource::<EndpointSlice>(),
        resource::<Pod>(),
        resource::<NetworkPolicy>(),
    ]
}

/// Every change of the six kinds the store follows, as one stream.
pub fn changes(client: &Client) -> impl Stream<Item = Change> + Send {
    select_all([
        watch::<Namespace>(client, Change::Namespace).boxed(),
        watch::<Node>(client, Change::Node).boxed(),
        watch::<Service>(client, Change::Service).boxed(),
        watch::<EndpointSlice>(client, Change::EndpointSlice).boxed(),
        watch::<Pod>(client, Change::Pod).boxed(),
        watch::<NetworkPolicy>(client, Change::NetworkPolicy).boxed(),
    ])
}

/// Feeds `changes` to `translator` until the stream ends (the API's never does; a test's
/// does), and gives the translator back then.
pub async fn follow(translator: Translator, changes: impl Stream<Item = Change> + Send) -> anyhow::Result<Translator> {
    let (send, receive) = mpsc::channel::<Change>();
    let worker = std::thread::spawn(move || translate_loop(translator, receive));
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

fn translate_loop(mut translator: Translator, changes: mpsc::Receiver<Change>) -> Translator {
    let mut was_synced = false;
    loop {
        match changes.recv_timeout(RETRY_PERIOD) {
            Ok(change) => translator.handle(change),
            Err(mpsc::RecvTimeoutError::Timeout) => translator.retry_failed(),
            Err(mpsc::RecvTimeoutError::Disconnected) => return translator,
        }
        if !was_synced && translator.synced() {
            was_synced = true;
            info!("every kind listed: the store follows the API");
        }
    }
}
