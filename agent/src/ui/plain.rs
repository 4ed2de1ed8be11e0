//! Plain log lines, one per event, on every console: readable on a serial console, in a
//! BMC's serial-over-LAN log and in a QEMU serial log.
//!
//! The banner is printed bare so that the first line on every console begins with
//! `kiln-agent <version>`; every other line starts with the seconds since kernel start.

use crate::events::{Event, Level, Record, Sink};
use std::io::Write;

/// Renders one record as a line (without the newline).
pub fn render(record: &Record) -> String {
    if let Event::Banner { .. } = record.event {
        return record.event.to_string();
    }
    let tag = match record.level {
        Level::Error => "ERROR: ",
        Level::Warn => "WARN: ",
        Level::Debug => "debug: ",
        Level::Info => "",
    };
    format!(
        "[{:5}.{:03}] {tag}{}",
        record.uptime_ms / 1000,
        record.uptime_ms % 1000,
        record.event
    )
}

/// Writes plain lines to a set of outputs (console devices, or anything `Write`).
pub struct PlainSink {
    outputs: Vec<Box<dyn Write + Send>>,
    min_level: Level,
}

impl PlainSink {
    pub fn new(outputs: Vec<Box<dyn Write + Send>>, min_level: Level) -> Self {
        PlainSink { outputs, min_level }
    }
}

impl Sink for PlainSink {
    fn record(&mut self, record: &Record) {
        if record.level < self.min_level {
            return;
        }
        let line = format!("{}\n", render(record));
        for out in &mut self.outputs {
            // A console that fails (unplugged USB serial) must not stop the others.
            let _ = out.write_all(line.as_bytes()).and_then(|()| out.flush());
        }
    }
}

/// Writes each record as one line of JSON (`schema`, `seq`, `uptime_ms`, `level`, the
/// event): the form of every machine-read event stream.
pub struct JsonSink {
    output: Box<dyn Write + Send>,
}

impl JsonSink {
    pub fn new(output: Box<dyn Write + Send>) -> Self {
        JsonSink { output }
    }
}

impl Sink for JsonSink {
    fn record(&mut self, record: &Record) {
        if let Ok(line) = serde_json::to_string(record) {
            let _ = writeln!(self.output, "{line}").and_then(|()| self.output.flush());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::{Event, Record};
    use std::sync::{Arc, Mutex};

    fn rec(event: Event, uptime_ms: u64) -> Record {
        Record {
            schema: 1,
            seq: 0,
            uptime_ms,
            level: event.level(),
            event,
        }
    }

    #[test]
    fn lines() {
        let cases = [
            (
                rec(
                    Event::Banner {
                        version: "0.1.0".into(),
                        since_boot_ms: 2500,
                    },
                    2500,
                ),
                "kiln-agent 0.1.0 started 2.500 s after kernel start",
            ),
            (
                rec(
                    Event::CmdlineWarning {
                        key: "kiln.x".into(),
                        message: "unknown key".into(),
                    },
                    12_345,
                ),
                "[   12.345] WARN: kernel parameter kiln.x: unknown key",
            ),
            (rec(Event::info("ready"), 7), "[    0.007] ready"),
        ];
        for (r, want) in cases {
            assert_eq!(render(&r), want);
        }
    }

    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);
    impl Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn json_lines_carry_the_schema_version() {
        let out = Buf::default();
        let mut sink = JsonSink::new(Box::new(out.clone()));
        sink.record(&rec(Event::info("one"), 1000));
        sink.record(&rec(Event::info("two"), 2000));
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["schema"], crate::events::SCHEMA_VERSION);
        assert_eq!(lines[1]["uptime_ms"], 2000);
    }

    #[test]
    fn every_output_gets_every_line_above_level() {
        let (a, b) = (Buf::default(), Buf::default());
        let mut sink = PlainSink::new(vec![Box::new(a.clone()), Box::new(b.clone())], Level::Info);
        sink.record(&rec(Event::info("one"), 1000));
        sink.record(&rec(
            Event::Reaped {
                pid: 9,
                status: "exit 0".into(),
            },
            1000,
        ));
        for buf in [a, b] {
            let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
            assert_eq!(text, "[    1.000] one\n");
        }
    }
}
