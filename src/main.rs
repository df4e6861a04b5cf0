use clap::Parser;

fn main() {
    let mut args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    // The completion scripts' helper, told apart before the command line users see is read (see `cli::JobsArgs`).
    if args.get(1).is_some_and(|a| a == "__jobs") {
        args.remove(1);
        flowrun::app::jobs(flowrun::cli::JobsArgs::parse_from(args));
        return;
    }
    let cli = flowrun::cli::Cli::parse_from(args);
    let code = flowrun::app::main(cli).unwrap_or_else(|e| {
        flowrun::app::report_error(&e);
        e.code()
    });
    std::process::exit(code);
}
