//! Setting the clock: an SNTPv4 client (RFC 4330) and the HTTP `Date` header fallback.
//!
//! Bare-metal RTCs are often years off, and TLS fails on them. SNTP asks each server once
//! with a short timeout (the whole search is bounded), computes the offset from the four
//! timestamps, and the caller steps `CLOCK_REALTIME`. When no server answers, the control
//! plane client can later call [`set_from_http_date`] with its first response's `Date`.

use std::net::{SocketAddr, ToSocketAddrs, UdpSocket};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};

use super::cmdline::NtpServer;
use super::events::NetEvent;

/// Seconds from 1900-01-01 (NTP era 0) to 1970-01-01.
const NTP_UNIX_OFFSET: u64 = 2_208_988_800;

/// An NTP timestamp (seconds since 1900 in era 0/1, 32.32 fixed point) as Unix nanoseconds.
/// RFC 4330 section 3: when the top bit of the seconds is clear the time is after 2036
/// (era 1), which keeps this right until 2104 even when the local clock is years off.
pub fn ntp_to_unix_nanos(ts: u64) -> i128 {
    let secs = ts >> 32;
    let frac = ts & 0xffff_ffff;
    let secs = if secs & 0x8000_0000 == 0 {
        secs + (1 << 32)
    } else {
        secs
    };
    let nanos = (frac as i128 * 1_000_000_000) >> 32;
    (secs as i128 - NTP_UNIX_OFFSET as i128) * 1_000_000_000 + nanos
}

/// Unix nanoseconds as an NTP timestamp.
pub fn unix_nanos_to_ntp(n: i128) -> u64 {
    let secs = (n.div_euclid(1_000_000_000) + NTP_UNIX_OFFSET as i128) as u64 & 0xffff_ffff;
    let frac = ((n.rem_euclid(1_000_000_000) << 32) / 1_000_000_000) as u64;
    (secs << 32) | frac
}

fn now_nanos() -> i128 {
    match SystemTime::now().duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_nanos() as i128,
        Err(e) => -(e.duration().as_nanos() as i128),
    }
}

/// A client request carrying `transmit` as its transmit timestamp.
pub fn request_packet(transmit: u64) -> [u8; 48] {
    let mut p = [0u8; 48];
    p[0] = 0x23; // LI 0, version 4, mode 3 (client)
    p[40..48].copy_from_slice(&transmit.to_be_bytes());
    p
}

/// The answer's meaning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sample {
    /// How far the local clock is behind the server (add this to local time), in ns.
    pub offset_nanos: i128,
    /// Round-trip delay, ns.
    pub delay_nanos: i128,
    pub stratum: u8,
}

/// Checks a server reply against our request and computes offset and delay (RFC 4330
/// section 5): `t1` our send time, `t4` our receive time, both Unix nanoseconds.
pub fn parse_reply(p: &[u8], sent: u64, t1: i128, t4: i128) -> anyhow::Result<Sample> {
    if p.len() < 48 {
        bail!("SNTP reply too short ({} bytes)", p.len());
    }
    let mode = p[0] & 7;
    let version = (p[0] >> 3) & 7;
    if mode != 4 || !(3..=4).contains(&version) {
        bail!("not an SNTP server reply (mode {mode}, version {version})");
    }
    if p[0] >> 6 == 3 {
        bail!("server clock not synchronized (leap indicator 3)");
    }
    let stratum = p[1];
    if stratum == 0 || stratum > 15 {
        bail!(
            "server refused or unsynchronized (stratum {stratum}, kiss code {:?})",
            String::from_utf8_lossy(&p[12..16])
        );
    }
    let ts = |o: usize| u64::from_be_bytes(p[o..o + 8].try_into().unwrap_or_default());
    if ts(24) != sent {
        bail!("SNTP reply does not answer our request (origin timestamp mismatch)");
    }
    if ts(40) == 0 {
        bail!("SNTP reply has no transmit timestamp");
    }
    let t2 = ntp_to_unix_nanos(ts(32));
    let t3 = ntp_to_unix_nanos(ts(40));
    Ok(Sample {
        offset_nanos: ((t2 - t1) + (t3 - t4)) / 2,
        delay_nanos: (t4 - t1) - (t3 - t2),
        stratum,
    })
}

