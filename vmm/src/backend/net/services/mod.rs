//! The UDP services both network back-ends offer the guest, in the in-process peer and in the
//! TAP namespace alike: echo on port 7 (RFC 862), discard on port 9 (RFC 863) and a frame
//! source on port 19 (after chargen's port, RFC 864, but driven by commands). The TAP
//! namespace also has a TCP sink and source on the same ports ([`tcp`]) and, on request, an
//! `iperf3 -s` ([`iperf3`]): the in-process peer speaks no TCP.
//!
//! # Source commands
//!
//! A datagram to port 19 carries one ASCII command; surrounding whitespace and NUL bytes are
//! ignored, tokens are separated by ASCII whitespace, and the command is at most
//! [`MAX_COMMAND_LEN`] bytes:
//!
//! - `count=N size=S` (the two tokens in either order, nothing else) starts a stream of `N`
//!   UDP datagrams (decimal, `0` = unbounded until `stop`) from port 19 to the sender's address
//!   and port. `S` is the whole Ethernet frame length in bytes (14 Ethernet, 20 IPv4, 8 UDP,
//!   then the payload; no FCS), between [`MIN_SOURCE_FRAME`] and [`MAX_SOURCE_FRAME`]. A new
//!   command replaces the stream in progress.
//! - `stop` ends the stream in progress.
//!
//! Each source payload is [`fill_source_payload`]'s pattern: the datagram's sequence number
//! (u64, big-endian, from 0 per stream) in the first 8 bytes when there is room, then byte `i`
//! of the payload is `i as u8`, so a guest can check order, loss and integrity.

pub mod host;
pub mod iperf3;
pub mod tcp;

use crate::backend::net::wire::UDP_V4_HEADERS;

pub const ECHO_PORT: u16 = 7;
pub const DISCARD_PORT: u16 = 9;
pub const SOURCE_PORT: u16 = 19;

/// The smallest source frame: headers and an empty payload.
pub const MIN_SOURCE_FRAME: usize = UDP_V4_HEADERS;
/// The largest: an IPv4 datagram of 65,535 bytes behind the Ethernet header.
pub const MAX_SOURCE_FRAME: usize = 14 + 65_535;
pub const MAX_COMMAND_LEN: usize = 128;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SourceCommand {
    /// Send `count` frames (0: until stopped) of `frame_size` bytes each.
    Start {
        count: u64,
        frame_size: usize,
    },
    Stop,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    #[error("source command longer than {MAX_COMMAND_LEN} bytes")]
    TooLong,
    #[error("source command is not ascii text")]
    NotText,
    #[error("unknown source command token {0:?}")]
    UnknownToken(String),
    #[error("source command needs count=N and size=S once each")]
    Incomplete,
    #[error("source frame size {0} outside {MIN_SOURCE_FRAME}..={MAX_SOURCE_FRAME}")]
    Size(u64),
}

impl SourceCommand {
    pub fn parse(payload: &[u8]) -> Result<SourceCommand, CommandError> {
        if payload.len() > MAX_COMMAND_LEN {
            return Err(CommandError::TooLong);
        }
        let text = std::str::from_utf8(payload)
            .ok()
            .filter(|t| t.is_ascii())
            .ok_or(CommandError::NotText)?
            .trim_matches(|c: char| c.is_ascii_whitespace() || c == '\0');
        if text == "stop" {
            return Ok(SourceCommand::Stop);
        }
        let (mut count, mut size) = (None, None);
        for token in text.split_ascii_whitespace() {
            let unknown = || CommandError::UnknownToken(token.to_string());
            let (key, value) = token.split_once('=').ok_or_else(unknown)?;
            let value: u64 = value.parse().map_err(|_| unknown())?;
            let slot = match key {
                "count" => &mut count,
                "size" => &mut size,
                _ => return Err(unknown()),
            };
            if slot.replace(value).is_some() {
                return Err(CommandError::Incomplete);
            }
        }
        let (Some(count), Some(size)) = (count, size) else {
            return Err(CommandError::Incomplete);
        };
        let frame_size = usize::try_from(size)
            .ok()
            .filter(|s| (MIN_SOURCE_FRAME..=MAX_SOURCE_FRAME).contains(s))
            .ok_or(CommandError::Size(size))?;
        Ok(SourceCommand::Start { count, frame_size })
    }
}

/// Fills a source datagram's payload for sequence number `seq` (see the module doc).
pub fn fill_source_payload(payload: &mut [u8], seq: u64) {
    for (i, b) in payload.iter_mut().enumerate() {
        *b = i as u8;
    }
    write_source_seq(payload, seq);
}

/// Writes only the sequence number, for a payload already holding the pattern.
pub fn write_source_seq(payload: &mut [u8], seq: u64) {
    if let Some(head) = payload.get_mut(..8) {
        head.copy_from_slice(&seq.to_be_bytes());
    }
}

/// What the services did, for cross-checking guest-side figures. Byte counts are UDP payload
/// bytes (what a socket sees), the same for both back-ends; the back-ends' `NetCounters` count
/// whole frames.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ServiceCounters {
    pub echoed_frames: u64,
    pub echoed_bytes: u64,
    pub sunk_frames: u64,
    pub sunk_bytes: u64,
    pub sourced_frames: u64,
    pub sourced_bytes: u64,
    /// Valid source commands received (`stop` included).
    pub source_commands: u64,
    pub bad_commands: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_parse() {
        let start = |count, frame_size| SourceCommand::Start { count, frame_size };
        assert_eq!(SourceCommand::parse(b"count=10 size=64"), Ok(start(10, 64)));
        assert_eq!(
            SourceCommand::parse(b" size=1514\tcount=0\n\0"),
            Ok(start(0, 1514))
        );
        assert_eq!(SourceCommand::parse(b"stop\n"), Ok(SourceCommand::Stop));
        assert_eq!(SourceCommand::parse(b"count=1 size=42"), Ok(start(1, 42)));
    }

    #[test]
    fn bad_commands_are_refused() {
        for bad in [
            &b""[..],
            b"count=1",
            b"count=1 size=41",
            b"count=1 size=65550",
            b"count=1 size=64 count=2",
            b"count=-1 size=64",
            b"count=1 size=64 rate=5",
            b"stop now",
            b"count=1 size=99999999999999999999999",
            b"\xff\xfe",
            &[b' '; 200],
        ] {
            assert!(
                SourceCommand::parse(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn payload_pattern_carries_the_sequence_number() {
        let mut p = [0u8; 12];
        fill_source_payload(&mut p, 0x0102_0304_0506_0708);
        assert_eq!(p, [1, 2, 3, 4, 5, 6, 7, 8, 8, 9, 10, 11]);
        let mut short = [0u8; 3];
        fill_source_payload(&mut short, 5);
        assert_eq!(short, [0, 1, 2]);
    }
}
