//! The rcf-core classic client (`ClassicClient`) driven over a blocking
//! socket, for the tests that talk the classic protocol to a real server.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use rcf_core::classic::{ClassicClient, ClassicClientError, ClientConfig, ClientEvent};
use rcf_core::reply::StatReply;

/// /dev/urandom through the RNG traits the core machines take.
pub struct OsRng;
impl rcf_core::classic::RngCore for OsRng {
    fn next_u32(&mut self) -> u32 {
        let mut b = [0; 4];
        self.fill_bytes(&mut b);
        u32::from_le_bytes(b)
    }
    fn next_u64(&mut self) -> u64 {
        let mut b = [0; 8];
        self.fill_bytes(&mut b);
        u64::from_le_bytes(b)
    }
    fn fill_bytes(&mut self, dest: &mut [u8]) {
        std::fs::File::open("/dev/urandom")
            .and_then(|mut f| f.read_exact(dest))
            .expect("/dev/urandom");
    }
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rsa::rand_core::Error> {
        self.fill_bytes(dest);
        Ok(())
    }
}
impl rcf_core::classic::CryptoRng for OsRng {}

/// A blocking driver for the sans-I/O client.
pub struct Driver {
    pub sock: TcpStream,
    pub client: ClassicClient,
    pub start: Instant,
}

impl Driver {
    /// Connects to 127.0.0.1:`port` and authenticates; the first event.
    pub fn connect(
        port: u16,
        cfg: ClientConfig,
    ) -> Result<(Driver, ClientEvent), ClassicClientError> {
        Driver::over(TcpStream::connect(("127.0.0.1", port)).unwrap(), cfg)
    }

    /// Authenticates over a connected socket (any source, any family).
    pub fn over(
        sock: TcpStream,
        cfg: ClientConfig,
    ) -> Result<(Driver, ClientEvent), ClassicClientError> {
        sock.set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        let start = Instant::now();
        let client = ClassicClient::new(cfg, clock(start), &mut OsRng)?;
        let mut d = Driver {
            sock,
            client,
            start,
        };
        let mut ev = d.until_event()?;
        assert_eq!(ev.len(), 1, "{ev:?}");
        Ok((d, ev.remove(0)))
    }

    /// Pump until at least one event arrives and the client is idle again;
    /// the client's failure (its `Failed` event) is the `Err`.
    pub fn until_event(&mut self) -> Result<Vec<ClientEvent>, ClassicClientError> {
        let mut events = vec![];
        let mut buf = vec![0u8; 16384];
        loop {
            if let Some(i) = events
                .iter()
                .position(|e| matches!(e, ClientEvent::Failed(_)))
            {
                let ClientEvent::Failed(e) = events.remove(i) else {
                    unreachable!("matched Failed above")
                };
                return Err(e);
            }
            while let Some(b) = self.client.poll_transmit() {
                // A server that hangs up mid-exchange: read what it said first.
                if self.sock.write_all(&b).is_err() {
                    break;
                }
            }
            while let Some(e) = self.client.poll_event() {
                events.push(e);
            }
            let finished = events.iter().any(|e| !matches!(e, ClientEvent::Data(_)));
            if finished && (self.client.is_idle() || self.client.is_desynchronised()) {
                return Ok(events);
            }
            let n = self.sock.read(&mut buf).unwrap_or(0);
            let now = clock(self.start);
            if n == 0 {
                self.client.handle_eof(now);
                events.extend(std::iter::from_fn(|| self.client.poll_event()));
                if let Some(ClientEvent::Failed(e)) = events.last() {
                    return Err(e.clone());
                }
                return Ok(events);
            }
            self.client.handle_input(now, &buf[..n], &mut OsRng);
        }
    }

    pub fn stat(&mut self, path: &str, enc: bool) -> Result<StatReply, String> {
        let now = clock(self.start);
        self.client.stat(now, path.as_bytes(), enc).unwrap();
        match self.until_event().unwrap().remove(0) {
            ClientEvent::Stat(s) => Ok(s),
            other => Err(format!("{other:?}")),
        }
    }

    pub fn get(&mut self, path: &str, size: u64, enc: bool) -> Vec<u8> {
        let now = clock(self.start);
        self.client.get(now, path.as_bytes(), size, enc).unwrap();
        let ev = self.until_event().unwrap();
        assert_eq!(ev.last(), Some(&ClientEvent::FileDone), "{ev:?}");
        ev.into_iter()
            .filter_map(|e| {
                if let ClientEvent::Data(d) = e {
                    Some(d)
                } else {
                    None
                }
            })
            .flatten()
            .collect()
    }
}

/// The client machine's clock: ms since `start`, and the wall clock.
pub fn clock(start: Instant) -> rcf_core::server::Now {
    rcf_core::server::Now {
        mono_ms: start.elapsed().as_millis() as u64,
        unix_s: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64,
    }
}
