//! `flowrun FILE` (`flowrun run`): the plan loaded, the state opened, the API served on its own thread, the
//! engine run on a multi-threaded runtime, and the exit code of how it ended.

mod cluster;
mod listen;
mod state;

use chrono::Utc;
use std::io::IsTerminal;
use std::sync::Arc;
use std::time::Duration;

use crate::cli::{Progress, RunArgs};
use crate::engine::{Options, Signals};
use crate::error::Error;
use crate::exit;
use crate::plan::Plan;
use crate::report::{LiveView, Mode, Reporter};
use listen::listen_address;
use state::{log_root, open_state};

/// `flowrun run`: validate, then run on a multi-threaded runtime (its worker threads live as long as the runner,
/// which the parent-death signal needs).
pub fn run(args: RunArgs) -> Result<i32, Error> {
    crate::engine::process::ensure_standard_fds();
    // Before any thread starts: the token leaves the environment (and the bytes of it that /proc shows).
    let token = crate::secret::take_token()?;
    // Likewise systemd's socket: no run inherits it.
    crate::systemd::take_from_env();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| Error::Setup(format!("the async runtime cannot start: {e}")))?;
    // Handlers first, before validation: a signal that arrives while the file is read or the first runs start
    // must stop the workflow with a summary, not kill the runner.
    let signals = {
        let _guard = runtime.enter();
        Signals::install().map_err(|e| Error::Setup(format!("signal handlers: {e}")))?
    };
    let json = args.log_format == Mode::Json;
    let listen = listen_address(args.listen.as_deref(), token.is_some())?;
    let plan = selected_plan(&args, json)?;
    if args.dry_run {
        crate::output::print_out(&crate::dryrun::describe(&plan, Utc::now()));
        return Ok(exit::OK);
    }
    let color = crate::output::color_on_stderr();
    let live = live_view(&args, &plan, json, color);
    let reporter = Arc::new(Reporter::new(
        args.log_format,
        live.as_ref().map(|v| v.multi()),
    ));
    // The state and where its runs' logs go (made and checked once, here).
    let (state, logs, joined) = match open_state(&args, &plan, &reporter)? {
        Some(o) => (Some(o.persist), Some(o.logs), o.joined),
        None => (None, None, None),
    };
    // Reading the store back and reserving numbers for every job left freed heap behind: give it back too.
    // SAFETY: malloc_trim only releases free heap memory.
    unsafe { libc::malloc_trim(0) };
    let state_dir = state.as_ref().map(|s| s.dir.clone());
    let (stores, consumers) = crate::engine::open_stores(
        &plan,
        state_dir.as_deref(),
        &reporter,
        joined.as_ref().map(|j| &j.link),
    )
    .map_err(Error::Setup)?;
    let (listeners, notice, bound) = {
        let _guard = runtime.enter();
        crate::control::bind(state_dir.as_deref(), listen.map(|(a, _)| a))
    };
    bound.map_err(Error::Setup)?;
    if let Some(notice) = notice {
        reporter.notice(&notice);
    }
    if let Some(notice) = cgroup_notice(&plan) {
        reporter.notice(&notice);
    }
    let (metrics, observer) = metrics_and_observer(joined.as_ref());
    let plan = Arc::new(plan);
    let cluster = joined.as_ref().map(cluster::Joined::view);
    let (serve, api) = api_server(
        &args,
        listeners,
        (metrics, state_dir, token, plan.clone()),
        cluster,
        reporter.clone(),
    );
    let log_dir = match logs {
        Some(logs) => Some(logs),
        None => log_root(args.log_dir.as_deref(), None)?,
    };
    let heartbeat = joined.as_ref().map(|j| j.beat(reporter.clone()));
    let options = Options {
        cluster: joined.map(|j| j.link),
        consumers,
        run_for: args.run_for,
        log_dir,
        live,
        color,
        state,
        observers: vec![observer],
        serve: Some(serve),
        stores,
    };
    let ending = runtime.block_on(crate::engine::run(plan, reporter.clone(), options, signals));
    wind_down(heartbeat, &api);
    let ending = ending.map_err(Error::Setup)?;
    reporter.flush();
    // Tasks blocked on pipes of orphaned grandchildren must not hold the exit.
    runtime.shutdown_timeout(Duration::from_millis(100));
    Ok(ending.code())
}

/// After the engine (and its writers): the cluster is left (at once when no live run is left), systemd hears of
/// the stop, the runner's cgroup folder goes, and the API's thread ends (its socket removed).
fn wind_down(heartbeat: Option<crate::cluster::heartbeat::Heartbeat>, api: &ApiSlot) {
    if let Some(heartbeat) = heartbeat {
        heartbeat.stop();
    }
    crate::systemd::stopping();
    crate::engine::cgroup::remove_mine();
    if let Some(api) = api.lock().unwrap_or_else(|e| e.into_inner()).take() {
        api.stop();
    }
}

