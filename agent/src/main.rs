//! `kiln-agent`: PID 1 of the Kiln installer, or a command-line tool when it is not PID 1.

fn main() -> std::process::ExitCode {
    kiln_agent::main()
}
