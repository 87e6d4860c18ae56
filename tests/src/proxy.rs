//! A TCP proxy the test controls, to cut one process off from a server
//! (PostgreSQL) while the others keep reaching it. Loopback only.

use std::{net::SocketAddr, sync::Arc};

use tokio::{
    net::{TcpListener, TcpStream},
    sync::watch,
};

/// Forwards 127.0.0.1:<port> to `target` until cut.
#[derive(Debug)]
pub struct CutProxy {
    pub addr: SocketAddr,
    open: Arc<watch::Sender<bool>>,
}

impl CutProxy {
    pub async fn start(target: SocketAddr) -> Self {
        assert!(target.ip().is_loopback(), "the proxy only forwards to loopback");
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (open, _) = watch::channel(true);
        let open = Arc::new(open);
        let gate = open.clone();
        tokio::spawn(async move {
            loop {
                let Ok((mut client, _)) = listener.accept().await else { return };
                let mut state = gate.subscribe();
                if !*state.borrow() {
                    drop(client); // cut: refuse by closing at once
                    continue;
                }
                tokio::spawn(async move {
                    let Ok(mut server) = TcpStream::connect(target).await else { return };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = state.wait_for(|open| !*open) => {}
                    }
                });
            }
        });
        Self { addr, open }
    }

    /// Drops every connection and refuses new ones.
    pub fn cut(&self) {
        self.open.send_replace(false);
    }

    /// Forwards again.
    pub fn restore(&self) {
        self.open.send_replace(true);
    }
}
