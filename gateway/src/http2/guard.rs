//! The HTTP/2 abuse guard, apart from the I/O: fed the bytes a visitor sends on an h2
//! connection, it reads the frame headers (nine bytes each; payloads are skipped, never
//! copied) and says when the connection is an attack of a known class rather than a client:
//!
//! | class | what the client does | limit, per [`WINDOW`] |
//! |---|---|---|
//! | rapid reset (CVE-2023-44487) | opens streams and cancels them at once: each costs a request to a backend, the client nothing | more than [`RESETS`] streams reset, and more than half of the streams opened |
//! | ping flood (CVE-2019-9512) | PINGs, each owing an answer | [`PINGS`] |
//! | settings flood (CVE-2019-9515) | SETTINGS frames, each owing an acknowledgement | [`SETTINGS`] |
//! | priority flood (CVE-2019-9513) | PRIORITY frames, each reshuffling state | [`PRIORITIES`] |
//! | empty frames (CVE-2019-9518) | DATA frames with no data that do not end the stream | [`EMPTY_FRAMES`] |
//!
//! The `h2` crate has its own limits beside these (resets of streams not yet accepted,
//! CONTINUATION frames and the header list's size, streams reset for errors); it closes the
//! connection with `ENHANCE_YOUR_CALM` past them. Cloudflare itself stays far below every
//! limit: it pings an origin now and then and cancels a stream when its visitor goes away.

use std::time::{Duration, Instant};

/// The span every limit counts over: counts start again at each window's end.
pub const WINDOW: Duration = Duration::from_secs(10);
/// Streams reset by the client, in a window, beyond which a connection that also resets more
/// than half of what it opens is an attack.
pub const RESETS: u32 = 100;
pub const PINGS: u32 = 100;
pub const SETTINGS: u32 = 100;
pub const PRIORITIES: u32 = 1_000;
pub const EMPTY_FRAMES: u32 = 1_000;

/// The client preface before the first frame (RFC 9113 3.4): checked by `h2`, skipped here.
const PREFACE_LEN: usize = 24;
const FRAME_HEADER_LEN: usize = 9;

const DATA: u8 = 0x0;
const HEADERS: u8 = 0x1;
const PRIORITY: u8 = 0x2;
const RST_STREAM: u8 = 0x3;
const SETTINGS_FRAME: u8 = 0x4;
const PING: u8 = 0x6;
const ACK: u8 = 0x1;
const END_STREAM: u8 = 0x1;

/// The attack a connection was closed for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Abuse {
    RapidReset,
    PingFlood,
    SettingsFlood,
    PriorityFlood,
    EmptyFrames,
}

impl Abuse {
    /// The metric label.
    pub fn key(self) -> &'static str {
        match self {
            Abuse::RapidReset => "rapid_reset",
            Abuse::PingFlood => "ping_flood",
            Abuse::SettingsFlood => "settings_flood",
            Abuse::PriorityFlood => "priority_flood",
            Abuse::EmptyFrames => "empty_frames",
        }
    }
}

/// Where the reader is in the byte stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum At {
    /// In the client preface; bytes of it left.
    Preface(usize),
    /// In a frame header; bytes of it read so far.
    Header(usize),
    /// In a frame's payload; bytes of it left.
    Payload(usize),
}

/// Counts in the current window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Counts {
    opened: u32,
    resets: u32,
    pings: u32,
    settings: u32,
    priorities: u32,
    empty: u32,
}

/// The guard of one connection.
#[derive(Debug, Clone)]
pub struct FrameGuard {
    at: At,
    header: [u8; FRAME_HEADER_LEN],
    /// The highest stream the client opened.
    last_stream: u32,
    window_start: Instant,
    counts: Counts,
}

impl FrameGuard {
    pub fn new(now: Instant) -> Self {
        FrameGuard {
            at: At::Preface(PREFACE_LEN),
            header: [0; FRAME_HEADER_LEN],
            last_stream: 0,
            window_start: now,
            counts: Counts::default(),
        }
    }

    /// Reads the next bytes the client sent, at `now`; `Some` once the connection is an
    /// attack (and at every later call).
    pub fn feed(&mut self, mut bytes: &[u8], now: Instant) -> Option<Abuse> {
        if now.saturating_duration_since(self.window_start) >= WINDOW {
            self.window_start = now;
            self.counts = Counts::default();
        }
        while !bytes.is_empty() {
            match self.at {
                At::Preface(left) | At::Payload(left) => {
                    let n = left.min(bytes.len());
                    bytes = &bytes[n..];
                    self.at = match (self.at, left - n) {
                        (_, 0) => At::Header(0),
                        (At::Preface(_), rest) => At::Preface(rest),
                        (_, rest) => At::Payload(rest),
                    };
                }
                At::Header(have) => {
                    let n = (FRAME_HEADER_LEN - have).min(bytes.len());
                    self.header[have..have + n].copy_from_slice(&bytes[..n]);
                    bytes = &bytes[n..];
                    self.at = match have + n {
                        FRAME_HEADER_LEN => self.frame(),
                        have => At::Header(have),
                    };
                }
            }
        }
        self.verdict()
    }

    /// Counts the frame whose header was just read; what comes next is its payload.
    fn frame(&mut self) -> At {
        let h = &self.header;
        let length = usize::from(h[0]) << 16 | usize::from(h[1]) << 8 | usize::from(h[2]);
        let (kind, flags) = (h[3], h[4]);
        let stream = u32::from_be_bytes([h[5], h[6], h[7], h[8]]) & 0x7fff_ffff;
        let c = &mut self.counts;
        match kind {
            HEADERS if stream > self.last_stream => {
                self.last_stream = stream;
                c.opened += 1;
            }
            RST_STREAM => c.resets += 1,
            PING if flags & ACK == 0 => c.pings += 1,
            SETTINGS_FRAME if flags & ACK == 0 => c.settings += 1,
            PRIORITY => c.priorities += 1,
            DATA if length == 0 && flags & END_STREAM == 0 => c.empty += 1,
            _ => {}
        }
        match length {
            0 => At::Header(0),
            n => At::Payload(n),
        }
    }