/// The metrics (with `flowrun_store_up` in a cluster), and the observer of the engine's events that keeps them
/// and tells systemd of the stop.
fn metrics_and_observer(
    joined: Option<&cluster::Joined>,
) -> (Arc<crate::control::Metrics>, crate::engine::Observer) {
    let metrics = match joined {
        Some(j) => crate::control::Metrics::new().with_store(j.link.up.clone()),
        None => crate::control::Metrics::new(),
    };
    let metrics = Arc::new(metrics);
    let observer = {
        let metrics = metrics.clone();
        Arc::new(move |e: &crate::event::Event| {
            metrics.observe(e);
            if let crate::event::Event::RunnerStopping { .. } = e {
                crate::systemd::stopping();
            }
        }) as crate::engine::Observer
    };
    (metrics, observer)
}

/// What of the jobs' `limits: { memory, cpu }` no cgroup can hold here, said once at the start.
fn cgroup_notice(plan: &Plan) -> Option<String> {
    let any_memory = plan.jobs.iter().any(|j| j.limits.memory.is_some());
    let any_cpu = plan.jobs.iter().any(|j| j.limits.cpu_millis.is_some());
    crate::engine::cgroup::fallback_notice(any_memory, any_cpu)
}

/// The plan of the file, cut to `--only`'s jobs; the memory validation took given back.
fn selected_plan(args: &RunArgs, json: bool) -> Result<Plan, Error> {
    let mut plan = crate::load::load_plan_as(&args.file, json)?;
    if !args.only.is_empty() {
        plan = plan.only(&args.only).map_err(|name| {
            let names: Vec<&str> = plan.jobs.iter().map(|j| j.name.as_str()).collect();
            Error::Usage {
                message: format!("--only: `{name}` is not a job of {}", args.file.display()),
                help: Some(crate::diagnostics::suggestion_help(&name, &names, "job")),
            }
        })?;
    }
    // The spanned tree and the document are gone; give their pages back (a large file's validation peaks at
    // several times what the plan keeps, and a long-running runner should not hold that for ever).
    // SAFETY: malloc_trim only releases free heap memory.
    unsafe { libc::malloc_trim(0) };
    Ok(plan)
}

/// The live view, when wanted (`--progress`, or a terminal without `--log-format json`).
fn live_view(args: &RunArgs, plan: &Plan, json: bool, color: bool) -> Option<LiveView> {
    let show_live = match args.progress {
        Progress::Always => true,
        Progress::Never => false,
        Progress::Auto => std::io::stderr().is_terminal() && !json,
    };
    show_live.then(|| {
        let names: Vec<String> = plan.channels.iter().map(|c| c.name.clone()).collect();
        let always = args.progress == Progress::Always;
        LiveView::new(
            plan.jobs.len(),
            &names,
            color,
            always,
            plan.ends_by_itself(),
        )
    })
}

/// The API's thread, started by the engine once it can answer (the closure), and the slot where it is kept, to be
/// ended (and its socket removed) once the engine is done.
type ApiSlot = Arc<std::sync::Mutex<Option<crate::control::ApiThread>>>;

fn api_server(
    args: &RunArgs,
    listeners: crate::control::Listeners,
    (metrics, state_dir, token, plan): (
        Arc<crate::control::Metrics>,
        Option<std::path::PathBuf>,
        Option<String>,
        Arc<Plan>,
    ),
    cluster: Option<crate::control::ClusterView>,
    reporter: Arc<Reporter>,
) -> (crate::engine::Serve, ApiSlot) {
    let (file, watch, only) = (args.file.clone(), args.watch, args.only.clone());
    // The API's thread, ended (and its socket removed) once the engine is done.
    let api: ApiSlot = Default::default();
    let api_slot = api.clone();
    let api_reporter = reporter;
    let serve = Box::new(move |engine: crate::engine::requests::EngineHandle| {
        let engine_for_inbox = engine.clone();
        let (hup, reloads) = tokio::sync::mpsc::unbounded_channel();
        let control = crate::control::Context::new(
            engine,
            metrics,
            state_dir,
            file,
            token,
            only,
            api_reporter.clone(),
        )
        .with_plan(plan)
        .with_cluster(cluster.clone());
        // Manual firings asked through the cluster's store (`flowrun trigger --store`), taken as the API's.
        if let Some(view) = &cluster {
            crate::control::inbox::start(
                &view.config,
                view.client.clone(),
                engine_for_inbox.clone(),
            );
        }
        let served = crate::control::serve(listeners, control, watch, reloads);
        let reload = match served {
            Ok(thread) => {
                *api_slot.lock().unwrap_or_else(|e| e.into_inner()) = Some(thread);
                Some(hup)
            }
            Err(e) => {
                api_reporter.notice(&e);
                None
            }
        };
        // The plan is loaded and the control socket serves (or said why it cannot).
        crate::systemd::ready("running");
        reload
    });
    (serve, api)
}
