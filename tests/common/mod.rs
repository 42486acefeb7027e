//! Helpers shared by the integration tests: external reference tools and an in-process server.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Runs a command and fails the test with its output when it does not succeed.
pub fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| {
        panic!("cannot start {cmd:?}: {e} (is the reference tool installed? see .ci/run)")
    });
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn python() -> Command {
    Command::new(std::env::var("INFERD_PYTHON").unwrap_or_else(|_| "python3".into()))
}

pub fn bart(args: &[&str], dir: &Path) -> String {
    run(Command::new("bart").args(args).current_dir(dir))
}

/// A server on 127.0.0.1 with a free port, serving until dropped.
pub struct TestServer {
    pub url: String,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    handle: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl TestServer {
    pub async fn start(config: inferd::serve::ServeConfig) -> TestServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let handle = tokio::spawn(inferd::serve::serve(config, listener, async move {
            let _ = rx.await;
        }));
        // wait until the server answers health checks
        for _ in 0..200 {
            if let Ok(ch) = tonic::transport::Channel::from_shared(url.clone())
                .unwrap()
                .connect()
                .await
            {
                let mut c = tonic_health::pb::health_client::HealthClient::new(ch);
                if c.check(tonic_health::pb::HealthCheckRequest {
                    service: String::new(),
                })
                .await
                .is_ok()
                {
                    return TestServer {
                        url,
                        shutdown: Some(tx),
                        handle: Some(handle),
                    };
                }
            }
            if handle.is_finished() {
                panic!("server exited during start-up: {:?}", handle.await);
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        panic!("server did not become healthy");
    }

    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(h) = self.handle.take() {
            h.await.unwrap().unwrap();
        }
    }
}
