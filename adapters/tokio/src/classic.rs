//! The classic (protocol v1) connection path. Until it is implemented the
//! server refuses classic peers as 3.21 does without `allowlegacyconnects`.

use std::sync::Arc;

use rcf_core::server::Level;
use tokio::net::TcpStream;

use crate::Shared;

/// Serve a peer whose first bytes were a `CAUTH` transaction.
pub(crate) async fn handle_classic(_stream: TcpStream, ip: String, shared: Arc<Shared>) {
    shared.logger.log(Level::Info, Some(&ip), "Connection is not using latest protocol, denying");
}