    fn verdict(&self) -> Option<Abuse> {
        let c = &self.counts;
        if c.resets > RESETS && c.resets.saturating_mul(2) > c.opened {
            Some(Abuse::RapidReset)
        } else if c.pings > PINGS {
            Some(Abuse::PingFlood)
        } else if c.settings > SETTINGS {
            Some(Abuse::SettingsFlood)
        } else if c.priorities > PRIORITIES {
            Some(Abuse::PriorityFlood)
        } else if c.empty > EMPTY_FRAMES {
            Some(Abuse::EmptyFrames)
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

    fn frame(kind: u8, flags: u8, stream: u32, payload: usize) -> Vec<u8> {
        let mut f = vec![
            (payload >> 16) as u8,
            (payload >> 8) as u8,
            payload as u8,
            kind,
            flags,
        ];
        f.extend_from_slice(&stream.to_be_bytes());
        f.extend(std::iter::repeat_n(0xA5, payload));
        f
    }

    /// A client's bytes: the preface, then `frames`, each `(kind, flags, stream, payload)`.
    fn client(frames: impl IntoIterator<Item = (u8, u8, u32, usize)>) -> Vec<u8> {
        let mut bytes = PREFACE.to_vec();
        bytes.extend(frame(SETTINGS_FRAME, 0, 0, 18));
        for (kind, flags, stream, payload) in frames {
            bytes.extend(frame(kind, flags, stream, payload));
        }
        bytes
    }

    /// Feeds `bytes` in pieces of `piece` bytes, all at one instant.
    fn verdict(bytes: &[u8], piece: usize) -> Option<Abuse> {
        let now = Instant::now();
        let mut guard = FrameGuard::new(now);
        let mut last = None;
        for chunk in bytes.chunks(piece) {
            last = guard.feed(chunk, now);
        }
        last
    }

    fn streams(
        n: u32,
        then: impl Fn(u32) -> Vec<(u8, u8, u32, usize)>,
    ) -> Vec<(u8, u8, u32, usize)> {
        (0..n)
            .flat_map(|i| {
                let id = 2 * i + 1;
                let mut f = vec![(HEADERS, 0x4, id, 40)];
                f.extend(then(id));
                f
            })
            .collect()
    }

    #[test]
    fn attacks_are_told_from_clients() {
        let cases: Vec<(&str, Vec<u8>, Option<Abuse>)> = vec![
            (
                "a thousand requests with bodies",
                client(streams(1000, |id| {
                    vec![(DATA, 0, id, 100), (DATA, END_STREAM, id, 0)]
                })),
                None,
            ),
            (
                "a visitor in ten cancels",
                client(streams(1000, |id| match id % 10 {
                    1 => vec![(RST_STREAM, 0, id, 4)],
                    _ => vec![],
                })),
                None,
            ),
            (
                "every stream cancelled at once",
                client(streams(RESETS + 1, |id| vec![(RST_STREAM, 0, id, 4)])),
                Some(Abuse::RapidReset),
            ),
            (
                "as many cancels as the limit",
                client(streams(RESETS, |id| vec![(RST_STREAM, 0, id, 4)])),
                None,
            ),
            (
                "pings past the limit",
                client((0..=PINGS).map(|_| (PING, 0, 0, 8))),
                Some(Abuse::PingFlood),
            ),
            (
                "ping acknowledgements are not pings",
                client((0..=PINGS * 2).map(|_| (PING, ACK, 0, 8))),
                None,
            ),
            (
                "settings past the limit",
                client((0..SETTINGS).map(|_| (SETTINGS_FRAME, 0, 0, 6))),
                Some(Abuse::SettingsFlood),
            ),
            (
                "priorities past the limit",
                client((0..=PRIORITIES).map(|_| (PRIORITY, 0, 1, 5))),
                Some(Abuse::PriorityFlood),
            ),
            (
                "empty data frames past the limit",
                client(streams(1, |id| {
                    (0..=EMPTY_FRAMES).map(|_| (DATA, 0, id, 0)).collect()
                })),
                Some(Abuse::EmptyFrames),
            ),
            (
                "a large payload that looks like frames is skipped",
                client([(DATA, 0, 1, 70_000)]),
                None,
            ),
        ];
        for (name, bytes, expected) in cases {
            for piece in [1, 7, 9, 4096, bytes.len()] {
                assert_eq!(
                    verdict(&bytes, piece),
                    expected,
                    "{name}, in pieces of {piece}"
                );
            }
        }
    }

    #[test]
    fn counts_start_again_each_window() {
        let start = Instant::now();
        let mut guard = FrameGuard::new(start);
        let pings: Vec<u8> = (0..PINGS).flat_map(|_| frame(PING, 0, 0, 8)).collect();
        let mut preface = PREFACE.to_vec();
        preface.extend(frame(SETTINGS_FRAME, 0, 0, 0));
        assert_eq!(guard.feed(&preface, start), None);
        assert_eq!(guard.feed(&pings, start), None);
        // The limit's worth again, in the next window: still a client.
        assert_eq!(guard.feed(&pings, start + WINDOW), None);
        // One more in the same window: a flood.
        assert_eq!(
            guard.feed(&frame(PING, 0, 0, 8), start + WINDOW),
            Some(Abuse::PingFlood)
        );
    }
}
