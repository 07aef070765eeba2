//! The `peer` binary: see [`peer_node::cli`].

use clap::Parser;

fn main() {
    let cli = peer_node::cli::Cli::parse();
    if let Err(e) = peer_node::cli::run(cli, Vec::new()) {
        eprintln!("peer: {e:#}");
        std::process::exit(1);
    }
}
