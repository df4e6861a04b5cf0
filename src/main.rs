use clap::Parser;

fn main() {
    let args = flowrun::cli::normalize_args(std::env::args_os().collect());
    let cli = flowrun::cli::Cli::parse_from(args);
    std::process::exit(flowrun::app::main(cli));
}