/// Asks one server.
pub fn query(server: SocketAddr, timeout: Duration) -> anyhow::Result<Sample> {
    let bind: SocketAddr = if server.is_ipv4() {
        "0.0.0.0:0".parse()?
    } else {
        "[::]:0".parse()?
    };
    let sock = UdpSocket::bind(bind).context("opening SNTP socket")?;
    sock.connect(server)
        .with_context(|| format!("SNTP to {server}"))?;
    let t1 = now_nanos();
    let sent = unix_nanos_to_ntp(t1);
    sock.send(&request_packet(sent))
        .with_context(|| format!("sending SNTP request to {server}"))?;
    let deadline = Instant::now() + timeout;
    let mut buf = [0u8; 128];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            bail!("no SNTP answer from {server} within {timeout:?}");
        }
        sock.set_read_timeout(Some(left))?;
        let n = match sock.recv(&mut buf) {
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                continue;
            }
            Err(e) => return Err(e).with_context(|| format!("receiving SNTP reply from {server}")),
        };
        let t4 = now_nanos();
        match parse_reply(&buf[..n], sent, t1, t4) {
            Ok(s) => return Ok(s),
            // A stray datagram: keep waiting; a real refusal: report it.
            Err(e) if e.to_string().contains("origin timestamp") => continue,
            Err(e) => return Err(e.context(format!("SNTP server {server}"))),
        }
    }
}

/// Asks the servers in order until one answers, spending at most `budget` in total.
/// Returns the server used and its sample.
pub fn sync(servers: &[NtpServer], budget: Duration) -> anyhow::Result<(String, Sample)> {
    if servers.is_empty() {
        bail!("no NTP server known (none in the DHCP lease, no kiln.ntp=)");
    }
    let deadline = Instant::now() + budget;
    let per = (budget / servers.len() as u32).max(Duration::from_millis(500));
    let mut errors = Vec::new();
    for s in servers {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            errors.push(format!("{}: no time left", s.host));
            break;
        }
        let addr = match (s.host.as_str(), s.port)
            .to_socket_addrs()
            .map(|mut a| a.next())
        {
            Ok(Some(a)) => a,
            Ok(None) => {
                errors.push(format!("{}: no address", s.host));
                continue;
            }
            Err(e) => {
                errors.push(format!("{}: {e}", s.host));
                continue;
            }
        };
        match query(addr, per.min(left)) {
            Ok(sample) => return Ok((format!("NTP {}", s.host), sample)),
            Err(e) => errors.push(format!("{e:#}")),
        }
    }
    bail!("no NTP server answered: {}", errors.join("; "))
}

/// Steps `CLOCK_REALTIME` by `offset_nanos`.
pub fn step_clock(offset_nanos: i128) -> anyhow::Result<()> {
    let target = now_nanos() + offset_nanos;
    let ts = rustix::time::Timespec {
        tv_sec: target.div_euclid(1_000_000_000) as i64,
        tv_nsec: target.rem_euclid(1_000_000_000) as i64,
    };
    rustix::time::clock_settime(rustix::time::ClockId::Realtime, ts)
        .context("setting the system clock (clock_settime)")?;
    Ok(())
}

