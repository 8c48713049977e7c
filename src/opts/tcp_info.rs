//! `TCP_INFO` as a typed struct.

use std::time::Duration;

/// A TCP connection's state, as `TCP_INFO` reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TcpState {
    /// `TCP_ESTABLISHED`.
    Established,
    /// `TCP_SYN_SENT`.
    SynSent,
    /// `TCP_SYN_RECV`.
    SynRecv,
    /// `TCP_FIN_WAIT1`.
    FinWait1,
    /// `TCP_FIN_WAIT2`.
    FinWait2,
    /// `TCP_TIME_WAIT`.
    TimeWait,
    /// `TCP_CLOSE`.
    Close,
    /// `TCP_CLOSE_WAIT`: the peer has closed its side.
    CloseWait,
    /// `TCP_LAST_ACK`.
    LastAck,
    /// `TCP_LISTEN`.
    Listen,
    /// `TCP_CLOSING`.
    Closing,
    /// `TCP_NEW_SYN_RECV`.
    NewSynRecv,
    /// A state number this crate does not know.
    Unknown(u8),
}

impl TcpState {
    /// The state for the kernel's number.
    pub fn from_raw(n: u8) -> TcpState {
        match n {
            1 => TcpState::Established,
            2 => TcpState::SynSent,
            3 => TcpState::SynRecv,
            4 => TcpState::FinWait1,
            5 => TcpState::FinWait2,
            6 => TcpState::TimeWait,
            7 => TcpState::Close,
            8 => TcpState::CloseWait,
            9 => TcpState::LastAck,
            10 => TcpState::Listen,
            11 => TcpState::Closing,
            12 => TcpState::NewSynRecv,
            n => TcpState::Unknown(n),
        }
    }
}

/// What `TCP_INFO` says of a connection. Fields the running kernel does
/// not report (an older `struct tcp_info`) read as 0.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct TcpInfo {
    /// The state number (`tcpi_state`); see [`TcpInfo::state`].
    pub state_raw: u8,
    /// The congestion-avoidance state (`tcpi_ca_state`).
    pub ca_state: u8,
    /// Retransmits of the current segment (`tcpi_retransmits`).
    pub retransmits: u8,
    /// Unanswered zero-window probes (`tcpi_probes`).
    pub probes: u8,
    /// Back-off of the retransmit timer (`tcpi_backoff`).
    pub backoff: u8,
    /// Negotiated options (`TCPI_OPT_*` bits).
    pub options: u8,
    /// The retransmit timeout, µs.
    pub rto_us: u32,
    /// The delayed-ACK timeout, µs.
    pub ato_us: u32,
    /// Send maximum segment size.
    pub snd_mss: u32,
    /// Receive maximum segment size.
    pub rcv_mss: u32,
    /// Segments sent and not yet acknowledged.
    pub unacked: u32,
    /// Segments selectively acknowledged.
    pub sacked: u32,
    /// Segments considered lost.
    pub lost: u32,
    /// Segments being retransmitted.
    pub retrans: u32,
    /// The path MTU.
    pub pmtu: u32,
    /// The slow-start threshold of the receiver.
    pub rcv_ssthresh: u32,
    /// The smoothed round-trip time, µs.
    pub rtt_us: u32,
    /// The round-trip time variance, µs.
    pub rttvar_us: u32,
    /// The slow-start threshold.
    pub snd_ssthresh: u32,
    /// The congestion window, in segments.
    pub snd_cwnd: u32,
    /// The advertised MSS.
    pub advmss: u32,
    /// The reordering metric.
    pub reordering: u32,
    /// The receiver's RTT estimate, µs.
    pub rcv_rtt_us: u32,
    /// The receive space.
    pub rcv_space: u32,
    /// Retransmitted segments over the connection's life.
    pub total_retrans: u32,
    /// The pacing rate, bytes/s.
    pub pacing_rate: u64,
    /// Bytes acknowledged by the peer.
    pub bytes_acked: u64,
    /// Bytes received.
    pub bytes_received: u64,
    /// Segments sent.
    pub segs_out: u32,
    /// Segments received.
    pub segs_in: u32,
    /// Bytes queued and not yet sent.
    pub notsent_bytes: u32,
    /// The minimum RTT seen, µs.
    pub min_rtt_us: u32,
    /// The delivery rate, bytes/s.
    pub delivery_rate: u64,
    /// Bytes sent (retransmissions included).
    pub bytes_sent: u64,
    /// Bytes retransmitted.
    pub bytes_retrans: u64,
    /// The peer's advertised window, bytes.
    pub snd_wnd: u32,
    /// The window this side advertises, bytes.
    pub rcv_wnd: u32,
}

