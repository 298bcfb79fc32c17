//! The `sockit` binary: parse, run the command, map errors to exit codes.

mod cli;
mod commands;

use clap::Parser;
use cli::Cli;
use sockit::error::ExitCode;

fn main() {
    let cli = Cli::parse();
    sockit::logging::init(cli.log_level(), cli.log_format);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("sockit: cannot start the runtime: {e}");
            std::process::exit(ExitCode::Failure.code());
        }
    };
    let code = match runtime.block_on(commands::run(cli)) {
        Ok(code) => code,
        Err(e) => report(&e),
    };
    // Exit without dropping the runtime: a blocking read of stdin cannot be
    // cancelled and would keep the process alive.
    std::process::exit(code);
}

/// Prints the error with its causes and picks the exit code. (A closed
/// stdout, as in `sockit … | head`, is handled where stdout is written: a
/// broken pipe on a socket is a real error and must not pass silently.)
fn report(err: &anyhow::Error) -> i32 {
    eprintln!("sockit: {err:#}");
    err.chain().find_map(|c| c.downcast_ref::<sockit::Error>()).map_or(ExitCode::Failure, sockit::Error::exit).code()
}