/// SNTP then step, reporting the result as an event. Never fails: a clock that cannot be set
/// is reported and boot goes on.
pub fn sync_and_step(
    servers: &[NtpServer],
    budget: Duration,
    step: bool,
    emit: &dyn Fn(NetEvent),
) -> Option<i128> {
    match sync(servers, budget) {
        Ok((source, sample)) => {
            if step && let Err(e) = step_clock(sample.offset_nanos) {
                emit(NetEvent::ClockUnset {
                    reason: format!("{e:#}"),
                });
                return None;
            }
            emit(NetEvent::ClockStep {
                source,
                offset_ms: (sample.offset_nanos / 1_000_000) as i64,
            });
            Some(sample.offset_nanos)
        }
        Err(e) => {
            emit(NetEvent::ClockUnset {
                reason: format!("{e:#}"),
            });
            None
        }
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Hinnant's algorithm).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m as i64 + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Parses an HTTP `Date` value (RFC 9110: IMF-fixdate, plus the obsolete RFC 850 and
/// asctime forms) into Unix seconds.
pub fn parse_http_date(s: &str) -> anyhow::Result<i64> {
    let bad = || {
        anyhow::anyhow!(
            "HTTP Date {s:?} is not an RFC 9110 date (e.g. \"Sun, 06 Nov 1994 08:49:37 GMT\")"
        )
    };
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let parts: Vec<&str> = s.split([' ', '-']).filter(|p| !p.is_empty()).collect();
    // IMF-fixdate: Sun, 06 Nov 1994 08:49:37 GMT   RFC 850: Sunday, 06-Nov-94 08:49:37 GMT
    // asctime:     Sun Nov  6 08:49:37 1994
    let (day, mon, year, time) = match parts.as_slice() {
        [wd, d, m, y, t, "GMT"] if wd.ends_with(',') => (*d, *m, *y, *t),
        [_, m, d, t, y] => (*d, *m, *y, *t),
        _ => return Err(bad()),
    };
    let month = MONTHS.iter().position(|m| *m == mon).ok_or_else(bad)? as u32 + 1;
    let day: u32 = day.parse().map_err(|_| bad())?;
    let mut year: i64 = year.parse().map_err(|_| bad())?;
    if year < 100 {
        year += if year < 70 { 2000 } else { 1900 };
    }
    let hms: Vec<u32> = time
        .split(':')
        .map(|x| x.parse().map_err(|_| bad()))
        .collect::<Result<_, _>>()?;
    let [h, mi, se] = hms[..] else {
        return Err(bad());
    };
    if !(1..=31).contains(&day) || h > 23 || mi > 59 || se > 60 {
        return Err(bad());
    }
    Ok(days_from_civil(year, month, day) * 86_400 + i64::from(h * 3600 + mi * 60 + se))
}

/// Steps the clock to an HTTP `Date` value when it is more than 2 s off (the header has
/// 1 s resolution) and reports it. Returns the offset applied in ms (0 = left alone).
pub fn set_from_http_date(value: &str, emit: &dyn Fn(NetEvent)) -> anyhow::Result<i64> {
    let server = i128::from(parse_http_date(value)?) * 1_000_000_000;
    let offset = server - now_nanos();
    if offset.abs() <= 2_000_000_000 {
        return Ok(0);
    }
    step_clock(offset)?;
    let ms = (offset / 1_000_000) as i64;
    emit(NetEvent::ClockStep {
        source: "HTTP Date header".into(),
        offset_ms: ms,
    });
    Ok(ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ntp_timestamps_round_trip_across_eras() {
        for unix in [
            0i128,
            1_000_000_000,
            1_764_000_000,
            2_085_978_495,
            2_085_978_497,
            3_000_000_000,
        ] {
            let n = unix * 1_000_000_000 + 250_000_000;
            let back = ntp_to_unix_nanos(unix_nanos_to_ntp(n));
            assert!((back - n).abs() < 10, "{unix}: {back} vs {n}");
        }
        // 2036-02-07T06:28:16Z is era 1 second 0.
        assert_eq!(ntp_to_unix_nanos(0) / 1_000_000_000, 2_085_978_496);
    }

    fn reply(origin: u64, recv: i128, xmit: i128, stratum: u8) -> [u8; 48] {
        let mut p = [0u8; 48];
        p[0] = 0x24; // version 4, mode 4
        p[1] = stratum;
        p[24..32].copy_from_slice(&origin.to_be_bytes());
        p[32..40].copy_from_slice(&unix_nanos_to_ntp(recv).to_be_bytes());
        p[40..48].copy_from_slice(&unix_nanos_to_ntp(xmit).to_be_bytes());
        p
    }

    #[test]
    fn offset_from_four_timestamps() {
        const S: i128 = 1_000_000_000;
        // Local clock at 2001, server at 2026: offset about +25 years, delay 20 ms.
        let t1 = 978_307_200 * S;
        let server = 1_767_225_600 * S;
        let sent = unix_nanos_to_ntp(t1);
        let p = reply(sent, server + S / 100, server + S / 100 + S / 1000, 2);
        let s = parse_reply(&p, sent, t1, t1 + S / 50 + S / 1000).unwrap();
        assert!((s.offset_nanos - (server - t1)).abs() < 1000, "{s:?}");
        assert!((s.delay_nanos - S / 50).abs() < 1000, "{s:?}");
        assert_eq!(s.stratum, 2);
    }

    #[test]
    fn bad_replies() {
        let sent = unix_nanos_to_ntp(1);
        let good = reply(sent, 5, 6, 1);
        assert!(
            parse_reply(&good[..40], sent, 0, 0)
                .unwrap_err()
                .to_string()
                .contains("short")
        );
        let mut kod = good;
        kod[1] = 0;
        kod[12..16].copy_from_slice(b"RATE");
        assert!(
            parse_reply(&kod, sent, 0, 0)
                .unwrap_err()
                .to_string()
                .contains("RATE")
        );
        assert!(
            parse_reply(&good, sent + 1, 0, 0)
                .unwrap_err()
                .to_string()
                .contains("origin")
        );
        let mut client = good;
        client[0] = 0x23;
        assert!(parse_reply(&client, sent, 0, 0).is_err());
        let mut unsync = good;
        unsync[0] |= 0xc0;
        assert!(parse_reply(&unsync, sent, 0, 0).is_err());
    }

    #[test]
    fn http_dates() {
        for (s, want) in [
            ("Sun, 06 Nov 1994 08:49:37 GMT", 784_111_777),
            ("Sunday, 06-Nov-94 08:49:37 GMT", 784_111_777),
            ("Sun Nov  6 08:49:37 1994", 784_111_777),
            ("Thu, 01 Jan 1970 00:00:00 GMT", 0),
            ("Wed, 25 Nov 2026 17:33:39 GMT", 1_795_628_019),
            ("Tue, 29 Feb 2028 12:00:00 GMT", 1_835_438_400),
        ] {
            assert_eq!(parse_http_date(s).unwrap(), want, "{s}");
        }
        for bad in [
            "",
            "yesterday",
            "Sun, 06 Foo 1994 08:49:37 GMT",
            "Sun, 06 Nov 1994 25:49:37 GMT",
        ] {
            assert!(
                parse_http_date(bad)
                    .unwrap_err()
                    .to_string()
                    .contains("HTTP Date"),
                "{bad}"
            );
        }
    }

    #[test]
    fn sync_needs_servers_and_respects_budget() {
        assert!(
            sync(&[], Duration::from_secs(1))
                .unwrap_err()
                .to_string()
                .contains("no NTP server")
        );
        // A bound socket that never answers: the budget bounds the wait.
        let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = silent.local_addr().unwrap().port();
        let start = Instant::now();
        let r = sync(
            &[NtpServer {
                host: "127.0.0.1".into(),
                port,
            }],
            Duration::from_millis(600),
        );
        assert!(r.unwrap_err().to_string().contains("no SNTP answer"));
        assert!(start.elapsed() < Duration::from_secs(2));
    }
}