impl TcpInfo {
    /// The connection's state.
    pub fn state(&self) -> TcpState {
        TcpState::from_raw(self.state_raw)
    }

    /// The smoothed round-trip time.
    pub fn rtt(&self) -> Duration {
        Duration::from_micros(u64::from(self.rtt_us))
    }
}

fn u8_at(b: &[u8], at: usize) -> u8 {
    b.get(at).copied().unwrap_or(0)
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    match b.get(at..at + 4) {
        Some(s) => u32::from_ne_bytes([s[0], s[1], s[2], s[3]]),
        None => 0,
    }
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    match b.get(at..at + 8) {
        Some(s) => u64::from_ne_bytes([s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7]]),
        None => 0,
    }
}

impl super::sealed::Sealed for TcpInfo {}
impl super::OptValue for TcpInfo {
    /// `TCP_INFO` is read-only; nothing is written.
    fn encode(&self, _out: &mut [u8]) -> usize {
        0
    }

    /// Offsets of `struct tcp_info` in `<linux/tcp.h>`.
    fn decode(b: &[u8]) -> Option<TcpInfo> {
        if b.is_empty() {
            return None;
        }
        Some(TcpInfo {
            state_raw: u8_at(b, 0),
            ca_state: u8_at(b, 1),
            retransmits: u8_at(b, 2),
            probes: u8_at(b, 3),
            backoff: u8_at(b, 4),
            options: u8_at(b, 5),
            rto_us: u32_at(b, 8),
            ato_us: u32_at(b, 12),
            snd_mss: u32_at(b, 16),
            rcv_mss: u32_at(b, 20),
            unacked: u32_at(b, 24),
            sacked: u32_at(b, 28),
            lost: u32_at(b, 32),
            retrans: u32_at(b, 36),
            pmtu: u32_at(b, 60),
            rcv_ssthresh: u32_at(b, 64),
            rtt_us: u32_at(b, 68),
            rttvar_us: u32_at(b, 72),
            snd_ssthresh: u32_at(b, 76),
            snd_cwnd: u32_at(b, 80),
            advmss: u32_at(b, 84),
            reordering: u32_at(b, 88),
            rcv_rtt_us: u32_at(b, 92),
            rcv_space: u32_at(b, 96),
            total_retrans: u32_at(b, 100),
            pacing_rate: u64_at(b, 104),
            bytes_acked: u64_at(b, 120),
            bytes_received: u64_at(b, 128),
            segs_out: u32_at(b, 136),
            segs_in: u32_at(b, 140),
            notsent_bytes: u32_at(b, 144),
            min_rtt_us: u32_at(b, 148),
            delivery_rate: u64_at(b, 160),
            bytes_sent: u64_at(b, 200),
            bytes_retrans: u64_at(b, 208),
            snd_wnd: u32_at(b, 228),
            rcv_wnd: u32_at(b, 232),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::opts::OptValue;

    #[test]
    fn decodes_offsets_and_short_buffers() {
        let mut b = [0u8; 240];
        b[0] = 1;
        b[68..72].copy_from_slice(&1500u32.to_ne_bytes());
        b[120..128].copy_from_slice(&99u64.to_ne_bytes());
        let info = TcpInfo::decode(&b).unwrap();
        assert_eq!(info.state(), TcpState::Established);
        assert_eq!(info.rtt(), Duration::from_micros(1500));
        assert_eq!(info.bytes_acked, 99);
        let short = TcpInfo::decode(&b[..70]).unwrap();
        assert_eq!(short.rtt_us, 0);
        assert!(TcpInfo::decode(&[]).is_none());
    }
}
