//! Committed test keys (RSA key generation is slow in debug builds).

use rsa::RsaPrivateKey;

use crate::server::PeerKey;

/// A host key for the server side of a pair (`tls/testdata/key-a.pem`).
pub const SERVER_KEY_PEM: &str = include_str!("../tls/testdata/key-a.pem");
/// A host key for the client side of a pair (`tls/testdata/key-b.pem`).
pub const CLIENT_KEY_PEM: &str = include_str!("../tls/testdata/key-b.pem");
/// A public key made by cf-key 3.21 (`keys/testdata/cfkey.pub`).
pub const PEER_PUB_PEM: &str = include_str!("../keys/testdata/cfkey.pub");

/// [`SERVER_KEY_PEM`], parsed.
pub fn server_key() -> RsaPrivateKey {
    crate::keys::parse_private_pem(SERVER_KEY_PEM.as_bytes()).expect("committed test key parses")
}

/// [`CLIENT_KEY_PEM`], parsed.
pub fn client_key() -> RsaPrivateKey {
    crate::keys::parse_private_pem(CLIENT_KEY_PEM.as_bytes()).expect("committed test key parses")
}

/// [`PEER_PUB_PEM`] as the TLS layer hands it to a session.
pub fn peer_key() -> PeerKey {
    let k =
        crate::keys::parse_public_pem(PEER_PUB_PEM.as_bytes()).expect("committed test key parses");
    PeerKey::new(k)
}
