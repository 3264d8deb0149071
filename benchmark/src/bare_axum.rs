//! The HTTP limit of `POST /offer`: a bare axum server, in a process of its
//! own, that parses the same JSON body into the same
//! [`CreateOffer`](marketplace::commands::CreateOffer) and answers `200`
//! with nothing else (no edge layers, no validation, no envelope, no
//! publish). What the API's process spends per accepted offer above this
//! is the cost of everything it does besides HTTP and JSON.

use std::net::SocketAddr;
use std::process::Stdio;

use anyhow::{bail, Context, Result};
use axum::{routing::post, Json, Router};
use marketplace::commands::CreateOffer;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// The command-line flag that turns the benchmark binary into the bare
/// server.
pub(crate) const FLAG: &str = "--serve-bare-axum";

/// Serves the bare route on an ephemeral port of 127.0.0.1 and prints the
/// bound address on the first line of stdout; runs until killed.
pub(crate) async fn serve() -> Result<()> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .context("binding the bare axum server")?;
    println!("{}", listener.local_addr()?);
    let router = Router::new().route("/offer", post(|Json(_offer): Json<CreateOffer>| async {}));
    axum::serve(listener, router)
        .await
        .context("serving the bare axum route")
}

/// The bare server, running as a child process of the benchmark.
pub(crate) struct BareAxum {
    child: Child,
    /// `http://127.0.0.1:<port>`.
    pub(crate) url: String,
}

impl BareAxum {
    /// Starts this binary with [`FLAG`] and waits for its address.
    pub(crate) async fn start() -> Result<Self> {
        let mut child = Command::new(std::env::current_exe()?)
            .arg(FLAG)
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .context("starting the bare axum server")?;
        let stdout = child.stdout.take().context("bare axum server's stdout")?;
        let Some(line) = BufReader::new(stdout).lines().next_line().await? else {
            bail!("the bare axum server exited before it listened");
        };
        let address: SocketAddr = line.trim().parse().context("bare axum server's address")?;
        Ok(Self {
            child,
            url: format!("http://{address}"),
        })
    }

    /// The server's process id, to count its CPU.
    pub(crate) fn pid(&self) -> Option<u32> {
        self.child.id()
    }
}
