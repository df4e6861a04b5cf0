use clap::Parser;

fn main() {
    let args = flowrun::cli::normalize_args(std::env::args_os().collect());
    let cli = flowrun::cli::Cli::parse_from(args);
    let code = flowrun::app::main(cli).unwrap_or_else(|e| {
        flowrun::app::report_error(&e);
        e.code()
    });
    std::process::exit(code);
}
