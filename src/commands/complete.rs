//! `flowrun completions SHELL`: clap_complete's script, taught to complete job names where a job goes (`trigger`,
//! `stop`, `logs`, `history`, `next`, `--only`). The scripts ask `flowrun __jobs` (a helper, not a command users
//! see: `cli::JobsArgs`), which reads clap's own definition of the command line to tell where that is, so the shells
//! need no table of their own that could drift.

use std::path::{Path, PathBuf};

use clap::{Arg, Command};
use clap_complete::Shell;

use crate::cli::Cli;

/// The value name that marks an argument taking a job name (see `cli.rs`).
const JOB: &str = "JOB";

/// The completion script for `shell`: clap_complete's, with job names for bash, zsh and fish.
pub fn script(shell: Shell) -> String {
    let mut cmd = <Cli as clap::CommandFactory>::command();
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut cmd, "flowrun", &mut out);
    let generated = String::from_utf8_lossy(&out).into_owned();
    match shell {
        Shell::Bash => bash(&generated),
        Shell::Zsh => zsh(&generated),
        Shell::Fish => format!("{generated}{FISH_JOBS}"),
        // elvish and powershell keep clap's script: options and commands, no job names.
        _ => generated,
    }
}

/// `flowrun __jobs FILE`: the job names of FILE; `flowrun __jobs -- WORDS`: the same, only when the word after
/// WORDS (a command line without the program's name) is a job name, FILE taken from WORDS. Nothing when the file
/// is not valid: a completion has no place for diagnostics.
pub fn jobs(file: Option<&Path>, words: &[String]) -> String {
    let file = match file {
        Some(file) => Some(file.to_path_buf()),
        None => file_before_a_job(words),
    };
    let Some(plan) = file.and_then(|f| crate::load::load_plan_quietly(&user_path(&f))) else {
        return String::new();
    };
    plan.jobs.iter().map(|j| format!("{}\n", j.name)).collect()
}

/// The workflow file named in `words` when the next word is a job name, by clap's definition of the command line.
fn file_before_a_job(words: &[String]) -> Option<PathBuf> {
    let mut top = <Cli as clap::CommandFactory>::command();
    top.build();
    let mut cmd: &Command = &top;
    let mut positionals: Vec<&str> = Vec::new();
    // An option whose value comes next, and an option that goes on taking values (`--only a b`).
    let mut wants_value: Option<&Arg> = None;
    let mut taking: Option<&Arg> = None;
    let mut only_positionals = false;
    for word in words.iter().map(String::as_str) {
        if let Some(arg) = wants_value.take() {
            // bash splits `--state=DIR` into `--state`, `=`, `DIR`.
            if word == "=" {
                wants_value = Some(arg);
                continue;
            }
            taking = takes_many(arg).then_some(arg);
            continue;
        }
        if only_positionals || word == "-" || !word.starts_with('-') {
            if taking.is_some() {
                continue;
            }
            match cmd.find_subcommand(word) {
                Some(sub) if positionals.is_empty() && std::ptr::eq(cmd, &top) => cmd = sub,
                _ => positionals.push(word),
            }
            continue;
        }
        taking = None;
        if word == "--" {
            only_positionals = true;
            continue;
        }
        let arg = if let Some(long) = word.strip_prefix("--") {
            let (name, value) = match long.split_once('=') {
                Some((name, _)) => (name, true),
                None => (long, false),
            };
            let arg = cmd.get_arguments().find(|a| {
                a.get_long_and_visible_aliases()
                    .is_some_and(|l| l.contains(&name))
            });
            // `--state=DIR` carries its value; `--only=a` may still be followed by more jobs.
            if value {
                taking = arg.filter(|a| takes_many(a));
                continue;
            }
            arg
        } else {
            // `-n 3` or `-n3`: a short option's value may be glued to it.
            let mut chars = word[1..].chars();
            let short = chars.next();
            let glued = chars.next().is_some();
            let arg = cmd.get_arguments().find(|a| a.get_short() == short);
            if glued {
                continue;
            }
            arg
        };
        wants_value = arg.filter(|a| a.get_action().takes_values());
    }
    let job_here = match (wants_value, taking) {
        (Some(arg), _) | (None, Some(arg)) => is_job(arg),
        (None, None) => positional_at(cmd, positionals.len()).is_some_and(is_job),
    };
    let file_at = cmd.get_positionals().position(|a| a.get_id() == "file")?;
    let file = positionals.get(file_at)?;
    job_here.then(|| PathBuf::from(file))
}

/// The positional argument that the `n`th positional word (from 0) fills.
fn positional_at(cmd: &Command, n: usize) -> Option<&Arg> {
    let mut last = None;
    for (i, arg) in cmd.get_positionals().enumerate() {
        if i == n {
            return Some(arg);
        }
        last = Some(arg);
    }
    last.filter(|a| takes_many(a))
}

fn takes_many(arg: &Arg) -> bool {
    arg.get_num_args().is_some_and(|n| n.max_values() > 1)
}

fn is_job(arg: &Arg) -> bool {
    arg.get_value_names()
        .is_some_and(|names| names.iter().any(|n| n == JOB))
}

