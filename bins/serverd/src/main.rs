use clap::Parser;

mod check_config;

/// rcf-serverd (placeholder until its issue lands).
#[derive(Parser)]
#[command(name = "rcf-serverd", version)]
struct Cli {
    /// Load and evaluate the policy, print warnings and the access summary,
    /// exit 0 if valid, 1 if not.
    #[arg(long)]
    check_config: bool,
    /// Policy file (default WORKDIR/inputs/promises.cf).
    #[arg(short = 'f', long = "file")]
    file: Option<String>,
    /// Work directory (default $CFENGINE_TEST_OVERRIDE_WORKDIR, else /var/lib/cfengine3).
    #[arg(long)]
    workdir: Option<String>,
}

fn main() {
    let cli = Cli::parse();
    if cli.check_config {
        std::process::exit(check_config::run(
            cli.file.as_deref(),
            cli.workdir.as_deref(),
        ));
    }
}
