use clap::Parser;

/// rcf-serverd (placeholder until its issue lands).
#[derive(Parser)]
#[command(name = "rcf-serverd", version)]
struct Cli {}

fn main() {
    let _cli = Cli::parse();
}
