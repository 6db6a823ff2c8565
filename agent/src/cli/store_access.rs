//! Opening the datastore, with the failure message each family of commands prints.

use std::sync::Arc;

use crate::store::{self, Datastore};

/// The datastore URL with the `--etcd-*` TLS files folded in, so that everything that
/// opens the store from the URL (commands, the agent) uses them; `None` after printing
/// why the flags do not fit the URL.
pub fn datastore_url(cli: &super::Cli) -> Option<String> {
    match store::etcd::with_tls_files(
        &cli.datastore,
        cli.etcd_ca.as_deref(),
        cli.etcd_cert.as_deref(),
        cli.etcd_key.as_deref(),
    ) {
        Ok(url) => Some(url),
        Err(err) => {
            eprintln!("palisade: {err}");
            None
        }
    }
}

/// For the calicoctl-compatible resource commands: calicoctl's message, on stdout.
pub async fn open_for_calicoctl(url: &str) -> Option<Arc<dyn Datastore>> {
    match store::open(url).await {
        Ok(store) => Some(store),
        Err(err) => {
            println!("Failed to create Calico API client: {err}");
            None
        }
    }
}

/// For palisade's own commands, which have no calicoctl text to follow.
pub async fn open_for_palisade(url: &str) -> Option<Arc<dyn Datastore>> {
    match store::open(url).await {
        Ok(store) => Some(store),
        Err(err) => {
            eprintln!("Failed to open the palisade datastore: {err}");
            None
        }
    }
}
