//! `flowrun logs FILE JOB [RUN] [--follow]` (or `JOB#RUN`, as every output line names a run): one run's output as
//! its log file keeps it (header, output, footer); `--follow` prints what a live run writes until it ends.

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::open;
use crate::error::Error;
use crate::store::{Outcome, Query, RunRow, SqliteStore, Store};

/// How often `--follow` looks for more output (a person is reading; this is not a synchronisation).
const FOLLOW_POLL: Duration = Duration::from_millis(200);

pub fn logs(
    file: &Path,
    job: &str,
    run: Option<u64>,
    follow: bool,
    state: Option<&str>,
) -> Result<i32, Error> {
    let (job, run) = job_and_run(job, run)?;
    let job = job.as_str();
    let opened = open(file, state)?;
    opened.known_job(file, job)?;
    let not_run = || Error::Usage {
        message: format!(
            "`{job}` has no run in the history of {}",
            opened.dir.display()
        ),
        help: Some(format!(
            "`flowrun history {} {job}` lists its runs",
            file.display()
        )),
    };
    let Some(store) = &opened.store else {
        return Err(not_run());
    };
    let number = match run {
        Some(n) => n,
        None => store
            .last_run(job)
            .map_err(Error::from)?
            .ok_or_else(not_run)?,
    };
    let row = find(store, job, number)?.ok_or_else(|| Error::Usage {
        message: format!("there is no run #{number} of `{job}` (never, or pruned by --keep)"),
        help: Some(format!(
            "`flowrun history {} {job}` lists its runs",
            file.display()
        )),
    })?;
    let path = row.log.as_ref().map(PathBuf::from).unwrap_or_else(|| {
        opened
            .dir
            .join("logs")
            .join(job)
            .join(format!("{number}.log"))
    });
    let mut offset = 0;
    let mut out = std::io::stdout().lock();
    let mut row = row;
    loop {
        let Some(now) = copy_from(&path, offset, &mut out)? else {
            return Ok(crate::exit::OK); // stdout closed (`| head`): done
        };
        offset = now;
        let running = row.outcome == Outcome::Running;
        let live = running && store.holder().is_some();
        if follow && running && !live {
            crate::output::line_err(format_args!(
                "{job}#{number}: its runner is gone (killed?); the run will be marked interrupted at the next start"
            ));
        }
        if !(follow && live) {
            break;
        }
        std::thread::sleep(FOLLOW_POLL);
        match find(store, job, number)? {
            Some(r) => row = r,
            None => break,
        }
        if row.outcome != Outcome::Running {
            // It ended: what it wrote last, then stop.
            copy_from(&path, offset, &mut out)?;
            break;
        }
    }
    if offset == 0 && !path.exists() {
        crate::output::line_err(format_args!(
            "{job}#{number} printed nothing ({})",
            row.outcome.as_str()
        ));
    }
    Ok(crate::exit::OK)
}

/// The job and run asked for: `JOB#N` names run N as `JOB N` does (job names cannot hold a `#`, so the split is
/// never ambiguous); the number given both ways is refused rather than one silently winning.
pub(super) fn job_and_run(arg: &str, run: Option<u64>) -> Result<(String, Option<u64>), Error> {
    let Some((job, number)) = arg.split_once('#') else {
        return Ok((arg.to_string(), run));
    };
    let number: u64 = number.parse().map_err(|_| Error::Usage {
        message: format!("`{arg}`: `{number}` is not a run number"),
        help: Some(format!("name a run as `{job}#3` or `{job} 3`")),
    })?;
    if run.is_some() {
        return Err(Error::Usage {
            message: format!("`{arg}` names its run already; give the run number once"),
            help: Some(format!("`{job}#{number}` or `{job} {number}`")),
        });
    }
    Ok((job.to_string(), Some(number)))
}

/// Run `number` of `job`, from the history.
pub(super) fn find(store: &SqliteStore, job: &str, number: u64) -> Result<Option<RunRow>, Error> {
    Ok(store
        .history(&Query {
            jobs: vec![job.to_string()],
            run: Some(number),
            limit: 1,
            ..Query::default()
        })
        .map_err(Error::from)?
        .into_iter()
        .next())
}

/// Print the file from `offset`; the new offset (`None`: stdout is closed). A file not made yet is empty.
fn copy_from(path: &Path, offset: u64, out: &mut impl Write) -> Result<Option<u64>, Error> {
    let mut file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Some(offset)),
        Err(e) => return Err(Error::Setup(format!("{}: {e}", path.display()))),
    };
    file.seek(SeekFrom::Start(offset))
        .map_err(|e| Error::Setup(format!("{}: {e}", path.display())))?;
    let mut buf = Vec::new();
    file.read_to_end(&mut buf)
        .map_err(|e| Error::Setup(format!("{}: {e}", path.display())))?;
    // A closed stdout (`| head`) ends the command quietly.
    match out.write_all(&buf).and_then(|_| out.flush()) {
        Ok(()) => Ok(Some(offset + buf.len() as u64)),
        Err(_) => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::job_and_run;

    #[test]
    fn a_run_is_named_job_hash_n_or_job_then_n() {
        assert_eq!(job_and_run("job", None).unwrap(), ("job".into(), None));
        assert_eq!(
            job_and_run("job", Some(3)).unwrap(),
            ("job".into(), Some(3))
        );
        assert_eq!(job_and_run("job#3", None).unwrap(), ("job".into(), Some(3)));
        assert!(job_and_run("job#3", Some(3)).is_err());
        assert!(job_and_run("job#", None).is_err());
        assert!(job_and_run("job#x", None).is_err());
        assert!(job_and_run("job#-1", None).is_err());
    }
}
