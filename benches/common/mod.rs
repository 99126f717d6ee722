//! What the in-process benches share: waiting for the server and stopping it.

#![allow(dead_code, reason = "each bench uses its own part")]
#![expect(clippy::print_stdout, reason = "a benchmark reports on stdout")]

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use anyhow::ensure;
use reqwest::{Client, StatusCode};
use tokio::task::JoinHandle;

const READY_POLL: Duration = Duration::from_millis(10);
const SERVER_STOP_DEADLINE: Duration = Duration::from_secs(15);

/// The server running in this process (`millwright::run`).
pub type ServerTask = JoinHandle<anyhow::Result<()>>;

/// Polls `/readyz` until it answers 200, for at most `deadline`.
pub async fn wait_ready(
    client: &Client,
    addr: SocketAddr,
    deadline: Duration,
) -> anyhow::Result<()> {
    let started = Instant::now();
    loop {
        let response = client.get(format!("http://{addr}/readyz")).send().await;
        if response.is_ok_and(|r| r.status() == StatusCode::OK) {
            return Ok(());
        }
        ensure!(
            started.elapsed() < deadline,
            "server not ready within {} s",
            deadline.as_secs()
        );
        tokio::time::sleep(READY_POLL).await;
    }
}

/// Waits for a shut-down server to finish, and says how it ended if not cleanly.
pub async fn stop_server(name: &str, server: ServerTask) {
    match tokio::time::timeout(SERVER_STOP_DEADLINE, server).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(err))) => println!("{name}: server stopped with error: {err:#}"),
        Ok(Err(err)) => println!("{name}: server task failed: {err}"),
        Err(_) => println!(
            "{name}: server did not stop within {} s",
            SERVER_STOP_DEADLINE.as_secs()
        ),
    }
}
