use clap::Parser;

fn main() {
    let cli = flowrun::cli::Cli::parse();
    let code = flowrun::app::main(cli).unwrap_or_else(|e| {
        flowrun::app::report_error(&e);
        e.code()
    });
    std::process::exit(code);
}