/// A file name as a shell wrote it and left it in its words: quotes around it, `~/` (bash keeps both).
fn user_path(path: &Path) -> PathBuf {
    let text = path.to_string_lossy();
    let unquoted = ['\'', '"']
        .iter()
        .find_map(|q| text.strip_prefix(*q)?.strip_suffix(*q))
        .unwrap_or(&text);
    match (unquoted.strip_prefix("~/"), std::env::var_os("HOME")) {
        (Some(rest), Some(home)) => Path::new(&home).join(rest),
        _ => PathBuf::from(unquoted),
    }
}

/// bash: a function in front of clap's, answering with job names where a job goes and leaving the rest to it.
fn bash(generated: &str) -> String {
    // clap's script ends by registering its function; ours is registered instead, with the same options.
    let script = generated.replace("complete -F _flowrun ", "complete -F _flowrun_with_jobs ");
    format!("{script}{BASH_JOBS}")
}

const BASH_JOBS: &str = r#"
# Job names where a job goes (trigger, stop, logs, history, next, --only): `flowrun __jobs` tells, from the words
# before the cursor; everything else is clap's completion above.
_flowrun_with_jobs() {
    local cur="${COMP_WORDS[COMP_CWORD]}" names
    if [[ "$cur" != -* ]]; then
        names="$(flowrun __jobs -- "${COMP_WORDS[@]:1:COMP_CWORD-1}" 2>/dev/null)"
        if [[ -n "$names" ]]; then
            COMPREPLY=( $(compgen -W "$names" -- "$cur") )
            return 0
        fi
    fi
    _flowrun "$@"
}
"#;

/// zsh: clap's function renamed `_flowrun_options`, behind a `_flowrun` that answers with job names where a job
/// goes (so the name that `#compdef` and `compdef` bind is ours), and clap's top level mended.
fn zsh(generated: &str) -> String {
    let mut out = zsh_top_level(generated);
    out = out.replacen("\n_flowrun() {\n", "\n_flowrun_options() {\n", 1);
    // Before the lines that call or register `_flowrun`, so it is defined first.
    let at = out
        .rfind("\nif [ \"$funcstack[1]\" = \"_flowrun\" ]")
        .map_or(out.len(), |at| at + 1);
    out.insert_str(at, ZSH_JOBS);
    out
}

/// clap_complete 4.6 writes the top level's FILE as the first positional and the commands as the second, so
/// `flowrun tri<TAB>` offers files only and no command's options were ever completed. Here the first word is a
/// command or a file, a command's words go to that command, and the words after a FILE get the run's options.
/// Left as clap wrote it when its text is not the one expected (a test says so).
fn zsh_top_level(generated: &str) -> String {
    const HEAD: &str = "_arguments \"${_arguments_options[@]}\" : \\\n";
    const FILE_THEN_COMMANDS: &str =
        "':file -- The workflow file:_files' \\\n\":: :_flowrun_commands\" \\\n";
    const END: &str = "        esac\n    ;;\nesac\n}\n";
    let (Some(head), Some(file)) = (generated.find(HEAD), generated.find(FILE_THEN_COMMANDS))
    else {
        return generated.to_string();
    };
    let options = &generated[head + HEAD.len()..file];
    let mut out = format!(
        "{}\": :_flowrun_file_or_command\" \\\n{}",
        &generated[..file],
        &generated[file + FILE_THEN_COMMANDS.len()..]
    );
    // The command is now the first word of the line, not the second.
    out = out.replace("$line[2]", "$line[1]");
    if let Some(end) = out.find(END) {
        out.insert_str(
            end,
            &format!(
                "(*)\n_arguments \"${{_arguments_options[@]}}\" : \\\n{options}&& ret=0\n;;\n"
            ),
        );
    }
    out
}

const ZSH_JOBS: &str = r#"(( $+functions[_flowrun_file_or_command] )) ||
_flowrun_file_or_command() {
    _flowrun_commands
    _files
}

# Job names where a job goes (trigger, stop, logs, history, next, --only): `flowrun __jobs` tells, from the words
# before the cursor; everything else is clap's completion in _flowrun_options.
_flowrun() {
    local -a names
    if [[ $PREFIX != -* ]]; then
        names=(${(f)"$(flowrun __jobs -- ${(Q)words[2,CURRENT-1]} 2>/dev/null)"})
    fi
    if (( $#names )); then
        _describe -t jobs 'job' names
    else
        _flowrun_options "$@"
    fi
}

"#;

const FISH_JOBS: &str = r#"
# Job names where a job goes (trigger, stop, logs, history, next, --only): `flowrun __jobs` tells, from the words
# before the cursor.
function __fish_flowrun_jobs
    set -l words (commandline -opc)
    set -e words[1]
    flowrun __jobs -- $words 2>/dev/null
end
function __fish_flowrun_wants_job
    set -l names (__fish_flowrun_jobs)
    test (count $names) -gt 0
end
complete -c flowrun -n "__fish_flowrun_wants_job" -f -a "(__fish_flowrun_jobs)"
"#;
