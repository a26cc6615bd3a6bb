//! GET stepping for the TLS client session: taking a file's bytes off the
//! stream while telling them from the refusals a 3.21 server can put there
//! (PROTOCOL.md §8.4). A child of [`super`] so it advances the same
//! [`Session`] state; kept apart because it is the one reply that is not
//! framed.

use super::*;

impl Session {
    /// Advance the GET at the front of the queue by what is buffered.
    pub(super) fn get_step(&mut self, decoder: &mut Decoder, now: Now) -> Step {
        let Some(Outstanding {
            id,
            progress:
                Progress::Get {
                    size,
                    got,
                    started,
                    ambiguous_since,
                },
        }) = self.outstanding.front_mut()
        else {
            return Step::Wait;
        };
        let id = *id;
        if !*started {
            if *size == 0 {
                // Nothing will come (an empty file); a refusal would show up
                // as the next reply, which then fails to parse.
                self.outstanding.pop_front();
                self.events.push_back(Event::Reply {
                    id,
                    reply: Reply::Get(Ok(())),
                });
                return Step::Continue;
            }
            let buf = decoder.peek_raw();
            match sniff(buf) {
                Sniff::Framed(total) => {
                    if buf.len() < total {
                        return Step::Wait;
                    }
                    let frame = decoder.take_raw(total);
                    let text = bad_text(&frame[frame::HEADER_LEN..]);
                    self.outstanding.pop_front();
                    self.events.push_back(Event::Reply {
                        id,
                        reply: Reply::Get(Err(GetFailure::Refused(text))),
                    });
                    return Step::Continue;
                }
                Sniff::RawRefusal => {
                    self.outstanding.pop_front();
                    self.events.push_back(Event::Reply {
                        id,
                        reply: Reply::Get(Err(GetFailure::Denied)),
                    });
                    self.log(
                        Level::Verbose,
                        "Server sent a raw refusal block; closing the connection".into(),
                    );
                    self.phase = Phase::Closed;
                    return Step::Wait;
                }
                Sniff::NeedMore => {
                    if (buf.len() as u64) < *size {
                        return Step::Wait;
                    }
                    match ambiguous_since {
                        None => {
                            *ambiguous_since = Some(now.mono_ms);
                            return Step::Wait;
                        }
                        Some(t) if now.mono_ms < *t + AMBIGUITY_WAIT_MS => return Step::Wait,
                        Some(_) => *started = true,
                    }
                }
                Sniff::Data => *started = true,
            }
        }
        loop {
            let remaining = *size - *got;
            if remaining == 0 {
                self.outstanding.pop_front();
                self.events.push_back(Event::Reply {
                    id,
                    reply: Reply::Get(Ok(())),
                });
                return Step::Continue;
            }
            let buf = decoder.peek_raw();
            if buf.is_empty() {
                return Step::Wait;
            }
            // At each server block boundary, check for the change marker.
            if *got % SERVER_BLOCK == 0 && *got > 0 {
                let need = (CHANGED_MARKER.len() as u64).min(remaining) as usize;
                let n = need.min(buf.len());
                if buf[..n] == CHANGED_MARKER[..n] {
                    if n < need {
                        return Step::Wait;
                    }
                    if need == CHANGED_MARKER.len() {
                        self.outstanding.pop_front();
                        self.events.push_back(Event::Reply {
                            id,
                            reply: Reply::Get(Err(GetFailure::Changed)),
                        });
                        self.log(
                            Level::Verbose,
                            "Source changed while copying; closing the connection".into(),
                        );
                        self.phase = Phase::Closed;
                        return Step::Wait;
                    }
                }
            }
            // Never cross the next block boundary in one piece, so the
            // marker check above sees every boundary.
            let to_boundary = SERVER_BLOCK - (*got % SERVER_BLOCK);
            let take = remaining.min(to_boundary).min(buf.len() as u64) as usize;
            let bytes = decoder.take_raw(take);
            *got += bytes.len() as u64;
            self.received += bytes.len() as u64;
            self.events.push_back(Event::Data { id, bytes });
        }
    }
}

pub(super) enum Step {
    Wait,
    Continue,
}

#[derive(Debug, PartialEq, Eq)]
pub(super) enum Sniff {
    /// A framed `BAD:` transaction of this many bytes (header included).
    Framed(usize),
    /// A raw block starting with the refusal text.
    RawRefusal,
    /// What arrived could still be either; wait for more.
    NeedMore,
    /// File data.
    Data,
}

/// Tell file data from the refusals a 3.21 server can put in a GET stream
/// (PROTOCOL.md §8.4): a framed `t <n>` transaction with `BAD: ` at offset
/// 8 ("cleartext access denied"), or a raw block starting with
/// `CF_FAILEDSTR`.
pub(super) fn sniff(buf: &[u8]) -> Sniff {
    let framed_prefix = could_be_framed(buf);
    if buf.len() >= FRAMED_SNIFF && framed_prefix {
        let mut h = [0u8; frame::HEADER_LEN];
        h.copy_from_slice(&buf[..frame::HEADER_LEN]);
        if let Ok((_, len)) = frame::parse_header(&h) {
            return Sniff::Framed(frame::HEADER_LEN + len);
        }
    }
    let failed_n = buf.len().min(reply::FAILED.len());
    let failed_prefix = buf[..failed_n] == reply::FAILED[..failed_n];
    if buf.len() >= reply::FAILED.len() && failed_prefix {
        return Sniff::RawRefusal;
    }
    if (framed_prefix && buf.len() < FRAMED_SNIFF)
        || (failed_prefix && buf.len() < reply::FAILED.len())
    {
        // Decisive bytes still missing. A file at least that long will bring
        // them; for a shorter one the caller waits a moment (or for EOF).
        return Sniff::NeedMore;
    }
    Sniff::Data
}

/// Whether `buf` is consistent with the start of `t <digits>\0…BAD: `, as
/// the C sender writes a header.
fn could_be_framed(buf: &[u8]) -> bool {
    for (i, &b) in buf.iter().take(FRAMED_SNIFF).enumerate() {
        let ok = match i {
            0 => b == b't',
            1 => b == b' ',
            2 => b.is_ascii_digit(),
            3..=7 => b.is_ascii_digit() || (b == 0 && buf[i - 1] != b' '),
            _ => b == b"BAD: "[i - frame::HEADER_LEN],
        };
        if !ok {
            return false;
        }
        if (4..=7).contains(&i) && buf[i - 1] == 0 && b != 0 {
            return false;
        }
    }
    true
}
