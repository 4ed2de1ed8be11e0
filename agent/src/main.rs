//! Placeholder entry point on the `provision` branch; the lead's main.rs replaces it.

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("provision") => kiln_agent::provision::cli(&args[1..]),
        _ => anyhow::bail!("usage: kiln-agent provision --help"),
    }
}
