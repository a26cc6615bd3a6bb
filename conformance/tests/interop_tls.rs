//! TLS interop with the real CFEngine 3.21 binaries (Debian's, in /usr/bin).
//!
//! * our client (`rcf_core::tls` over `std::net::TcpStream`) against a real,
//!   sandboxed `cf-serverd`: handshake, banner, identification, `VERSION`;
//! * the real `cf-net` against a tiny in-test server built from our server
//!   configuration: handshake, banner, the client's lines, and the RSA key
//!   our verifier pulled out of cf-net's X.509 v1 certificate.
//!
//! These tests FAIL (they do not skip) when the binaries are missing.
//! Everything runs on 127.0.0.1 in temporary directories; every process we
//! start is killed by PID from a Drop guard, also when a test fails.

use std::fs;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use md5::{Digest, Md5};
use rcf_core::tls::{
    client_config, EofKind, PeerError, ReadStatus, Role, ServerTls, TlsClock, TlsError, TlsLayer,
    TlsSettings,
};
use rsa::pkcs1::{DecodeRsaPrivateKey, DecodeRsaPublicKey};
use rsa::traits::PublicKeyParts;
use rsa::{RsaPrivateKey, RsaPublicKey};

const BIN: &str = "/usr/bin";
const IO_TIMEOUT: Duration = Duration::from_secs(20);

