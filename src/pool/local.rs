//! Workers in this very process (`taogate dev`, or any deployment that runs a worker beside its
//! gateway): the pool calls them directly instead of over loopback HTTP — same routing, failover,
//! pricing and metering, one hop fewer (a profile of the metered path spent most of its time in
//! the syscalls and thread wake-ups of its hops). Other gateway replicas still reach the same
//! worker over HTTP at its URL.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use crate::hop::{Attempt, RouteInfo};
use crate::openai::ChatRequest;
use crate::worker::Worker;

#[derive(Default)]
pub struct Colocated(RwLock<HashMap<String, Arc<Worker>>>);

impl Colocated {
    pub fn attach(&self, url: &str, worker: Arc<Worker>) {
        let url = url.trim_end_matches('/').to_owned();
        self.0
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(url, worker);
    }

    pub fn get(&self, url: &str) -> Option<Arc<Worker>> {
        self.0
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(url)
            .cloned()
    }
}

/// Asks an in-process worker, as its HTTP handler would.
pub async fn ask(worker: &Worker, req: &ChatRequest) -> Attempt {
    match worker.open(req).await {
        Ok((opened, terms)) => Attempt::Answered(
            opened.events,
            RouteInfo {
                upstream: Some(opened.upstream),
                miner_uid: opened.miner_uid.map(|uid| uid.to_string()),
                cost: terms.cost(),
            },
        ),
        Err(e) => {
            let reason = e.to_string();
            match e.refusal() {
                Some(refusal) => Attempt::Refused(refusal),
                None => Attempt::WorkerFailed(reason),
            }
        }
    }
}
