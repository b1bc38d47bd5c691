//! The `fluxgate` binary: parses the command line and hands over to the library.

use clap::Parser;

fn main() -> std::process::ExitCode {
    fluxgate::cli::run(fluxgate::cli::Cli::parse())
}
