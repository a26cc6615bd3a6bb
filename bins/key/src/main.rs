use clap::Parser;

/// rcf-key (placeholder until its issue lands).
#[derive(Parser)]
#[command(name = "rcf-key", version)]
struct Cli {}

fn main() {
    let _cli = Cli::parse();
}
