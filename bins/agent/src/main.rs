use clap::Parser;

/// rcf-agent (placeholder until its issue lands).
#[derive(Parser)]
#[command(name = "rcf-agent", version)]
struct Cli {}

fn main() {
    let _cli = Cli::parse();
}
