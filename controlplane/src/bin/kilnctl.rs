//! `kilnctl`: command line client of the Kiln control plane (see `kiln_controlplane::kilnctl`).

use clap::Parser;

#[tokio::main]
async fn main() {
    let cli = kiln_controlplane::kilnctl::Cli::parse();
    if let Err(e) = kiln_controlplane::kilnctl::run(cli).await {
        eprintln!("kilnctl: {e:#}");
        std::process::exit(1);
    }
}
