//! `oxsdn-kube`: keeps oxsdn's cluster store equal to the Kubernetes API. Run as a
//! Deployment (deploy/kube.yaml); leader-elected, so any number of replicas is safe.

use anyhow::Context;
use clap::Parser;
use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use kube::{Api, Client};
use oxsdn_controller::{
    store::{self, StoreOptions},
    Cluster,
};
use oxsdn_kube::{
    lease::{LeaderElector, LeaseTimings, LEASE_NAME},
    run::{self, ApiWriter},
    translate::Translator,
};
use tokio::signal::unix::{signal, SignalKind};
use tracing::{info, warn};

#[derive(Parser)]
#[command(version, about = "oxsdn's cluster component: keeps the store equal to the Kubernetes API")]
struct Cli {
    #[command(flatten)]
    store: StoreOptions,
    /// Namespace of the leader-election Lease (the Deployment's, from the downward API).
    #[arg(long, env = "POD_NAMESPACE", default_value = "oxsdn")]
    lease_namespace: String,
    /// Name of the leader-election Lease.
    #[arg(long, default_value = LEASE_NAME)]
    lease_name: String,
    /// This replica's identity in the Lease (its pod name, from the downward API).
    #[arg(long, env = "POD_NAME")]
    identity: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .init();
    let cli = Cli::parse();
    let backend = cli.store.backend()?;
    let store = store::open(&backend).with_context(|| format!("opening the {backend}"))?;
    let translator = Translator::new(Cluster::new(store)).context("reading the cluster configuration")?;
    let client = Client::try_default().await.context("connecting to the Kubernetes API")?;
    let mut elector = LeaderElector::new(
        Api::<Lease>::namespaced(client.clone(), &cli.lease_namespace),
        &cli.lease_name,
        &cli.identity,
        LeaseTimings::default(),
    );
    let mut terminate = signal(SignalKind::terminate()).context("handling SIGTERM")?;
    // A standby stops at once too (a rollout, a drained node): it has written nothing.
    tokio::select! {
        _ = elector.acquire() => {}
        _ = terminate.recv() => return Ok(()),
        _ = tokio::signal::ctrl_c() => return Ok(()),
    }
    let writer = ApiWriter::new(&client, tokio::runtime::Handle::current());
    // SIGTERM (a rollout, a drained node) ends the changes; `follow` returns once the
    // translation thread has made its last write.
    let changes = run::changes(&client).take_until(async move {
        tokio::select! {
            _ = terminate.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        info!("stopping");
    });
    let done = tokio::select! {
        // Exiting stops every write; the Deployment restarts this replica as a candidate.
        lost = elector.hold() => return Err(lost),
        done = run::follow(translator, changes, move |w| writer.write(w)) => done,
    };
    // Nothing is written any more: the other replica may take over at once.
    if let Err(e) = elector.release().await {
        warn!("releasing the lease failed (the other replica takes over when it expires): {e}");
    }
    done.map(drop)
}