fn require_binaries() {
    for b in ["cf-serverd", "cf-key", "cf-promises", "cf-net"] {
        let p = Path::new(BIN).join(b);
        assert!(
            p.exists(),
            "{} is missing: these interop tests need Debian's cfengine3 3.21 (apt-get install cfengine3)",
            p.display()
        );
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A child process killed (by its PID) and reaped when dropped.
struct Guard {
    child: Child,
    what: &'static str,
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
        eprintln!("stopped {} (pid {})", self.what, self.child.id());
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A CFEngine work dir as cfe-lab.sh makes it: sub dirs, `bin` -> /usr/bin
/// (else the daemons fall back to failsafe.cf on *:5308), keys by cf-key.
fn make_workdir(dir: &Path) {
    for d in ["inputs", "ppkeys", "state", "outputs", "modules"] {
        fs::create_dir_all(dir.join(d)).unwrap();
    }
    use std::os::unix::fs::PermissionsExt;
    for d in ["ppkeys", "inputs"] {
        fs::set_permissions(dir.join(d), fs::Permissions::from_mode(0o700)).unwrap();
    }
    let fix_bin = || {
        let bin = dir.join("bin");
        if fs::symlink_metadata(&bin)
            .map(|m| !m.file_type().is_symlink())
            .unwrap_or(true)
        {
            let _ = fs::remove_dir(&bin);
            std::os::unix::fs::symlink(BIN, &bin).unwrap();
        }
    };
    fix_bin();
    let out = Command::new(Path::new(BIN).join("cf-key"))
        .env("CFENGINE_TEST_OVERRIDE_WORKDIR", dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "cf-key failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    fix_bin();
    assert!(dir.join("ppkeys/localhost.priv").exists());
}

fn load_priv(dir: &Path) -> RsaPrivateKey {
    RsaPrivateKey::from_pkcs1_pem(&fs::read_to_string(dir.join("ppkeys/localhost.priv")).unwrap())
        .unwrap()
}

fn load_pub(path: &Path) -> RsaPublicKey {
    RsaPublicKey::from_pkcs1_pem(&fs::read_to_string(path).unwrap()).unwrap()
}

/// CFEngine's key id: MD5 over the minimal big-endian bytes of n then e.
fn md5_id(k: &RsaPublicKey) -> String {
    let mut h = Md5::new();
    h.update(k.n().to_bytes_be());
    h.update(k.e().to_bytes_be());
    let d = h.finalize();
    format!(
        "MD5={}",
        d.iter().map(|b| format!("{b:02x}")).collect::<String>()
    )
}

fn cf_key_p(pubfile: &Path) -> String {
    let out = Command::new(Path::new(BIN).join("cf-key"))
        .arg("-p")
        .arg(pubfile)
        .output()
        .unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// Starts a sandboxed cf-serverd on 127.0.0.1:`port` and waits until it
/// listens. `extra_control` goes into `body server control`.
fn start_cf_serverd(dir: &Path, port: u16, extra_control: &str) -> Guard {
    let policy = dir.join("inputs/promises.cf");
    let share = dir.join("share");
    fs::create_dir_all(&share).unwrap();
    fs::write(
        &policy,
        format!(
            r#"body common control
{{
  bundlesequence => {{ "rcf_noop" }};
}}
bundle agent rcf_noop
{{
  vars:
    "noop" string => "noop";
}}
body server control
{{
  port => "{port}";
  bindtointerface => "127.0.0.1";
  allowconnects => {{ "127.0.0.1", "::1" }};
  allowallconnects => {{ "127.0.0.1", "::1" }};
  trustkeysfrom => {{ "127.0.0.1" }};
  allowusers => {{ "root" }};
{extra_control}
}}
bundle server rcf_access
{{
  access:
    "{share}"
      admit => {{ "127.0.0.1", "::1" }};
}}
"#,
            share = share.display()
        ),
    )
    .unwrap();
    let check = Command::new(Path::new(BIN).join("cf-promises"))
        .env("CFENGINE_TEST_OVERRIDE_WORKDIR", dir)
        .arg("-c")
        .arg("-f")
        .arg(&policy)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "server policy invalid: {}",
        String::from_utf8_lossy(&check.stdout)
    );
    let log = dir.join("cf-serverd.log");
    let logf = fs::File::create(&log).unwrap();
    let child = Command::new(Path::new(BIN).join("cf-serverd"))
        .env("CFENGINE_TEST_OVERRIDE_WORKDIR", dir)
        .args(["-F", "-v", "-l", "-f"])
        .arg(&policy)
        .stdin(Stdio::null())
        .stdout(logf.try_clone().unwrap())
        .stderr(logf)
        .spawn()
        .unwrap();
    let mut guard = Guard {
        child,
        what: "cf-serverd",
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = fs::read_to_string(&log).unwrap_or_default();
        assert!(
            !text.contains("going to failsafe"),
            "cf-serverd went to failsafe:\n{text}"
        );
        if let Ok(Some(st)) = guard.child.try_wait() {
            panic!("cf-serverd exited at start ({st}):\n{text}");
        }
        if text.contains("Server is starting") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "cf-serverd did not start within 30 s:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    guard
}

/// Moves bytes between a socket and a layer until `done` holds. Returns the
/// first layer error (after flushing whatever the layer queued, e.g. an alert).
fn drive(
    sock: &mut TcpStream,
    tls: &mut TlsLayer,
    plain: &mut Vec<u8>,
    mut done: impl FnMut(&TlsLayer, &[u8], Option<EofKind>) -> bool,
) -> Result<Option<EofKind>, TlsError> {
    let deadline = Instant::now() + IO_TIMEOUT;
    let mut eof = None;
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        while let Some(out) = tls.poll_transmit() {
            sock.write_all(&out).unwrap();
        }
        loop {
            match tls.read_plaintext(plain)? {
                ReadStatus::Data(_) => continue,
                ReadStatus::NoData => break,
                ReadStatus::Eof(k) => {
                    eof = Some(k);
                    break;
                }
            }
        }
        if done(tls, plain, eof) {
            return Ok(eof);
        }
        if eof.is_some() {
            return Ok(eof);
        }
        assert!(
            Instant::now() < deadline,
            "timed out; plaintext so far: {:?}",
            String::from_utf8_lossy(plain)
        );
        if !tls.wants_input() {
            continue;
        }
        let n = sock.read(&mut buf).expect("socket read (timeout?)");
        let r = if n == 0 {
            tls.handle_eof()
        } else {
            tls.handle_input(&buf[..n])
        };
        if let Err(e) = r {
            while let Some(out) = tls.poll_transmit() {
                let _ = sock.write_all(&out);
            }
            return Err(e);
        }
    }
}

fn connect(port: u16) -> TcpStream {
    let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    s.set_nodelay(true).unwrap();
    s
}

/// A real cf-serverd in a fresh sandbox, plus a fresh client key made by
/// the real cf-key.
struct RealServer {
    _tmp: tempfile::TempDir,
    srv: PathBuf,
    port: u16,
    client_key: RsaPrivateKey,
    _server: Guard,
}

impl RealServer {
    fn start(extra_control: &str) -> RealServer {
        require_binaries();
        let tmp = tempfile::tempdir().unwrap();
        let srv = tmp.path().join("server");
        let cli = tmp.path().join("client");
        make_workdir(&srv);
        make_workdir(&cli);
        let port = free_port();
        let server = start_cf_serverd(&srv, port, extra_control);
        let client_key = load_priv(&cli);
        RealServer {
            _tmp: tmp,
            srv,
            port,
            client_key,
            _server: server,
        }
    }

    /// Connects with `settings`, completes the handshake, checks the
    /// negotiated parameters, the server's key and v1 certificate and the
    /// banner, then identifies as root (two records) and expects the welcome.
    fn identify(
        &self,
        settings: &TlsSettings,
        version: &str,
        cipher: &str,
    ) -> (TcpStream, TlsLayer) {
        let clock = TlsClock::new(now());
        let cfg = client_config(&self.client_key, settings, &clock).unwrap();
        let mut sock = connect(self.port);
        let mut tls = TlsLayer::client(cfg).unwrap();
        let mut plain = Vec::new();
        // handshake, then the banner (read after the handshake, like cf-agent)
        drive(&mut sock, &mut tls, &mut plain, |t, p, _| {
            !t.is_handshaking() && p.ends_with(b"\n")
        })
        .unwrap();
        let neg = tls.negotiated().unwrap();
        assert_eq!((neg.version, neg.cipher), (version, cipher));
        let server_pub = self.srv.join("ppkeys/localhost.pub");
        assert_eq!(
            tls.peer_public_key(),
            Some(&load_pub(&server_pub)),
            "server key from its certificate"
        );
        assert_eq!(
            md5_id(tls.peer_public_key().unwrap()),
            cf_key_p(&server_pub)
        );
        assert_cfengine_v1_cert(tls.peer_certificate().unwrap());
        assert_eq!(plain, b"CFE_v3 cf-serverd 3.21.0\n");

        // identification: two separate records
        plain.clear();
        tls.send_plaintext(b"CFE_v3 cf-agent 3.21.0\n").unwrap();
        tls.send_plaintext(b"IDENTITY USERNAME=root\n").unwrap();
        drive(&mut sock, &mut tls, &mut plain, |_, p, _| {
            p.ends_with(b"\n")
        })
        .unwrap();
        assert_eq!(plain, b"OK WELCOME USERNAME=root\n");
        // the server trusted and stored our key under the CFEngine digest we compute
        let our_id = md5_id(&self.client_key.to_public_key());
        assert!(
            self.srv.join(format!("ppkeys/root-{our_id}.pub")).exists(),
            "ppkeys/root-{our_id}.pub missing"
        );
        (sock, tls)
    }
}

#[test]
fn our_client_against_real_cf_serverd() {
    let server = RealServer::start("");
    let (mut sock, mut tls) = server.identify(
        &TlsSettings::client_default(),
        "TLSv1.3",
        "TLS_AES_256_GCM_SHA384",
    );
    let mut plain = Vec::new();

    // one transaction, one record
    plain.clear();
    tls.send_plaintext(b"t 7\0\0\0\0\0VERSION").unwrap();
    drive(&mut sock, &mut tls, &mut plain, |_, p, _| p.len() >= 18).unwrap();
    assert_eq!(plain, b"t 10\0\0\0\0OK: 3.21.0");

    // We say goodbye with close_notify (as cf-agent does); cf-serverd hangs
    // up without one: an ordinary EOF for us, not an error.
    plain.clear();
    tls.send_close_notify();
    let eof = drive(&mut sock, &mut tls, &mut plain, |_, _, e| e.is_some()).unwrap();
    assert_eq!(eof, Some(EofKind::WithoutCloseNotify));
    assert!(plain.is_empty());

    // A TLS 1.2-only ECDHE client is refused by a default cf-serverd
    // (its TLS 1.2 suites are static RSA): handshake_failure, as documented.
    let (only12, _) =
        TlsSettings::from_cfengine(Role::Client, Some("ECDHE-RSA-AES256-GCM-SHA384"), None);
    let cfg12 = client_config(&server.client_key, &only12, &TlsClock::new(now())).unwrap();
    let mut sock = connect(server.port);
    let mut tls = TlsLayer::client(cfg12).unwrap();
    let err = drive(&mut sock, &mut tls, &mut Vec::new(), |t, _, _| {
        !t.is_handshaking()
    })
    .unwrap_err();
    assert!(
        matches!(err, TlsError::Peer(PeerError::AlertReceived(ref a)) if a == "handshake_failure"),
        "{err:?}"
    );
}

/// cf-serverd and cf-net present in-memory X.509 v1 certificates with
/// serial 0 (PROTOCOL.md §6.2); check the DER shape by hand.
fn assert_cfengine_v1_cert(der: &[u8]) {
    // Certificate ::= SEQUENCE { tbsCertificate SEQUENCE { [0] version? , serial INTEGER, ...
    // (tag, header length) of a DER element
    fn header(b: &[u8]) -> (u8, usize) {
        let long_len_bytes = if b[1] & 0x80 == 0 {
            0
        } else {
            (b[1] & 0x7f) as usize
        };
        (b[0], 2 + long_len_bytes)
    }
    let (t, h) = header(der);
    assert_eq!(t, 0x30);
    let tbs = &der[h..];
    let (t, h) = header(tbs);
    assert_eq!(t, 0x30);
    let first = &tbs[h..];
    assert_eq!(first[0], 0x02, "no [0] version field: X.509 v1");
    assert_eq!(&first[..3], &[0x02, 0x01, 0x00], "serial 0");
}

/// A real cf-net run against one connection of an in-test server.
struct CfNetRun {
    _tmp: tempfile::TempDir,
    cli: PathBuf,
    srv: PathBuf,
    out_path: PathBuf,
    cfnet: Guard,
    sock: TcpStream,
    tls: TlsLayer,
}

impl CfNetRun {
    /// Starts cf-net (`extra` options before `connect`) against a listener
    /// serving `settings`, accepts its connection and returns before the
    /// handshake.
    fn start(settings: &TlsSettings, extra: &[&str]) -> CfNetRun {
        require_binaries();
        let tmp = tempfile::tempdir().unwrap();
        let cli = tmp.path().join("client");
        let srv = tmp.path().join("server");
        make_workdir(&cli);
        make_workdir(&srv);
        let clock = TlsClock::new(now());
        let server = ServerTls::new(&load_priv(&srv), settings, &clock).unwrap();

        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let out_path = tmp.path().join("cf-net.out");
        let out = fs::File::create(&out_path).unwrap();
        let hostport = format!("127.0.0.1:{port}");
        let mut args = vec!["-v", "-H", hostport.as_str()];
        args.extend_from_slice(extra);
        args.push("connect");
        let child = Command::new(Path::new(BIN).join("cf-net"))
            .env("CFENGINE_TEST_OVERRIDE_WORKDIR", &cli)
            .args(&args)
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap();
        let cfnet = Guard {
            child,
            what: "cf-net",
        };

        listener.set_nonblocking(true).unwrap();
        let deadline = Instant::now() + IO_TIMEOUT;
        let sock = loop {
            match listener.accept() {
                Ok((s, _)) => break s,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    assert!(
                        Instant::now() < deadline,
                        "cf-net never connected: {}",
                        read_lossy(&out_path)
                    );
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(e) => panic!("accept: {e}"),
            }
        };
        sock.set_nonblocking(false).unwrap();
        sock.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        let tls = server.accept().unwrap();
        CfNetRun {
            _tmp: tmp,
            cli,
            srv,
            out_path,
            cfnet,
            sock,
            tls,
        }
    }

    fn log(&self) -> String {
        read_lossy(&self.out_path)
    }

    /// Waits for cf-net to exit; returns its status and output.
    fn finish(&mut self) -> (std::process::ExitStatus, String) {
        let _ = self.sock.shutdown(std::net::Shutdown::Both);
        let deadline = Instant::now() + IO_TIMEOUT;
        let status = loop {
            if let Some(st) = self.cfnet.child.try_wait().unwrap() {
                break st;
            }
            assert!(Instant::now() < deadline, "cf-net did not exit");
            std::thread::sleep(Duration::from_millis(50));
        };
        let log = read_lossy(&self.out_path);
        eprintln!("cf-net output:\n{log}");
        (status, log)
    }

    /// Handshake, key checks, banner and identification with a real cf-net.
    fn full_dialog(mut self, version: &str, cipher: &str) {
        let mut plain = Vec::new();
        drive(&mut self.sock, &mut self.tls, &mut plain, |t, _, _| {
            !t.is_handshaking()
        })
        .unwrap_or_else(|e| panic!("handshake with cf-net failed: {e}\n{}", self.log()));
        let neg = self.tls.negotiated().unwrap();
        assert_eq!((neg.version, neg.cipher), (version, cipher));

        // our verifier accepted cf-net's X.509 v1 certificate and extracted its key
        assert_cfengine_v1_cert(self.tls.peer_certificate().unwrap());
        let key = self.tls.peer_public_key().expect("peer key").clone();
        assert_eq!(key, load_pub(&self.cli.join("ppkeys/localhost.pub")));
        assert_eq!(
            md5_id(&key),
            cf_key_p(&self.cli.join("ppkeys/localhost.pub"))
        );

        // banner exchange (the real session machine comes later)
        self.tls
            .send_plaintext(b"CFE_v3 cf-serverd 3.21.0\n")
            .unwrap();
        drive(&mut self.sock, &mut self.tls, &mut plain, |_, p, _| {
            p.windows(9).any(|w| w == b"IDENTITY ") && p.ends_with(b"\n")
        })
        .unwrap();
        let text = String::from_utf8(plain.clone()).unwrap();
        let mut lines = text.lines();
        let version_line = lines.next().unwrap();
        assert!(
            version_line.starts_with("CFE_v3 "),
            "version line {version_line:?}"
        );
        let identity = lines.next().unwrap();
        assert!(
            identity.starts_with("IDENTITY USERNAME="),
            "identity line {identity:?}"
        );
        plain.clear();
        let user = identity.trim_start_matches("IDENTITY USERNAME=");
        self.tls
            .send_plaintext(format!("OK WELCOME USERNAME={user}\n").as_bytes())
            .unwrap();
        let eof = drive(&mut self.sock, &mut self.tls, &mut plain, |_, _, e| {
            e.is_some()
        })
        .unwrap();
        // cf-net (like cf-agent) ends with close_notify
        assert_eq!(
            eof,
            Some(EofKind::CloseNotify),
            "cf-net output:\n{}",
            self.log()
        );

        let our_id = md5_id(&load_priv(&self.srv).to_public_key());
        let cli = self.cli.clone();
        let (status, log) = self.finish();
        assert!(status.success(), "cf-net failed ({status}):\n{log}");
        // our log line (Negotiated's Display) is cf-net's, byte for byte
        let line = neg.to_string();
        assert!(log.contains(&line), "missing {line:?} in:\n{log}");
        assert!(
            log.contains("Connected & authenticated successfully"),
            "{log}"
        );
        // cf-net trusted our (rcgen, X.509 v3) certificate's key on first use
        let trusted: Vec<PathBuf> = fs::read_dir(cli.join("ppkeys"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.to_string_lossy().contains(&our_id))
            .collect();
        assert_eq!(
            trusted.len(),
            1,
            "cf-net did not store our key {our_id}:\n{log}"
        );
    }
}

#[test]
fn real_cf_net_against_our_server() {
    let (settings, _warnings) = TlsSettings::server_default();
    CfNetRun::start(&settings, &[]).full_dialog("TLSv1.3", "TLS_AES_256_GCM_SHA384");
}

#[test]
fn real_cf_net_against_our_server_tls12_ecdhe() {
    // allowciphers without TLS_ names: TLS 1.3 off, as cf-serverd does
    let (settings, _) =
        TlsSettings::from_cfengine(Role::Server, Some("ECDHE-RSA-AES256-GCM-SHA384"), None);
    assert!(settings.tls13_suites().is_empty());
    CfNetRun::start(&settings, &[]).full_dialog("TLSv1.2", "ECDHE-RSA-AES256-GCM-SHA384");
}

#[test]
fn real_cf_net_is_refused_when_our_settings_are_unusable() {
    // cf-serverd's own TLS 1.2 suites, without TLS 1.3: nothing rustls can do.
    let (settings, warnings) =
        TlsSettings::from_cfengine(Role::Server, Some("AES256-GCM-SHA384:AES256-SHA"), None);
    assert!(settings.is_unusable());
    assert_eq!(
        warnings
            .iter()
            .filter(|w| matches!(w.kind, rcf_core::tls::TlsWarningKind::Unusable(_)))
            .count(),
        1
    );
    let mut run = CfNetRun::start(&settings, &[]);
    let err = drive(&mut run.sock, &mut run.tls, &mut Vec::new(), |t, _, _| {
        !t.is_handshaking()
    })
    .unwrap_err();
    match err {
        TlsError::Unusable(why) => assert!(why.contains("allowciphers"), "{why}"),
        other => panic!("expected Unusable, got {other:?}"),
    }
    let (status, log) = run.finish();
    // the client got a TLS refusal (an alert), not a dead port
    assert!(!log.contains("Connected & authenticated"), "{log}");
    assert!(log.contains("Failed to connect"), "{status}: {log}");
    assert!(
        log.contains("handshake failure"),
        "cf-net should report the handshake_failure alert:\n{log}"
    );
}

#[test]
fn our_tls12_client_against_real_cf_serverd() {
    let server = RealServer::start(r#"  allowciphers => "ECDHE-RSA-AES256-GCM-SHA384";"#);
    let (only12, _) =
        TlsSettings::from_cfengine(Role::Client, Some("ECDHE-RSA-AES256-GCM-SHA384"), None);
    server.identify(&only12, "TLSv1.2", "ECDHE-RSA-AES256-GCM-SHA384");
}

fn read_lossy(p: &Path) -> String {
    String::from_utf8_lossy(&fs::read(p).unwrap_or_default()).into_owned()
}
