//! `oxsdn-kube`: keeps oxsdn's cluster store equal to the Kubernetes API. Run as a
//! Deployment (deploy/kube.yaml); leader-elected, so any number of replicas is safe.

use anyhow::Context;
use clap::Parser;
use k8s_openapi::api::coordination::v1::Lease;
use kube::{Api, Client};
use oxsdn_controller::{
    store::{self, StoreOptions},
    Cluster,
};
use oxsdn_kube::{
    lease::{LeaderElector, LeaseTimings, LEASE_NAME},
    openshift::NetNamespace,
    run,
    translate::Translator,
};

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
    elector.acquire().await;
    tokio::select! {
        // Exiting stops every write; the Deployment restarts this replica as a candidate.
        lost = elector.hold() => Err(lost),
        done = {
            let api = Api::<NetNamespace>::all(client.clone());
            let runtime = tokio::runtime::Handle::current();
            let write = move |w| run::write_netnamespace(&api, &runtime, w);
            run::follow(translator, run::changes(&client), write)
        } => done.map(drop),
    }
}
