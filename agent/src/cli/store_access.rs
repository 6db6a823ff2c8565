//! Opening the datastore, with the failure message each family of commands prints.

use std::sync::Arc;

use crate::store::{self, Datastore};

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
